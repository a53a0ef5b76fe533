"""The Keystone identity backend: tokens are Keystone's, validated with oasis's service credentials
(`GET /v3/auth/tokens` with X-Subject-Token, as keystonemiddleware's auth_token does), and trusts are Keystone's
(OS-TRUST), from a user to the service user.

A validation is cached for at most `token_cache_time` seconds, and never past the token's expiry, keyed by the
token's SHA-256 (the token itself is never kept): a token revoked in Keystone is refused at most that long after.
Refusals are not cached, so a token is valid the moment Keystone says so."""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from oasis.config import KeystoneAuth
from oasis.identity.base import IdentityError
from oasis.identity.policy import ADMIN, MEMBER
from oasis.identity.principal import Principal

log = logging.getLogger("oasis.identity")

# Keystone's historical name of the member role.
ROLE_NAMES = {"_member_": MEMBER}
CACHE_ENTRIES = 10_000  # enough for every token of a busy deployment; a bound, so memory is too
TIMEOUT = 10.0  # seconds for one call to Keystone


def identity_url(auth_url: str) -> str:
    """The v3 root of Keystone from `auth_url` (given with or without the /v3)."""
    url = auth_url.rstrip("/")
    return url if url.endswith("/v3") else f"{url}/v3"


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc).replace(tzinfo=None)


def map_roles(names: list[str]) -> list[str]:
    """Keystone's role names as oasis's: `_member_` is member; roles oasis has no use for are kept as they are."""
    return sorted({ROLE_NAMES.get(n, n) for n in names})


def principal_of(token: dict[str, Any]) -> Principal | None:
    """The principal a Keystone token body (`token` of GET /v3/auth/tokens) stands for; None if it is not scoped
    to a project (oasis owns everything by project)."""
    project = token.get("project")
    if not isinstance(project, dict) or not project.get("id"):
        return None
    user = token.get("user") or {}
    roles = map_roles([r.get("name", "") for r in token.get("roles") or [] if r.get("name")])
    # A trust-scoped token says so, as the builtin backend's principals do: what acts on a trust is known as such.
    trust = token.get("OS-TRUST:trust")
    trust_id = str(trust["id"]) if isinstance(trust, dict) and trust.get("id") else None
    return Principal(user_id=user.get("id", ""), user_name=user.get("name", ""), project_id=project["id"],
                     project_name=project.get("name", ""), roles=roles, is_admin=ADMIN in roles,
                     expires_at=_time(token.get("expires_at")), issued_at=_time(token.get("issued_at")),
                     trust_id=trust_id)


class KeystoneIdentity:
    """The `Identity` of a real Keystone (see oasis.identity.base)."""

    name = "keystone"

    def __init__(self, auth: KeystoneAuth, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc).replace(tzinfo=None)) -> None:
        self.auth = auth
        self.url = identity_url(auth.auth_url)
        self._clock, self._wall = clock, wall
        self._verify: bool | str = auth.cafile or True
        self.session = ks_session.Session(auth=self._service_auth(), verify=self._verify, timeout=TIMEOUT)
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        self.validations = 0  # calls to Keystone that validated a token: what the cache saves is counted by it
        self._service_user_id: str | None = None

    @property
    def public_url(self) -> str:
        """Keystone's v3 root as clients (and jobs on instances) reach it."""
        return identity_url(self.auth.www_authenticate_uri)

    @property
    def www_authenticate(self) -> str:
        """The 401's WWW-Authenticate value, as keystonemiddleware sends it."""
        return f'Keystone uri="{self.auth.www_authenticate_uri}"'

    def _service_auth(self, trust_id: str | None = None) -> v3.Password:
        a = self.auth
        if trust_id is not None:  # a trust-scoped token: the trust names the project
            return v3.Password(auth_url=self.url, username=a.username, password=a.password,
                               user_domain_name=a.user_domain_name, trust_id=trust_id)
        return v3.Password(auth_url=self.url, username=a.username, password=a.password,
                           user_domain_name=a.user_domain_name, project_name=a.project_name,
                           project_domain_name=a.project_domain_name)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self.session.request(f"{self.url}{path}", method, raise_exc=False, **kwargs)
        except ks_exc.ClientException as e:
            # The service's own credentials failing, or Keystone down: an outage, not the caller's fault.
            log.warning("keystone %s %s failed: %s", method, path, type(e).__name__)
            raise IdentityError(f"The identity service cannot be reached or refused oasis's credentials "
                                f"({type(e).__name__})") from None

    # --- tokens ---------------------------------------------------------------------------------------------

    def authenticate_token(self, token: str) -> Principal | None:
        if not token:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
            self._cache.pop(key, None)
        principal = self.validate(token)
        if principal is not None and self.auth.token_cache_time > 0:
            lifetime = self.auth.token_cache_time
            if principal.expires_at is not None:
                lifetime = min(lifetime, (principal.expires_at - self._wall()).total_seconds())
            if lifetime > 0:
                with self._lock:
                    if len(self._cache) >= CACHE_ENTRIES:
                        self._evict(now)
                    self._cache[key] = (now + lifetime, principal)
        return principal

    def _evict(self, now: float) -> None:
        for k in [k for k, (until, _) in self._cache.items() if until <= now]:
            del self._cache[k]
        while len(self._cache) >= CACHE_ENTRIES:  # still full: the entry that expires first goes
            del self._cache[min(self._cache, key=lambda k: self._cache[k][0])]

    def validate(self, token: str) -> Principal | None:
        """Ask Keystone (no cache)."""
        self.validations += 1
        resp = self._call("GET", "/auth/tokens", headers={"X-Subject-Token": token})
        if resp.status_code in (401, 403, 404):
            return None
        if resp.status_code != 200:
            log.warning("keystone token validation answered %s", resp.status_code)
            raise IdentityError(f"The identity service answered {resp.status_code} to a token validation")
        principal = principal_of(resp.json().get("token") or {})
        if principal is not None and principal.expires_at is not None and principal.expires_at <= self._wall():
            return None
        return principal

    # --- trusts ---------------------------------------------------------------------------------------------

    def service_user_id(self) -> str:
        if self._service_user_id is None:
            try:
                self._service_user_id = self.session.get_user_id()
            except ks_exc.ClientException as e:
                raise IdentityError(f"oasis cannot authenticate to the identity service ({type(e).__name__})") \
                    from None
        assert self._service_user_id is not None
        return self._service_user_id

    def create_trust(self, user_token: str, trustor: Principal, *, roles: list[str] | None = None,
                     expires_at: datetime | None = None, impersonation: bool = True,
                     trustee_user_id: str | None = None) -> str:
        # The trustor makes it (Keystone lets only the trustor create its trusts), with its own token; the
        # roles are Keystone's names as the token listed them (`_member_` stays `_member_` if that is what it has).
        wanted = roles if roles is not None else trustor.roles
        body: dict[str, Any] = {"trust": {
            "trustor_user_id": trustor.user_id, "trustee_user_id": trustee_user_id or self.service_user_id(),
            "project_id": trustor.project_id, "impersonation": impersonation,
            "roles": [{"name": r} for r in wanted]}}
        if expires_at is not None:
            body["trust"]["expires_at"] = expires_at.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        resp = self._call("POST", "/OS-TRUST/trusts", json=body, authenticated=False,
                          headers={"X-Auth-Token": user_token})
        if resp.status_code != 201:
            raise IdentityError(f"The identity service refused the trust ({resp.status_code}): "
                                f"{_message(resp)}")
        return str(resp.json()["trust"]["id"])

    def trust_principal(self, trust_id: str) -> Principal | None:
        session = ks_session.Session(auth=self._service_auth(trust_id), verify=self._verify, timeout=TIMEOUT)
        try:
            token = session.get_token()
        except ks_exc.Unauthorized:
            return None  # the trust is gone or expired, or its trustor lost a role it delegates
        except ks_exc.NotFound:
            return None
        except ks_exc.ClientException as e:
            raise IdentityError(f"The identity service cannot be reached ({type(e).__name__})") from None
        if token is None:
            return None
        return self.validate(token)

    def trust_object_store(self, trust_id: str) -> tuple[str, str] | None:
        # The service user's token on the trust (impersonating the trustor, with the delegated roles) is what
        # Swift's keystoneauth sees as the trustor on the trust's project: the owner of that project's account.
        return self._object_store(self._service_auth(trust_id), trust_id)

    def user_object_store(self, user_id: str, password: str, trust_id: str) -> tuple[str, str]:
        """As `trust_object_store`, for another trustee of the trust: a proxy user (by id, with its password)."""
        return self._object_store(v3.Password(auth_url=self.url, user_id=user_id, password=password,
                                              trust_id=trust_id), trust_id)

    def _object_store(self, auth: v3.Password, trust_id: str) -> tuple[str, str]:
        try:
            access = auth.get_access(ks_session.Session(verify=self._verify, timeout=TIMEOUT))
        except (ks_exc.Unauthorized, ks_exc.NotFound):
            raise IdentityError(f"the trust {trust_id} is gone (deleted, expired, or its trustor lost a role it "
                                f"delegates)") from None
        except ks_exc.ClientException as e:
            raise IdentityError(f"The identity service cannot be reached ({type(e).__name__})") from None
        try:
            url = access.service_catalog.url_for(service_type="object-store", interface="public")
        except ks_exc.EndpointNotFound:
            url = None
        if not url:
            raise IdentityError(f"the identity service's catalog has no public object-store endpoint for the "
                                f"project {access.project_id}")
        return str(access.auth_token), str(url)

    def delete_trust(self, trust_id: str) -> None:
        # The service user is the trustee; Keystone's policy lets the trustor or an admin delete a trust, so the
        # service user has the admin role on its project (as Sahara's had; `oasis keystone register` says so).
        resp = self._call("DELETE", f"/OS-TRUST/trusts/{trust_id}")
        if resp.status_code not in (204, 404):
            raise IdentityError(f"The identity service refused to delete the trust ({resp.status_code}): "
                                f"{_message(resp)}")


    # --- users of a domain (the proxy domain's) ------------------------------------------------------------
    # The service user administers them with its own token: Keystone's default policy lets its admin role.

    def domain_id(self, name: str) -> str:
        resp = self._call("GET", "/domains", params={"name": name})
        domains = resp.json().get("domains") if resp.status_code == 200 else None
        if not domains:
            raise IdentityError(f"The identity service has no domain {name!r} for proxy users "
                                f"({resp.status_code}: {_message(resp) if resp.status_code != 200 else 'not found'})")
        return str(domains[0]["id"])

    def create_user(self, domain_id: str, name: str, password: str, description: str) -> str:
        resp = self._call("POST", "/users", json={"user": {"name": name, "domain_id": domain_id,
                                                           "password": password, "description": description}})
        if resp.status_code != 201:
            raise IdentityError(f"The identity service refused to create the proxy user ({resp.status_code}): "
                                f"{_message(resp)}")
        return str(resp.json()["user"]["id"])

    def delete_user(self, user_id: str) -> None:
        """Remove a user; Keystone deletes its trusts and revokes their tokens with it. One gone is no error."""
        resp = self._call("DELETE", f"/users/{user_id}")
        if resp.status_code not in (204, 404):
            raise IdentityError(f"The identity service refused to delete the user ({resp.status_code}): "
                                f"{_message(resp)}")

    def list_users(self, domain_id: str) -> list[dict[str, Any]]:
        resp = self._call("GET", "/users", params={"domain_id": domain_id})
        if resp.status_code != 200:
            raise IdentityError(f"The identity service refused to list the proxy users ({resp.status_code}): "
                                f"{_message(resp)}")
        return list(resp.json().get("users") or [])


def _message(resp: Any) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.reason or ""

