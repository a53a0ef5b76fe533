"""Structured logs: the JSON formatter (one object per line, the context, tracebacks), masking, the request id
(header, context, a caller's id kept as `global_request_id`), and the API's access line in JSON mode: the route
template, never a token or a body."""
from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from oasis import logconfig
from tests.unit.conftest import PASSWORD, World, cluster_body


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The process's logging set up in JSON mode into a buffer; the root logger as it was afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger(logconfig.ACCESS_LOGGER).level)
    buffer = io.StringIO()
    logconfig.setup("json", stream=buffer)
    try:
        yield buffer
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger(logconfig.ACCESS_LOGGER).setLevel(saved[2])
        logging.captureWarnings(False)


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]  # each line one object, or this fails


def test_a_json_line_has_the_fields_and_the_context(json_logs: io.StringIO) -> None:
    log = logging.getLogger("oasis.test")
    with logconfig.bound(request_id="req-1", operation="cluster:c1:create", cluster_id="c1"):
        log.info("step %s done", "spawn")
    log.warning("outside")
    first, second = lines(json_logs)
    assert first["message"] == "step spawn done" and first["level"] == "INFO" and first["logger"] == "oasis.test"
    assert first["time"].endswith("+00:00") and isinstance(first["process"], int)
    assert (first["request_id"], first["operation"], first["cluster_id"]) == ("req-1", "cluster:c1:create", "c1")
    assert "request_id" not in second and second["level"] == "WARNING"


def test_an_exception_is_a_traceback_field_on_one_line(json_logs: io.StringIO) -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logging.getLogger("oasis.test").exception("it failed")
    (line,) = lines(json_logs)
    assert line["message"] == "it failed"
    assert "Traceback (most recent call last)" in line["traceback"] and "RuntimeError: boom" in line["traceback"]


def test_warnings_go_through_the_same_handler(json_logs: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
    (line,) = lines(json_logs)
    assert line["logger"] == "py.warnings" and "an old API" in line["message"]


@pytest.mark.parametrize("text, secret", [
    ("cannot reach swift+http://admin:hunter2@127.0.0.1:8080/auth/v1.0", "hunter2"),
    ("headers {'X-Auth-Token': 'gAAAAtoken123'}", "gAAAAtoken123"),
    ('body {"password": "s3cret-pass"}', "s3cret-pass"),
    ("[SQL: INSERT INTO tokens VALUES (?)]\n[parameters: ('tok-abc',)]", "tok-abc"),
])
def test_what_looks_like_a_credential_is_masked(json_logs: io.StringIO, text: str, secret: str) -> None:
    logging.getLogger("oasis.test").error(text)
    try:
        raise ValueError(text)
    except ValueError:
        logging.getLogger("oasis.test").exception("failed")
    assert secret not in json_logs.getvalue() and len(lines(json_logs)) == 2


def test_text_lines_end_with_the_request_id_and_operation() -> None:
    record = logging.LogRecord("oasis.engine", logging.INFO, __file__, 1, "step %s", ("spawn",), None)
    with logconfig.bound(request_id="req-9", operation="job:j1:run"):
        line = logconfig.TextFormatter().format(record)
    assert line.endswith("INFO oasis.engine: step spawn [req-9 job:j1:run]")
    assert logconfig.TextFormatter().format(record).endswith("step spawn")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logconfig.setup("xml")


def test_fields_added_inside_a_block_are_seen_at_its_end() -> None:
    with logconfig.bound(request_id="req-2") as ctx:
        logconfig.add(cluster_id="c9", job_id=None)
        assert logconfig.current() == {"request_id": "req-2", "cluster_id": "c9"} == ctx
    assert logconfig.current() == {}
    logconfig.add(cluster_id="ignored")  # outside any block: nothing to add to
    assert logconfig.current() == {}


def test_every_response_has_a_request_id(world: World) -> None:
    ids = set()
    for r in (world.client.get("/"), world.client.get("/v2/clusters"), world.get("/v2/clusters"),
              world.client.get("/v2/nothing-here"), world.client.get("/metrics")):
        rid = r.headers["x-openstack-request-id"]
        assert logconfig.REQUEST_ID_RE.fullmatch(rid), rid
        ids.add(rid)
    assert len(ids) == 5  # one of its own for each


def test_a_callers_request_id_is_kept_as_global_never_as_ours(world: World, json_logs: io.StringIO) -> None:
    theirs = logconfig.new_request_id()
    r = world.client.get("/v2/clusters", headers={**world.h(), "X-OpenStack-Request-ID": theirs})
    assert r.headers["x-openstack-request-id"] != theirs
    world.client.get("/v2/clusters", headers={**world.h(), "X-OpenStack-Request-ID": "req-not-a-uuid; rm -rf"})
    first, second = [line for line in lines(json_logs) if line["logger"] == logconfig.ACCESS_LOGGER]
    assert first["global_request_id"] == theirs and first["request_id"] == r.headers["x-openstack-request-id"]
    assert "global_request_id" not in second


def test_one_access_line_per_request_with_the_route_template(world: World, json_logs: io.StringIO) -> None:
    r = world.post("/v2/clusters", cluster_body(name="logged"))
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    shown = world.get(f"/v2/clusters/{cid}")
    token = world.client.post("/v3/auth/tokens", json={"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "alice", "password": PASSWORD, "domain": {"name": "Default"}}}}}})
    assert token.status_code == 201, token.text
    access = [line for line in lines(json_logs) if line["logger"] == logconfig.ACCESS_LOGGER]
    assert [(a["method"], a["route"], a["status"]) for a in access] == [
        ("POST", "/v2/clusters", 202), ("GET", "/v2/clusters/{id}", 200), ("POST", "/v3/auth/tokens", 201)]
    assert [a["request_id"] for a in access] == [x.headers["x-openstack-request-id"] for x in (r, shown, token)]
    assert access[1]["cluster_id"] == cid and all(a["duration"] >= 0 for a in access)
    everything = json_logs.getvalue()
    for secret in (*world.tokens.values(), token.headers["X-Subject-Token"], PASSWORD):
        assert secret not in everything
    assert "node_groups" not in everything  # no body


def test_access_lines_are_off_in_text_mode(world: World) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    logconfig.setup("text", stream=buffer)
    try:
        world.get("/v2/clusters")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    assert logconfig.ACCESS_LOGGER not in buffer.getvalue() and "/v2/clusters" not in buffer.getvalue()
