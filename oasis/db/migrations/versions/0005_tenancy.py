"""tenancy: a cluster's own credentials (its CA, certificates and framework secrets), the Unix user an instance
runs as

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 19:10:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('secrets', sa.JSON(), nullable=True))
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('owner')
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_column('secrets')
