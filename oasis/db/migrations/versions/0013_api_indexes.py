"""api indexes: the lists' default order per project and for public rows (keyset paging), a page's running-job
counts, and the jobs that use a data source (bench/api_load.py found each a scan of the table)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 05:40:00.000000
"""
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

INDEXES = (
    ('ix_clusters_project_created', 'clusters', ['project_id', 'created_at', 'id']),
    ('ix_clusters_public_created', 'clusters', ['is_public', 'created_at', 'id']),
    ('ix_jobs_project_created', 'jobs', ['project_id', 'created_at', 'id']),
    ('ix_jobs_public_created', 'jobs', ['is_public', 'created_at', 'id']),
    ('ix_jobs_cluster_status', 'jobs', ['cluster_id', 'status']),
    ('ix_jobs_input_id', 'jobs', ['input_id']),
    ('ix_jobs_output_id', 'jobs', ['output_id']),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
