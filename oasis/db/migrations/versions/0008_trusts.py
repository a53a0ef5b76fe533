"""trusts: the builtin identity's OS-TRUST trusts, a token's trust, and the trust of a cluster and of a job

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'trusts',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('trustor_user_id', sa.String(length=64), nullable=False),
        sa.Column('trustee_user_id', sa.String(length=64), nullable=False),
        sa.Column('project_id', sa.String(length=64), nullable=False),
        sa.Column('roles', sa.JSON(), nullable=False),
        sa.Column('impersonation', sa.Boolean(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['trustor_user_id'], ['users.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['trustee_user_id'], ['users.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_trusts_trustor_user_id', 'trusts', ['trustor_user_id'])
    op.create_index('ix_trusts_trustee_user_id', 'trusts', ['trustee_user_id'])
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trust_id', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_tokens_trust_id', ['trust_id'])
    for table in ('clusters', 'jobs'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('trust_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in ('clusters', 'jobs'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('trust_id')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_tokens_trust_id')
        batch_op.drop_column('trust_id')
    op.drop_index('ix_trusts_trustee_user_id', table_name='trusts')
    op.drop_index('ix_trusts_trustor_user_id', table_name='trusts')
    op.drop_table('trusts')
