"""warm pools: cluster_pools, and the pool a cluster waits in (clusters.pool_id)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 05:30:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cluster_pools',
    sa.Column('cluster_template_id', sa.String(length=36), nullable=False),
    sa.Column('site_id', sa.String(length=36), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('status_description', sa.Text(), nullable=False),
    sa.Column('max_age', sa.Integer(), nullable=True),
    sa.Column('serial', sa.Integer(), nullable=False),
    sa.Column('trust_id', sa.String(length=64), nullable=True),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('is_protected', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name')
    )
    op.create_index(op.f('ix_cluster_pools_project_id'), 'cluster_pools', ['project_id'], unique=False)
    op.create_index(op.f('ix_cluster_pools_cluster_template_id'), 'cluster_pools', ['cluster_template_id'],
                    unique=False)
    with op.batch_alter_table('clusters') as batch:
        batch.add_column(sa.Column('pool_id', sa.String(length=36), nullable=True))
        batch.create_index(batch.f('ix_clusters_pool_id'), ['pool_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('clusters') as batch:
        batch.drop_index(batch.f('ix_clusters_pool_id'))
        batch.drop_column('pool_id')
    op.drop_index(op.f('ix_cluster_pools_cluster_template_id'), table_name='cluster_pools')
    op.drop_index(op.f('ix_cluster_pools_project_id'), table_name='cluster_pools')
    op.drop_table('cluster_pools')
