"""secrets at rest: the private keys, join secrets, site credentials and bundles written before encryption are
encrypted with the state key (oasis/db/encrypted.py)

The key is the one the migrating process opened the database with (`Database.migrate` hands it over in the
Alembic config's attributes), else OASIS_SECRET_KEY: the same key every later process reads the rows with.
A database with no plain secret in it needs no key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000
"""
import os

from alembic import context, op
from cryptography.fernet import Fernet
import sqlalchemy as sa

from oasis.db.encrypted import (decrypt_json, decrypt_text, encrypt_json, encrypt_text, json_is_encrypted,
                                text_is_encrypted)


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# table, primary key, column, "text" or "json": the columns models.py declares EncryptedText / EncryptedJSON
COLUMNS = [
    ('clusters', 'id', 'management_private_key', 'text'),
    ('clusters', 'id', 'secrets', 'json'),
    ('sites', 'id', 'secrets', 'json'),
    ('exports', 'version', 'bundle', 'json'),
    ('control_plane_secrets', 'name', 'value', 'text'),
]


def _fernet() -> Fernet | None:
    key = context.config.attributes.get('oasis_key') or os.environ.get('OASIS_SECRET_KEY', '').encode() or None
    return Fernet(key) if key else None


def _rows(table: str, pk: str, column: str, kind: str) -> tuple[sa.Table, list]:
    t = sa.table(table, sa.column(pk), sa.column(column, sa.Text() if kind == 'text' else sa.JSON()))
    return t, list(op.get_bind().execute(sa.select(t.c[pk], t.c[column])))


def upgrade() -> None:
    fernet = _fernet()
    for table, pk, column, kind in COLUMNS:
        t, rows = _rows(table, pk, column, kind)
        for row_id, value in rows:
            if not value or (text_is_encrypted(value) if kind == 'text' else json_is_encrypted(value)):
                continue
            if fernet is None:
                raise RuntimeError(f"{table}.{column} holds plain secrets: migrate with the deployment's state key "
                                   "(start oasis with its state dir, or set OASIS_SECRET_KEY)")
            new = encrypt_text(fernet, value) if kind == 'text' else encrypt_json(fernet, value)
            op.get_bind().execute(sa.update(t).where(t.c[pk] == row_id).values({column: new}))


def downgrade() -> None:
    fernet = _fernet()
    for table, pk, column, kind in COLUMNS:
        t, rows = _rows(table, pk, column, kind)
        for row_id, value in rows:
            if not (text_is_encrypted(value) if kind == 'text' else json_is_encrypted(value)):
                continue
            if fernet is None:
                raise RuntimeError(f"{table}.{column} is encrypted: downgrade with the deployment's state key")
            new = decrypt_text(fernet, value) if kind == 'text' else decrypt_json(fernet, value)
            op.get_bind().execute(sa.update(t).where(t.c[pk] == row_id).values({column: new}))
