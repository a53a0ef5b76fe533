"""The one interface both identity backends answer: the builtin one (oasis's own database, the embedded
default) and Keystone. The API asks it who a token stands for; the API and the engine ask it for trusts, the
delegation that lets oasis act for a user after the user's token has expired."""
from __future__ import annotations

from datetime import datetime
from typing import Protocol

from oasis.identity.principal import Principal


class IdentityError(Exception):
    """The identity service refused or could not be reached; the message is safe to show the user."""


class Identity(Protocol):
    name: str  # "builtin" or "keystone"

    def authenticate_token(self, token: str) -> Principal | None:
        """Who the token stands for, or None when it is unknown, expired or revoked (within the backend's cache
        bound)."""

    def create_trust(self, user_token: str, trustor: Principal, *, roles: list[str] | None = None,
                     expires_at: datetime | None = None, impersonation: bool = True,
                     trustee_user_id: str | None = None) -> str:
        """A trust from `trustor` (whose valid token is `user_token`) to oasis's service user (or to
        `trustee_user_id`) on the trustor's project, with `roles` (default: all of the trustor's roles there);
        its id."""

    def trust_principal(self, trust_id: str) -> Principal | None:
        """Act on a trust: the principal a trust-scoped token of the service user stands for (impersonating the
        trustor), or None when the trust is gone, expired or its trustor lost the roles."""

    def delete_trust(self, trust_id: str) -> None:
        """Remove a trust; one already gone is no error."""

    def trust_object_store(self, trust_id: str) -> tuple[str, str] | None:
        """A trust-scoped token and the public `object-store` endpoint of the trust's project (its Swift account,
        from the token's catalog), for reaching the trustor's Swift without stored credentials; None where the
        backend has no Swift that takes its tokens (the builtin one). Raises IdentityError when the trust cannot
        be acted on or the catalog names no object store."""
