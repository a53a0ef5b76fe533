"""What "no duplicate and no orphan process" means, checked on the host itself."""
from __future__ import annotations

import os
from pathlib import Path

from tests.integration.services import processes_under


def cluster_dir(state_dir: Path, cluster_id: str) -> Path:
    return state_dir / "hosts" / "localhost" / cluster_id


def daemons(state_dir: Path, cluster_id: str) -> dict[str, int]:
    """Recorded daemons of a cluster: "<instance>/<process>" -> pid."""
    out = {}
    for pidfile in cluster_dir(state_dir, cluster_id).glob("*/proc/*.pid"):
        out[f"{pidfile.parent.parent.name}/{pidfile.stem}"] = int(pidfile.read_text())
    return out


def assert_clean_processes(state_dir: Path, cluster_id: str, expected: int) -> None:
    """Exactly `expected` daemons are recorded, each alive, and every process running in the cluster's
    directories belongs to one of them: nothing was started twice and nothing escaped the records."""
    recorded = daemons(state_dir, cluster_id)
    assert len(recorded) == expected, recorded
    for name, pid in recorded.items():
        os.kill(pid, 0)  # raises if a recorded daemon is dead
    groups = set(recorded.values())
    strays = []
    for pid in processes_under(cluster_dir(state_dir, cluster_id)):
        try:
            if os.getpgid(pid) not in groups:
                strays.append(pid)
        except ProcessLookupError:
            pass
    assert not strays, f"processes outside any recorded daemon: {strays}"


def assert_nothing_left(state_dir: Path, cluster_id: str) -> None:
    """No process runs in the cluster's directories (a removed directory still matches, as "... (deleted)")
    and the directories are gone."""
    where = cluster_dir(state_dir, cluster_id)
    assert not processes_under(where), "processes of a deleted cluster are still running"
    assert not where.exists(), "the cluster's directories were not removed"
