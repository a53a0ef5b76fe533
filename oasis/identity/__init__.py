"""Identity: projects, users, roles, tokens and trusts (the builtin backend, and Keystone), and the policy the API
applies. `open_identity` gives the backend the settings name; both answer `oasis.identity.base.Identity`."""
from __future__ import annotations

from oasis.config import Settings
from oasis.db.session import Database
from oasis.identity.base import Identity
from oasis.identity.builtin import BuiltinIdentity
from oasis.identity.proxy import ProxyUsers, UserAdmin


def open_identity(settings: Settings, db: Database) -> Identity:
    if settings.identity_backend == "keystone":
        if settings.keystone is None:
            raise ValueError("the keystone identity backend needs [keystone_authtoken] in the configuration file")
        from oasis.identity.keystone import KeystoneIdentity  # keystoneauth1 only where Keystone is used

        return KeystoneIdentity(settings.keystone)
    return BuiltinIdentity(db)


def open_proxy_users(settings: Settings, identity: Identity) -> ProxyUsers | None:
    """The proxy domain's users where `[proxy] domain` is set (oasis.identity.proxy), else None."""
    if not settings.proxy_domain:
        return None
    if not isinstance(identity, UserAdmin):
        raise ValueError("a proxy domain ([proxy] domain) needs the keystone identity backend")
    return ProxyUsers(identity, settings.proxy_domain, settings.proxy_roles)
