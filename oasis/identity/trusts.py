"""When oasis makes a trust, and how the engine acts on one, whichever identity backend there is.

The API makes a trust from the caller to oasis's service user in the request that asks for work that can outlive
the caller's token (Sahara's cluster trusts, oasis/api/keystone.py `trust_for_work`): every cluster, whose scale,
deletion and periodic work may come later; a job whose end leads to more work (its transient cluster's
deletion); and a job that starts later (scheduled, retried, or waiting for its cluster). The engine asks for the
trust's principal before it does such work later, and deletes the trust once the work is done."""
from __future__ import annotations

import logging

from oasis.identity.base import Identity, IdentityError
from oasis.identity.principal import Principal

log = logging.getLogger(__name__)


class TrustGone(Exception):
    """The trust the work runs on is gone (deleted, expired, or its trustor lost a delegated role)."""


def job_needs_trust(cluster_is_transient: bool, starts_later: bool = False) -> bool:
    """A job on a transient cluster (its end deletes the cluster, possibly long after the creator's token
    expired), and a job that may start long after it was asked for: a scheduled one, one with retries, one sent
    to a cluster that is not Active yet."""
    return cluster_is_transient or starts_later


def act_on(identity: Identity | None, trust_id: str | None, what: str) -> Principal | None:
    """The principal the engine acts as for work on `trust_id`, or None where there is no trust to act on (a row
    from before trusts, or an engine given no identity). Raises TrustGone, with the reason the user will read, if
    the trust can no longer be acted on; an identity that cannot be reached raises IdentityError (try again)."""
    if identity is None or not trust_id:
        return None
    principal = identity.trust_principal(trust_id)
    if principal is None:
        raise TrustGone(f"the trust that lets oasis {what} for its creator is gone (deleted, expired, or the "
                        f"creator lost its role on the project): {trust_id}")
    return principal


def release(identity: Identity | None, trust_id: str | None) -> None:
    """Delete a trust whose work is done. Best effort: one that cannot be deleted now stays until it expires or
    its trustor deletes it, which costs nothing but the row."""
    if identity is None or not trust_id:
        return
    try:
        identity.delete_trust(trust_id)
    except IdentityError as e:
        log.warning("could not delete trust %s: %s", trust_id, e)
