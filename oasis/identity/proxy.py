"""Proxy users: with `[proxy] domain = NAME`, each job that reads or writes its project's Swift without stored
credentials reaches it as a Keystone user of its own, instead of through temporary URLs.

- Made by the API in the request that creates the job (the only moment oasis holds the creator's token, which a
  trust needs): the user `job_<job id>` in the proxy domain with a random password, then a trust from the job's
  creator to it on the creator's project, delegating only `[proxy] roles` (what Swift needs), without
  impersonation (Swift's logs name the proxy user), expiring with the job's access. Kept encrypted on the job
  row (`jobs.proxy`), never shown.
- The engine hands the user's id, password and trust id to the job in its access file (mode 0600, the job's Unix
  user only; oasis.edp.access); the job takes trust-scoped tokens of its own at Keystone (oasis.jobkit).
- Removed by the engine when the job ends: deleting the user makes Keystone delete its trust and revoke every
  token of it, so the job's access ends at once. A periodic task, one engine per period, removes the proxy users
  whose job has ended or never came to be (an API or engine that died at the wrong moment).
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, runtime_checkable

from oasis.identity.base import Identity, IdentityError
from oasis.identity.principal import Principal

log = logging.getLogger(__name__)

NAME = re.compile(r"^job_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
MADE = re.compile(r"made (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")
# A user whose job has no row yet may belong to a request still being committed: it is left alone this long.
ORPHAN_GRACE = timedelta(minutes=10)
# The trust ends by itself this long after it was made, if nothing removed the user before: as long as a job's
# scoped access lasts (oasis.engine.jobs ACCESS_SECONDS).
TRUST_LIFETIME = timedelta(days=7)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def user_name(job_id: str) -> str:
    return f"job_{job_id}"


@dataclass
class Leftover:
    user_id: str
    job_id: str | None  # None: not a name oasis gives (left alone)
    made: datetime | None


@runtime_checkable
class UserAdmin(Identity, Protocol):
    """What proxy users need of an identity backend beyond trusts: Keystone's (oasis.identity.keystone)."""

    public_url: str

    def domain_id(self, name: str) -> str: ...
    def create_user(self, domain_id: str, name: str, password: str, description: str) -> str: ...
    def delete_user(self, user_id: str) -> None: ...
    def list_users(self, domain_id: str) -> list[dict[str, Any]]: ...
    def user_object_store(self, user_id: str, password: str, trust_id: str) -> tuple[str, str]: ...


class ProxyUsers:
    """The proxy domain of a Keystone, and oasis's users in it."""

    def __init__(self, keystone: UserAdmin, domain: str, roles: list[str]) -> None:
        self.keystone, self.domain, self.roles = keystone, domain, list(roles)
        self._domain_id: str | None = None

    @property
    def auth_url(self) -> str:
        """Where a job authenticates as its proxy user: Keystone's public v3 root."""
        return self.keystone.public_url

    def domain_id(self) -> str:
        if self._domain_id is None:
            self._domain_id = self.keystone.domain_id(self.domain)
        return self._domain_id

    def make(self, job_id: str, user_token: str, trustor: Principal) -> dict[str, Any]:
        """The job's proxy user and the trust from `trustor` (whose token is `user_token`) to it: the record the
        job row keeps. Nothing is left behind when either refuses."""
        password = secrets.token_urlsafe(32)
        name = user_name(job_id)
        user_id = self.keystone.create_user(self.domain_id(), name, password,
                                            f"oasis proxy user of job {job_id}, made {_now().isoformat()}Z")
        try:
            trust_id = self.keystone.create_trust(user_token, trustor, roles=self.roles,
                                                  expires_at=_now() + TRUST_LIFETIME,
                                                  impersonation=False, trustee_user_id=user_id)
        except IdentityError:
            self.remove({"user_id": user_id})
            raise
        return {"user_id": user_id, "name": name, "password": password, "trust_id": trust_id}

    def remove(self, record: dict[str, Any] | None) -> None:
        """Delete a proxy user (and with it its trust and tokens). Raises IdentityError if Keystone refuses."""
        if record and record.get("user_id"):
            self.keystone.delete_user(record["user_id"])

    def object_store(self, record: dict[str, Any]) -> tuple[str, str]:
        """A token of the proxy user on its trust, and the public object-store of the trust's project."""
        return self.keystone.user_object_store(record["user_id"], record["password"], record["trust_id"])

    def listed(self) -> list[Leftover]:
        """oasis's users in the proxy domain, with the job each was made for."""
        out = []
        for user in self.keystone.list_users(self.domain_id()):
            name = NAME.match(str(user.get("name") or ""))
            made = MADE.search(str(user.get("description") or ""))
            out.append(Leftover(str(user["id"]), name.group(1) if name else None,
                                datetime.fromisoformat(made.group(1)[:-1]) if made else None))
        return out


def to_remove(users: list[Leftover], live_jobs: set[str], known_jobs: set[str],
              now: datetime | None = None) -> list[Leftover]:
    """Which of the proxy domain's users go: those oasis made (by their name) whose job has ended, or whose job
    has no row although the user is older than the grace (the request that made it failed or died)."""
    now = now or _now()
    gone = []
    for user in users:
        if user.job_id is None or user.job_id in live_jobs:
            continue
        if user.job_id in known_jobs or (user.made is not None and now - user.made > ORPHAN_GRACE):
            gone.append(user)
    return gone
