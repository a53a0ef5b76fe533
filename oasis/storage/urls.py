"""Data locations as URLs: swift://container/path, s3://bucket/key (s3a:// too), file:///path, hdfs://…"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

OBJECT_SCHEMES = ("swift", "s3", "s3a")


@dataclass(frozen=True)
class Location:
    scheme: str  # "swift" | "s3" | "file" | "hdfs" | ""
    container: str  # container or bucket ("" for file/hdfs)
    key: str  # object key or prefix inside the container; the path for file://

    @property
    def kind(self) -> str:
        return "s3" if self.scheme == "s3a" else self.scheme

    @property
    def is_object(self) -> bool:
        return self.scheme in OBJECT_SCHEMES

    def url(self) -> str:
        if self.is_object:
            return f"{self.kind}://{self.container}/{self.key}"
        return f"{self.scheme}://{self.key}" if self.scheme else self.key

    def child(self, name: str) -> "Location":
        base = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return Location(self.scheme, self.container, base + name)


def parse(url: str) -> Location:
    """Split a data or binary URL. Object URLs need a container; Sahara's `.sahara` suffix on Swift containers
    (swift://container.sahara/obj) is dropped."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return Location("", "", url)
    scheme = scheme.lower()
    if scheme in OBJECT_SCHEMES:
        container, _, key = rest.partition("/")
        if scheme == "swift" and container.endswith(".sahara"):
            container = container[: -len(".sahara")]
        if not container:
            raise ValueError(f"{scheme}:// URL without a container or bucket: {url}")
        return Location(scheme, unquote(container), unquote(key))
    return Location(scheme, "", rest)
