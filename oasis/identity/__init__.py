"""Identity: projects, users, roles, tokens and trusts (the builtin backend, and Keystone), and the policy the API
applies. `open_identity` gives the backend the settings name; both answer `oasis.identity.base.Identity`."""
from __future__ import annotations

from oasis.config import Settings
from oasis.db.session import Database
from oasis.identity.base import Identity
from oasis.identity.builtin import BuiltinIdentity


def open_identity(settings: Settings, db: Database) -> Identity:
    if settings.identity_backend == "keystone":
        if settings.keystone is None:
            raise ValueError("the keystone identity backend needs [keystone_authtoken] in the configuration file")
        from oasis.identity.keystone import KeystoneIdentity  # keystoneauth1 only where Keystone is used

        return KeystoneIdentity(settings.keystone)
    return BuiltinIdentity(db)
