"""Site tests: the unit `world` (a migrated SQLite database behind the app) for the bundle and the API, and the
real network-namespace lab for deploys (root only)."""
from __future__ import annotations

from tests.unit.conftest import world  # noqa: F401  (the fixture, shared)
