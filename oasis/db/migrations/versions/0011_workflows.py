"""workflows: DAGs of job templates (oasis/edp/workflow.py) and their runs, each run a leased operation

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 02:20:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('workflows',
    sa.Column('description', sa.Text(), nullable=False),
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
    op.create_index(op.f('ix_workflows_project_id'), 'workflows', ['project_id'], unique=False)
    op.create_table('workflow_runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('workflow_id', sa.String(length=36), nullable=False),
    sa.Column('workflow_name', sa.String(length=80), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('status_description', sa.Text(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('cluster_id', sa.String(length=36), nullable=True),
    sa.Column('managed', sa.Boolean(), nullable=False),
    sa.Column('trust_id', sa.String(length=64), nullable=True),
    sa.Column('start_time', sa.DateTime(), nullable=True),
    sa.Column('end_time', sa.DateTime(), nullable=True),
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('is_protected', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.Column('op', sa.String(length=16), nullable=True),
    sa.Column('op_step', sa.String(length=32), nullable=True),
    sa.Column('op_target', sa.JSON(), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_expires', sa.DateTime(), nullable=True),
    sa.Column('request_id', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    for column in ('project_id', 'workflow_id', 'status', 'cluster_id', 'op'):
        op.create_index(op.f(f'ix_workflow_runs_{column}'), 'workflow_runs', [column], unique=False)


def downgrade() -> None:
    for column in ('project_id', 'workflow_id', 'status', 'cluster_id', 'op'):
        op.drop_index(op.f(f'ix_workflow_runs_{column}'), table_name='workflow_runs')
    op.drop_table('workflow_runs')
    op.drop_index(op.f('ix_workflows_project_id'), table_name='workflows')
    op.drop_table('workflows')
