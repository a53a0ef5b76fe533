"""keypairs (the user keys a cluster may name) and plugin label overrides

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 15:35:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('keypairs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name')
    )
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_keypairs_project_id'), ['project_id'], unique=False)

    op.create_table('plugin_labels',
    sa.Column('plugin_name', sa.String(length=32), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('label', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('plugin_name', 'version', 'label')
    )


def downgrade() -> None:
    op.drop_table('plugin_labels')
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_keypairs_project_id'))
    op.drop_table('keypairs')
