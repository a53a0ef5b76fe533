"""proxy users: a job's own user in the proxy domain (its id, name, password and the trust from the job's owner
to it), encrypted at rest like every other secret (oasis/db/encrypted.py)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-11 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proxy', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('proxy')
