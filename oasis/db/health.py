"""What the API shows of host and site health, read from what the engine's periodic check recorded on each
host row (`spec["health"]`). Pure: no connection is opened here."""
from __future__ import annotations

from typing import Any

from oasis.db.models import Host


def host_health(host: Host) -> dict[str, Any]:
    """What the API shows of a host's health; unchecked hosts say so."""
    health = (host.spec or {}).get("health")
    if not health:
        return {"reachable": None, "checked_at": None, "last_seen": None, "error": None, "unreachable_since": None}
    return dict(health)


def site_health(hosts: list[Host]) -> dict[str, Any]:
    """healthy (every host answers), degraded (some do not), unreachable (none does), unknown (not checked)."""
    checked = [host_health(h) for h in hosts if (h.spec or {}).get("health")]
    up = sum(1 for h in checked if h["reachable"])
    down = [h.name for h in hosts if host_health(h)["reachable"] is False]
    if not checked:
        status = "unknown"
    elif not down:
        status = "healthy"
    elif len(down) == len(hosts):
        status = "unreachable"
    else:
        status = "degraded"
    return {"status": status, "hosts": len(hosts), "reachable": up, "unreachable": down,
            "checked_at": max((h["checked_at"] for h in checked), default=None)}
