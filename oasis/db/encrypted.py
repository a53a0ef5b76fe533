"""Columns encrypted at rest with the deployment's state key (Fernet: AES-128-CBC + HMAC-SHA256).

`EncryptedText` and `EncryptedJSON` encrypt on the way into the database and decrypt on the way out, so the code
that reads `cluster.management_private_key` or `site.secrets` never sees the difference, and a copy of the
database file (or a dump of PostgreSQL) holds no private key, join secret or password in the clear. The key is
the Database's (`bind_key`, given at start): every process that opens one database must be given the same one,
which they are because they share the state dir's `secret.key` or OASIS_SECRET_KEY.

Rows written before encryption are read as they are (plain values pass through) and encrypted when next
written; migration 0006 encrypts them all at once.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import JSON, Text
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.types import TypeDecorator

KEY_FILE = "secret.key"
MARK = "__encrypted__"  # an encrypted JSON value: {"__encrypted__": "<token>"}
PREFIX = "fernet:"  # an encrypted text value: "fernet:<token>"
_ATTR = "oasis_fernet"  # where a bound key lives: on the engine's dialect, which is one per engine


class SecretError(Exception):
    pass


def load_key(state_dir: Path) -> bytes:
    """OASIS_SECRET_KEY when set, else `<state_dir>/secret.key`, generated on first use with mode 0600."""
    env = os.environ.get("OASIS_SECRET_KEY")
    if env:
        return env.encode()
    path = Path(state_dir) / KEY_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # Written whole under a name of its own, then linked to the key's name, which fails if another process got
    # there first: processes starting at once agree on the first key, and none ever reads a half-written one.
    tmp = path.with_name(f".{KEY_FILE}.{uuid.uuid4().hex}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(key)
        os.link(tmp, path)
    except FileExistsError:
        return path.read_bytes().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return key


def bind_key(engine: Engine, key: bytes) -> None:
    setattr(engine.dialect, _ATTR, Fernet(key))


def _fernet(dialect: Dialect) -> Fernet:
    fernet = getattr(dialect, _ATTR, None)
    if fernet is None:
        raise SecretError("this database was opened without the deployment's state key")
    return fernet


def encrypt_text(fernet: Fernet, value: str) -> str:
    return PREFIX + fernet.encrypt(value.encode()).decode()


def decrypt_text(fernet: Fernet, stored: str) -> str:
    try:
        return fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
    except InvalidToken:
        raise SecretError("a stored secret cannot be decrypted with this deployment's key") from None


def text_is_encrypted(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)  # type: ignore[union-attr]


def encrypt_json(fernet: Fernet, value: Any) -> dict[str, str]:
    return {MARK: fernet.encrypt(json.dumps(value, sort_keys=True).encode()).decode()}


def decrypt_json(fernet: Fernet, stored: dict[str, str]) -> Any:
    try:
        return json.loads(fernet.decrypt(stored[MARK].encode()))
    except InvalidToken:
        raise SecretError("a stored secret cannot be decrypted with this deployment's key") from None


def json_is_encrypted(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {MARK}


class EncryptedText(TypeDecorator[str]):
    """Text stored encrypted; "" and NULL stay as they are (nothing to hide, and "not set" stays visible)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if not value or text_is_encrypted(value):
            return value
        return encrypt_text(_fernet(dialect), value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if not text_is_encrypted(value):
            return value  # written before encryption
        return decrypt_text(_fernet(dialect), value)  # type: ignore[arg-type]


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON value stored as {"__encrypted__": token}; empty values and NULL stay as they are."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if not value or json_is_encrypted(value):
            return value
        return encrypt_json(_fernet(dialect), value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if not json_is_encrypted(value):
            return value  # written before encryption
        return decrypt_json(_fernet(dialect), value)
