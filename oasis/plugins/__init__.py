"""The plugin registry: plugins by name."""
from __future__ import annotations

from functools import cache

from oasis.plugins.base import Plugin
from oasis.plugins.dask import DaskPlugin
from oasis.plugins.spark import SparkPlugin


@cache
def registry() -> dict[str, Plugin]:
    return {p.name: p for p in (SparkPlugin(), DaskPlugin())}


def get_plugin(name: str) -> Plugin | None:
    return registry().get(name)


def image_tags() -> list[str]:
    """The tags of an image that carries every plugin's runtime: each plugin's name and versions (Sahara's
    required image tags)."""
    return sorted({t for p in registry().values() for v in p.versions() for t in (p.name, v)})
