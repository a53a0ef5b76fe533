"""Who may do what. Sahara's own policy lets any authenticated user do almost anything and enforces ownership in
validators; oasis keeps that, and adds a read-only role. Changes that reach beyond one project (plugin labels,
the site image registry, sites, identity) are for administrators."""
from __future__ import annotations

from oasis.identity.principal import Principal

ADMIN, MEMBER, READER = "admin", "member", "reader"
ROLES = (ADMIN, MEMBER, READER)
# Keystone's historical name for the member role is accepted as a synonym.
_WRITERS = {ADMIN, MEMBER, "_member_"}
# Actions only an administrator may take (Sahara: plugin label updates; oasis: whatever is shared by every
# project: the site image registry and the identity of others: projects, users, role assignments).
ADMIN_ONLY = frozenset({"plugins:update", "plugin:update", "image:register", "image:unregister", "image:add-tags",
                        "image:remove-tags", "image:set-tags", "identity:admin"})
# Actions on the caller's own credentials: any role may take them (a reader may check and revoke its tokens).
SELF_SERVICE = frozenset({"identity:token-validate", "identity:token-revoke"})


class Forbidden(Exception):
    pass


def authorize(principal: Principal, action: str, write: bool) -> None:
    """Raise Forbidden unless the principal may take the action. `write` is any change of state."""
    roles = set(principal.roles)
    if action in SELF_SERVICE and roles:
        return
    if action in ADMIN_ONLY and ADMIN not in roles:
        raise Forbidden(f"Action '{action}' requires the admin role")
    if write and not roles & _WRITERS:
        raise Forbidden(f"Action '{action}' requires the member or admin role")
    if not roles:
        raise Forbidden(f"Action '{action}' requires a role on the project")


def sees_all_projects(principal: Principal) -> bool:
    return principal.is_admin
