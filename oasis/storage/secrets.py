"""Encryption at rest for the credentials of data sources and job binaries (Fernet: AES-128-CBC + HMAC-SHA256).

The key is OASIS_SECRET_KEY when set (every API and engine replica of a deployment must share it), else
<state_dir>/secret.key, generated on first use with mode 0600. An encrypted dict is stored as
{"__encrypted__": "<token>"}; `decrypt_dict` passes plain (older) dicts through unchanged, so rows written before
encryption keep working and are encrypted when next written."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from oasis.db.encrypted import KEY_FILE, MARK, SecretError, load_key

# The key and its file are the database's (oasis/db/encrypted.py encrypts its secret columns with the same key).
__all__ = ["KEY_FILE", "MARK", "SecretError", "Secrets", "is_encrypted", "load_key", "secrets_for"]


class Secrets:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> "Secrets":
        return cls(load_key(state_dir))

    def __repr__(self) -> str:
        return "Secrets(<key hidden>)"

    def encrypt_dict(self, values: dict[str, Any] | None) -> dict[str, Any]:
        if not values:
            return {}
        if is_encrypted(values):
            return dict(values)
        return {MARK: self._fernet.encrypt(json.dumps(values, sort_keys=True).encode()).decode()}

    def decrypt_dict(self, stored: dict[str, Any] | None) -> dict[str, Any]:
        if not stored:
            return {}
        if not is_encrypted(stored):
            return dict(stored)
        try:
            return json.loads(self._fernet.decrypt(stored[MARK].encode()))
        except InvalidToken:
            raise SecretError("stored credentials cannot be decrypted with this deployment's key") from None


def is_encrypted(values: dict[str, Any] | None) -> bool:
    return bool(values) and set(values) == {MARK}


_cache: dict[str, Secrets] = {}


def secrets_for(state_dir: Path) -> Secrets:
    key = str(Path(state_dir).resolve())
    if key not in _cache or os.environ.get("OASIS_SECRET_KEY"):
        _cache[key] = Secrets.for_state_dir(Path(state_dir))
    return _cache[key]
