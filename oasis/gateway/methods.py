"""Spark Connect's service and its RPCs, by cardinality: a fixed table from `spark.connect.SparkConnectService`
(spark/connect/base.proto of Spark 4.x), so the gateway forwards them as bytes without compiled protos."""
from __future__ import annotations

from enum import Enum

SERVICE = "spark.connect.SparkConnectService"


class Kind(str, Enum):
    UNARY = "unary_unary"
    SERVER_STREAM = "unary_stream"
    CLIENT_STREAM = "stream_unary"


METHODS: dict[str, Kind] = {
    "ExecutePlan": Kind.SERVER_STREAM,
    "AnalyzePlan": Kind.UNARY,
    "Config": Kind.UNARY,
    "AddArtifacts": Kind.CLIENT_STREAM,
    "ArtifactStatus": Kind.UNARY,
    "Interrupt": Kind.UNARY,
    "ReattachExecute": Kind.SERVER_STREAM,
    "ReleaseExecute": Kind.UNARY,
    "ReleaseSession": Kind.UNARY,
    "FetchErrorDetails": Kind.UNARY,
    "CloneSession": Kind.UNARY,
    "GetStatus": Kind.UNARY,
}


def path(method: str) -> str:
    return f"/{SERVICE}/{method}"
