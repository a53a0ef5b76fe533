"""Host health: a cheap periodic check (`true` over each host's usual way in) recorded on the host row, so that
`oasis site show` tells which hosts answer, since when one does not, and why; and the site's overall health
from its hosts'. Checking never changes an operation: the operation machine finds out for itself and waits."""
from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from oasis.db.models import Host, Site, utcnow
from oasis.db.session import Database
from oasis.remote.base import Unreachable
from oasis.remote.hosts import Remotes

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0


async def check_hosts(db: Database, remotes: Remotes, site_ids: list[str]) -> None:
    """Check every host of these sites at once and record the outcome on each host (`spec["health"]`)."""
    with db.session() as s:
        pairs = [(h, s.get(Site, h.site_id)) for h in s.scalars(select(Host).where(Host.site_id.in_(site_ids)))]
        s.expunge_all()
    if not pairs:
        return

    async def one(host: Host, site: Site) -> tuple[str, str | None]:
        try:
            remote = remotes.for_host(host, site)
            await asyncio.wait_for(remote.run(["true"], timeout=CHECK_TIMEOUT, check=False), CHECK_TIMEOUT + 20)
            return host.id, None
        except Unreachable as e:
            return host.id, e.reason
        except Exception as e:  # noqa: BLE001 - anything else that stops `true` from answering counts against the host too
            return host.id, str(e) or type(e).__name__

    outcomes = await asyncio.gather(*(one(h, site) for h, site in pairs))
    now = utcnow().isoformat()
    with db.session() as s:
        for host_id, error in outcomes:
            host = s.get(Host, host_id)
            if host is None:
                continue
            before = (host.spec or {}).get("health") or {}
            health = {"reachable": error is None, "checked_at": now,
                      "last_seen": now if error is None else before.get("last_seen"),
                      "error": None if error is None else error[:500],
                      "unreachable_since": None if error is None else (before.get("unreachable_since") or now)}
            if before.get("reachable", True) != health["reachable"]:
                log.warning("host %s: %s", host.name, "reachable again" if error is None else f"unreachable: {error}")
            host.spec = {**(host.spec or {}), "health": health}


def reachable_by_site(db: Database) -> dict[str, tuple[int, int]]:
    """Site name -> (hosts whose last check answered, hosts), from the checks' records: what `/metrics` shows,
    the same from every process whichever engine checked the site. A host not checked yet is not reachable."""
    counts: dict[str, tuple[int, int]] = {}
    with db.session() as s:
        for site, host_id, spec in s.execute(select(Site.name, Host.id, Host.spec).outerjoin(
                Host, Host.site_id == Site.id)):
            up, total = counts.get(site, (0, 0))
            if host_id is not None:  # a site with no host yet shows 0 of 0
                up, total = up + bool(((spec or {}).get("health") or {}).get("reachable")), total + 1
            counts[site] = (up, total)
    return counts
