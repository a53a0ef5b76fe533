"""docs/data-flows.yaml is whole and docs/data-flows.md is its rendering (devtools/data_flows.py): one source."""
from __future__ import annotations

import copy

from devtools import data_flows
from devtools.data_flows import Socket


def test_every_entry_has_every_field() -> None:
    doc = data_flows.load()
    assert doc["flows"], "no flows"
    for flow in doc["flows"]:
        missing = [f for f in data_flows.FLOW_FIELDS if f not in flow]
        assert not missing, f"{flow.get('id')}: no {missing}"
    assert data_flows.problems(doc) == []


def test_the_checker_finds_a_missing_field_and_an_unknown_role() -> None:
    doc = copy.deepcopy(data_flows.load())
    del doc["flows"][0]["encrypted"]
    doc["flows"][1]["sockets"] = [{"server": {"process": ["nobody"], "address": ["loopback"], "port": ["api"]},
                                   "client": {"process": ["oasis"], "address": ["loopback"]}}]
    found = data_flows.problems(doc)
    assert any("no 'encrypted'" in p for p in found) and any("unknown role 'nobody'" in p for p in found), found


def test_the_page_is_the_rendering_of_the_yaml() -> None:
    page = data_flows.MD_PATH.read_text()
    assert data_flows.render(page, data_flows.load()) == page, \
        "docs/data-flows.md is stale: run `python -m devtools.data_flows`"
    for name in data_flows.PARTS:
        assert data_flows.BEGIN.format(name) in page


def _socket(**kw) -> Socket:
    base = dict(pid=1, role="dask-worker", netns="root", transport="tcp", state="ESTABLISHED", side="client",
                local="10.0.0.2:40000", remote="10.0.0.1:20001", local_kinds=frozenset({"instance"}),
                remote_kinds=frozenset({"instance"}), local_sources=frozenset({"ephemeral"}),
                remote_sources=frozenset({"alloc:scheduler"}), peer_role="dask-scheduler")
    return Socket(**{**base, **kw})


def test_a_socket_matches_its_flow_and_nothing_else_does() -> None:
    flows = data_flows.load()["flows"]
    assert data_flows.undescribed(flows, [_socket()]) == []
    wrong = [_socket(remote_sources=frozenset({"fixed:8787"})), _socket(peer_role="spark-master"),
             _socket(side="listen", role="dask-scheduler", local_kinds=frozenset({"wildcard"}),
                     local_sources=frozenset({"alloc:scheduler"})),
             _socket(transport="udp")]
    assert data_flows.undescribed(flows, wrong) == wrong


def test_roles_by_command_line_and_parent() -> None:
    roles = data_flows.load()["roles"]
    assert data_flows.role_of(roles, "/v/bin/python -m distributed.cli.dask_scheduler --host 10.0.0.1", "agent") \
        == "dask-scheduler"
    assert data_flows.role_of(roles, "/v/bin/python -c from multiprocessing.spawn import spawn_main", "dask-nanny") \
        == "dask-worker"
    assert data_flows.role_of(roles, "/v/bin/python main.py", "agent") == "job"
    assert data_flows.role_of(roles, "/v/bin/python main.py", "spark-driver") == "pyspark-driver"
    assert data_flows.role_of(roles, "/usr/bin/something", None) == "unknown"
