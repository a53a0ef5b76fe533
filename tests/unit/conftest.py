"""The unit tier (tests/conftest.py gives the marker and the `world` fixture). The world's helpers live in
tests/world.py; they are importable from here too, as the unit tests have always imported them."""
from __future__ import annotations

from tests.world import PASSWORD, World, cluster_body, plugin_tags, version_of  # noqa: F401
