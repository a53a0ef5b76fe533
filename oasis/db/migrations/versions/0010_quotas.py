"""per-project quotas: a project's limits (NULL: the deployment's default; -1: unlimited), one row per project,
which is also the lock that makes a bounded create or scale atomic (oasis/db/quotas.py)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-12 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('project_quotas',
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('clusters', sa.Integer(), nullable=True),
    sa.Column('instances', sa.Integer(), nullable=True),
    sa.Column('vcpus', sa.Integer(), nullable=True),
    sa.Column('ram_mb', sa.Integer(), nullable=True),
    sa.Column('volume_gb', sa.Integer(), nullable=True),
    sa.Column('running_jobs', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('project_id')
    )


def downgrade() -> None:
    op.drop_table('project_quotas')
