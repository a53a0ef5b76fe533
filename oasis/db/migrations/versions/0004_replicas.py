"""replicas: periodic runs claimed once per period, unique internal binary names

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 16:20:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('periodic_runs',
    sa.Column('task', sa.String(length=80), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=False),
    sa.Column('engine_id', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('task', 'slot')
    )
    with op.batch_alter_table('periodic_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_periodic_runs_started_at'), ['started_at'], unique=False)
    # Two uploads of one name that raced past the API's check could both land before: the later ones are
    # renamed (name-<id prefix>), so that nothing is lost and the constraint holds.
    op.execute("UPDATE job_binary_internals SET name = substr(name, 1, 71) || '-' || substr(id, 1, 8) "
               "WHERE id IN (SELECT b.id FROM job_binary_internals b JOIN job_binary_internals a "
               "ON a.project_id = b.project_id AND a.name = b.name "
               "AND (a.created_at < b.created_at OR (a.created_at = b.created_at AND a.id < b.id)))")
    with op.batch_alter_table('job_binary_internals', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_job_binary_internals_project_id_name', ['project_id', 'name'])


def downgrade() -> None:
    with op.batch_alter_table('job_binary_internals', schema=None) as batch_op:
        batch_op.drop_constraint('uq_job_binary_internals_project_id_name', type_='unique')
    with op.batch_alter_table('periodic_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_periodic_runs_started_at'))
    op.drop_table('periodic_runs')
