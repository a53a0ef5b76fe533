"""The Spark Connect gateway's decisions without Spark: its method table against the stock client's, who gets
through and to which cluster, the metadata it forwards, and the forwarding itself (a real gRPC server standing in
for a cluster's Connect server, in process)."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from oasis.db.models import Cluster, Instance
from oasis.db.states import CONNECT_STARTED, ClusterOp
from oasis.gateway import methods
from oasis.gateway.proxy import Gateway, upstream_metadata
from oasis.gateway.routes import Refused, Route, Router, bearer, cluster_ref
from oasis.gateway.serve import pem_blocks
from oasis.gateway.starting import wait_started
from oasis.identity import policy
from oasis.identity.builtin import BuiltinIdentity
from oasis.plugins import get_plugin
from oasis.plugins.base import ClusterView
from oasis.plugins.spark import CONNECT_PORT, CONNECT_TOKEN
from oasis.remote.hosts import Remotes
from oasis.remote.local import LocalRemote

from tests.unit.conftest import World, cluster_body
from tests.unit.test_api_clusters import create, set_status


# --- the method table ---------------------------------------------------------------------------------------

def test_the_method_table_is_the_stock_clients_service() -> None:
    # the client's generated stub names every RPC with its cardinality: the table must hold each one, the same
    import pyspark.sql.connect.proto.base_pb2_grpc as stub

    text = Path(stub.__file__).read_text()
    found = dict(re.findall(r"self\.(\w+) = channel\.(unary_unary|unary_stream|stream_unary|stream_stream)\(", text))
    assert found and {m: k.value for m, k in methods.METHODS.items()} == found
    assert f"'/{methods.SERVICE}/ExecutePlan'" in text or f'"/{methods.SERVICE}/ExecutePlan"' in text


# --- metadata -----------------------------------------------------------------------------------------------

def test_a_call_needs_a_bearer_token_and_a_cluster() -> None:
    assert bearer([("authorization", "Bearer abc")]) == "abc"
    assert bearer([("Authorization", "bearer  abc ")]) == "abc"
    for bad in ([], [("authorization", "Basic abc")], [("authorization", "Bearer ")]):
        with pytest.raises(Refused) as e:
            bearer(bad)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED and ";token=" in e.value.message
    assert cluster_ref([("x-oasis-cluster", " sc1 ")]) == "sc1"
    for bad in ([], [("x-oasis-cluster", "")], [("x-oasis-cluster", "x" * 256)]):
        with pytest.raises(Refused) as e:
            cluster_ref(bad)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_callers_token_never_reaches_the_cluster() -> None:
    route = Route("cid", LocalRemote(), "127.0.0.1", 1, "server-token")
    out = upstream_metadata([("authorization", "Bearer oasis-token"), ("x-oasis-cluster", "sc"),
                             ("user-agent", "grpc-python"), ("grpc-accept-encoding", "gzip"),
                             ("x-spark-extra", "kept"), ("trace-bin", b"\x00\x01")], route)
    assert out == [("x-spark-extra", "kept"), ("trace-bin", b"\x00\x01"), ("authorization", "Bearer server-token")]
    assert "server-token" not in repr(route), "the server's token is never shown"


def test_pem_blocks_split_the_apis_combined_key_and_certificate() -> None:
    key = b"-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----\n"
    cert = b"-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
    both = key + cert + cert
    assert pem_blocks(both, "PRIVATE KEY") == key and pem_blocks(both, "CERTIFICATE") == cert + cert


# --- routing ------------------------------------------------------------------------------------------------

def connect_cluster(world: World, name: str = "sc", who: str = "alice", port: int = 20999,
                    configs: dict | None = None) -> str:
    """A Spark cluster as the engine leaves it: Active, its instances placed, its Connect server's port and
    token made."""
    configs = configs or {"general": {"oasis.spark.connect": "true"}}
    c = create(world, cluster_body(name, workers=1, cluster_configs=configs), who=who)
    set_status(world, c["id"], "Active", with_instances=True)
    view = ClusterView(c["id"], name, c["plugin_version"], {}, {})
    with world.db.session() as s:
        s.get(Cluster, c["id"]).secrets = get_plugin("spark").make_secrets(view)
        for inst in s.query(Instance).filter(Instance.cluster_id == c["id"]):
            inst.ports = {"master": 20001, CONNECT_PORT: port}
    return c["id"]


def router(world: World, **kw: Any) -> Router:
    return Router(world.db, BuiltinIdentity(world.db), Remotes(), policy.load(None), **kw)


def call(world: World, who: str, ref: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {world.tokens[who]}"), ("x-oasis-cluster", ref)]


def refusal(r: Router, metadata: list) -> Refused:
    with pytest.raises(Refused) as e:
        asyncio.run(r.route(metadata))
    return e.value


def test_a_member_reaches_the_connect_server_of_its_projects_cluster_by_name_or_id(world: World) -> None:
    cid = connect_cluster(world)
    with world.db.session() as s:
        token = s.get(Cluster, cid).secrets[CONNECT_TOKEN]
    r = router(world)
    for ref in ("sc", cid):
        route = asyncio.run(r.route(call(world, "alice", ref)))
        assert (route.cluster_id, route.address, route.port, route.token) == (cid, "127.0.0.1", 20999, token)
        assert isinstance(route.remote, LocalRemote)
        assert asyncio.run(route.remote.tunnel(route.address, route.port)) == ("127.0.0.1", 20999)


def test_another_projects_cluster_is_not_found_exactly_as_a_missing_one(world: World) -> None:
    cid = connect_cluster(world)
    r = router(world)
    theirs, missing = refusal(r, call(world, "bob", cid)), refusal(r, call(world, "bob", "nothing-here"))
    assert theirs.code == missing.code == grpc.StatusCode.NOT_FOUND
    assert theirs.message == f"no Spark cluster {cid!r} in your project"
    by_name = refusal(r, call(world, "bob", "sc"))
    assert by_name.code == grpc.StatusCode.NOT_FOUND and by_name.message == "no Spark cluster 'sc' in your project"
    # bob's own cluster of the same name is his, and only his is
    mine = connect_cluster(world, "sc", who="bob")
    assert asyncio.run(r.route(call(world, "bob", "sc"))).cluster_id == mine != cid


def test_a_bad_token_is_refused_before_anything_is_looked_up(world: World) -> None:
    connect_cluster(world)
    e = refusal(router(world), [("authorization", "Bearer not-a-token"), ("x-oasis-cluster", "sc")])
    assert e.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_reader_of_the_project_may_not_run_code_on_its_cluster(world: World) -> None:
    connect_cluster(world)
    e = refusal(router(world), call(world, "carol", "sc"))  # carol: a reader of alice's project
    assert e.code == grpc.StatusCode.PERMISSION_DENIED and "data-processing:clusters:connect" in e.message


def test_a_cluster_without_a_server_or_not_active_is_refused_with_why(world: World) -> None:
    connect_cluster(world, "off", configs={"general": {"oasis.spark.connect": "false"}})
    e = refusal(router(world), call(world, "alice", "off"))
    assert e.code == grpc.StatusCode.FAILED_PRECONDITION and "oasis.spark.connect" in e.message
    cid = connect_cluster(world, "going")
    with world.db.session() as s:
        s.get(Cluster, cid).status = "Deleting"
    e = refusal(router(world), call(world, "alice", "going"))
    assert e.code == grpc.StatusCode.FAILED_PRECONDITION and "Deleting" in e.message
    dask = create(world, cluster_body("dk", plugin="dask", workers=1))
    set_status(world, dask["id"], "Active", with_instances=True)
    assert refusal(router(world), call(world, "alice", "dk")).code == grpc.StatusCode.NOT_FOUND


def test_answers_are_kept_for_the_ttl_only(world: World) -> None:
    connect_cluster(world)
    now = [0.0]
    r = router(world, ttl=5, clock=lambda: now[0])
    first = asyncio.run(r.route(call(world, "alice", "sc")))
    with world.db.session() as s:  # the cluster goes away: the cached answer holds for the TTL, then not
        s.get(Cluster, first.cluster_id).status = "Deleting"
    assert asyncio.run(r.route(call(world, "alice", "sc"))) is first
    now[0] = 6
    assert refusal(r, call(world, "alice", "sc")).code == grpc.StatusCode.FAILED_PRECONDITION


# --- forwarding, against a real gRPC server standing in for the cluster's ------------------------------------

# a google.rpc.Status (code 3, message "no such plan"): what Spark's server sends its error classes in
DETAILS = b"\x08\x03\x12\x0cno such plan"


class FakeRoutes:
    def __init__(self, port: int) -> None:
        self.port = port

    async def route(self, metadata: Any) -> Route:
        md = dict(metadata)
        if md.get("authorization") != "Bearer good":
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        return Route("cid", LocalRemote(), "127.0.0.1", self.port, "server-token")


def upstream_handler(seen: list) -> grpc.GenericRpcHandler:
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append(dict(context.invocation_metadata()))
        if request == b"fail":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such plan",
                                (("errorclass-bin", b"\x01\x02"), ("grpc-status-details-bin", DETAILS)))
        return b"analyzed:" + request

    async def stream(request: bytes, context: grpc.aio.ServicerContext):  # noqa: ANN202
        for i in range(3):
            yield request + str(i).encode()
        if request == b"cancel":  # as Spark ends an interrupted query: mid-stream, with no trailing metadata
            await context.abort(grpc.StatusCode.INTERNAL, "[OPERATION_CANCELED] Operation has been canceled.",
                                (("grpc-status-details-bin", DETAILS),))

    async def upload(requests: Any, context: grpc.aio.ServicerContext) -> bytes:
        return b"+".join([r async for r in requests])

    handlers = {"AnalyzePlan": grpc.unary_unary_rpc_method_handler(unary),
                "ExecutePlan": grpc.unary_stream_rpc_method_handler(stream),
                "AddArtifacts": grpc.stream_unary_rpc_method_handler(upload)}
    return grpc.method_handlers_generic_handler(methods.SERVICE, handlers)


def test_the_gateway_forwards_bytes_swaps_the_token_and_relays_errors() -> None:
    async def scenario() -> None:
        seen: list = []
        upstream = grpc.aio.server()
        upstream.add_generic_rpc_handlers((upstream_handler(seen),))
        up_port = upstream.add_insecure_port("127.0.0.1:0")
        await upstream.start()
        front = grpc.aio.server()
        front.add_generic_rpc_handlers((Gateway(FakeRoutes(up_port)).handler(),))  # type: ignore[arg-type]
        port = front.add_insecure_port("127.0.0.1:0")
        await front.start()
        md = (("authorization", "Bearer good"), ("x-oasis-cluster", "sc"), ("x-other", "v"))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                assert await ch.unary_unary(methods.path("AnalyzePlan"))(b"plan", metadata=md) == b"analyzed:plan"
                assert seen[-1]["authorization"] == "Bearer server-token" and seen[-1]["x-other"] == "v"
                assert "x-oasis-cluster" not in seen[-1]
                got = [r async for r in ch.unary_stream(methods.path("ExecutePlan"))(b"r", metadata=md)]
                assert got == [b"r0", b"r1", b"r2"]
                got.clear()
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    async for r in ch.unary_stream(methods.path("ExecutePlan"))(b"cancel", metadata=md):
                        got.append(r)
                assert e.value.code() == grpc.StatusCode.INTERNAL and "OPERATION_CANCELED" in e.value.details()
                assert len(got) == 3

                async def parts():  # noqa: ANN202
                    for p in (b"a", b"b"):
                        yield p

                assert await ch.stream_unary(methods.path("AddArtifacts"))(parts(), metadata=md) == b"a+b"
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await ch.unary_unary(methods.path("AnalyzePlan"))(b"fail", metadata=md)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details() == "no such plan"
                trailing = tuple(e.value.trailing_metadata())
                assert ("errorclass-bin", b"\x01\x02") in trailing, trailing
                assert ("grpc-status-details-bin", DETAILS) in trailing, "Spark's error details (errorClass)"
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await ch.unary_unary(methods.path("AnalyzePlan"))(b"x", metadata=(("authorization", "Bearer no"),))
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and len(seen) == 2
        finally:
            await front.stop(None)
            await upstream.stop(None)

    asyncio.run(scenario())


# --- the cluster's side (oasis/plugins/spark.py) and the string handed out ------------------------------------

def master_view(configs: dict | None = None) -> tuple[ClusterView, Any]:
    from oasis.plugins.base import InstanceView

    plugin = get_plugin("spark")
    configs = configs or {"general": {"oasis.spark.connect": "true"}}
    view = ClusterView("cid", "sc", "4.3", configs, {"spark_home": "/spark", "python": "python3"})
    view.secrets = plugin.make_secrets(view)
    m = InstanceView(id="i1", name="sc-master-001", node_group="master", processes=["master"], address="10.0.0.5",
                     workdir="/w/m", ports={"master": 20001, "master_ui": 20002, CONNECT_PORT: 20003}, vcpus=1,
                     ram_mb=2048, remote=None, agent=None)  # type: ignore[arg-type]
    view.instances.append(m)
    return view, m


def test_the_master_runs_a_connect_server_with_its_own_token_in_a_private_file() -> None:
    plugin = get_plugin("spark")
    assert CONNECT_PORT in plugin.ports("master") and CONNECT_PORT not in plugin.ports("worker")
    view, m = master_view()
    files = plugin._instance_files(view, m)  # what configure writes, each mode 0600
    conf = dict(line.split(" ", 1) for line in files["/w/m/conf/connect.properties"].decode().splitlines())
    assert conf["spark.connect.authenticate.token"] == view.secrets[CONNECT_TOKEN]
    assert conf["spark.authenticate.secret"] == view.secrets["auth_secret"]  # a driver of the secured cluster
    assert (conf["spark.connect.grpc.binding.address"], conf["spark.connect.grpc.binding.port"]) == ("10.0.0.5",
                                                                                                      "20003")
    assert conf["spark.dynamicAllocation.enabled"] == "true" and conf["spark.dynamicAllocation.minExecutors"] == "0"
    assert conf["spark.dynamicAllocation.maxExecutors"] == "2"
    # decommission migrates shuffle files (the cluster's default): no shuffle tracking beside it
    assert conf["spark.dynamicAllocation.shuffleTracking.enabled"] == "false"
    assert "Spark Connect" in plugin.info(view)["Spark"]
    assert view.secrets[CONNECT_TOKEN] not in str(plugin.info(view))


def test_a_cluster_config_turns_the_server_off_or_sizes_it() -> None:
    plugin = get_plugin("spark")
    view, m = master_view({"general": {}})  # on by default, started by the first session
    assert "/w/m/conf/connect.properties" in plugin._instance_files(view, m)
    assert "started by the first session" in plugin.info(view)["Spark"]["Spark Connect"]
    view, m = master_view({"general": {"oasis.spark.connect": "false"}})
    assert "/w/m/conf/connect.properties" not in plugin._instance_files(view, m)
    assert "Spark Connect" not in plugin.info(view)["Spark"]
    view, m = master_view({"general": {"oasis.spark.connect": "true", "oasis.spark.connect.max_executors": 5,
                                       "spark.decommission.enabled": "false"}})
    conf = plugin._instance_files(view, m)["/w/m/conf/connect.properties"].decode()
    assert "spark.dynamicAllocation.maxExecutors 5\n" in conf
    assert "spark.dynamicAllocation.shuffleTracking.enabled true\n" in conf


def test_an_idle_connect_server_is_no_activity() -> None:
    from oasis.plugins.spark import CONNECT_APP, idle_connect_server

    assert idle_connect_server({"name": CONNECT_APP, "cores": 0})
    assert not idle_connect_server({"name": CONNECT_APP, "cores": 1})  # a query is running
    assert not idle_connect_server({"name": "wordcount", "cores": 0})


def test_client_config_gives_the_connect_string_never_a_token(world: World) -> None:
    from oasis.cli.connect import connect_url

    cid = connect_cluster(world)
    with world.db.session() as s:
        row = s.get(Cluster, cid)
        row.info = {"Spark": {"Master": "spark://127.0.0.1:20001", "Spark Connect": "through the gateway"}}
        token = row.secrets[CONNECT_TOKEN]
    r = world.get(f"/v2/clusters/{cid}/client-config")
    assert r.status_code == 200, r.text
    cfg = r.json()["client_config"]
    port = world.settings.connect_port
    assert cfg["spark_connect"] == {"url": f"sc://localhost:{port}/;x-oasis-cluster=sc", "ca": None}
    assert token not in r.text, "the server's own token stays with the gateway"
    assert connect_url(cfg) == f"sc://localhost:{port}/;token=<token>;x-oasis-cluster=sc"
    assert connect_url(cfg, "t0k") == f"sc://localhost:{port}/;token=t0k;x-oasis-cluster=sc"


# --- the server on demand --------------------------------------------------------------------------------------


def test_a_clusters_connect_config_is_checked_at_create(world: World) -> None:
    for bad, word in (("sometimes", "oasis.spark.connect"), ("none", "oasis.spark.connect")):
        r = world.post("/v2/clusters", cluster_body("sc", workers=1,
                                                    cluster_configs={"general": {"oasis.spark.connect": bad}}))
        assert r.status_code == 400 and word in r.text, r.text
    r = world.post("/v2/clusters", cluster_body(
        "sc", workers=1, cluster_configs={"general": {"oasis.spark.connect.max_executors": "many"}}))
    assert r.status_code == 400 and "max_executors" in r.text, r.text
    for good in ("on-demand", "true", "false"):
        r = world.post("/v2/clusters", cluster_body(f"ok-{good}", workers=1,
                                                    cluster_configs={"general": {"oasis.spark.connect": good}}))
        assert r.status_code == 202, r.text


def test_a_pooled_cluster_is_no_ones_to_connect_to(world: World) -> None:
    cid = connect_cluster(world)
    with world.db.session() as s:
        s.get(Cluster, cid).pool_id = "a-pool"
    assert refusal(router(world), call(world, "alice", cid)).code == grpc.StatusCode.NOT_FOUND


def play_engine(world: World, cid: str, outcome: str) -> asyncio.Task:
    """The engine's side of START_CONNECT: take the operation once it is asked for, then end it."""
    async def engine() -> None:
        while True:
            with world.db.session() as s:
                c = s.get(Cluster, cid)
                if c.op == ClusterOp.START_CONNECT:
                    if outcome == "started":
                        c.spec = {**c.spec, CONNECT_STARTED: True}
                    else:
                        c.status_description = "Starting the Spark Connect server failed: no java"
                    c.op = None
                    return
            await asyncio.sleep(0.01)

    return asyncio.ensure_future(engine())


def test_a_first_session_asks_for_the_server_and_waits_for_it(world: World) -> None:
    cid = connect_cluster(world, configs={"general": {}})
    r = router(world)
    route = asyncio.run(r.route(call(world, "alice", "sc")))
    assert route.starts, "on demand, and not started yet"
    woken: list[int] = []

    async def session() -> None:
        engine = play_engine(world, cid, "started")
        await wait_started(world.db, cid, 10, lambda: woken.append(1))
        await engine

    asyncio.run(session())
    assert woken == [1], "the engine of this process was woken once"
    with world.db.session() as s:
        assert s.get(Cluster, cid).spec[CONNECT_STARTED] is True
    assert not asyncio.run(r.route(call(world, "alice", "sc"))).starts
    asyncio.run(wait_started(world.db, cid, 10))  # started: no new operation
    with world.db.session() as s:
        assert s.get(Cluster, cid).op is None


def test_a_start_that_fails_or_takes_too_long_is_refused_with_why(world: World) -> None:
    cid = connect_cluster(world, configs={"general": {}})

    async def failing() -> Refused:
        engine = play_engine(world, cid, "failed")
        with pytest.raises(Refused) as e:
            await wait_started(world.db, cid, 10)
        await engine
        return e.value

    e = asyncio.run(failing())
    assert e.code == grpc.StatusCode.FAILED_PRECONDITION and "no java" in e.message
    # no engine takes it: the caller is told to try again, and the operation stays asked for
    e = refusal_of(wait_started(world.db, cid, 0.3))
    assert e.code == grpc.StatusCode.UNAVAILABLE and "still starting" in e.message
    with world.db.session() as s:
        assert s.get(Cluster, cid).op == ClusterOp.START_CONNECT


def test_a_busy_cluster_is_not_given_a_second_operation(world: World) -> None:
    cid = connect_cluster(world, configs={"general": {}})
    with world.db.session() as s:
        s.get(Cluster, cid).op = ClusterOp.UPDATE_KEYPAIR
    assert refusal_of(wait_started(world.db, cid, 0.3)).code == grpc.StatusCode.UNAVAILABLE
    with world.db.session() as s:
        assert s.get(Cluster, cid).op == ClusterOp.UPDATE_KEYPAIR, "the keypair update goes on; the start waits"
    with world.db.session() as s:  # a scale waits for an Active cluster's operation to end
        s.get(Cluster, cid).op = ClusterOp.START_CONNECT
    r = world.put(f"/v2/clusters/{cid}", {"resize_node_groups": [{"name": "worker", "count": 2}]})
    assert r.status_code == 400 and "start_connect" in r.text, r.text


def refusal_of(waiting: Any) -> Refused:
    with pytest.raises(Refused) as e:
        asyncio.run(waiting)
    return e.value


def test_answers_in_use_are_checked_again_before_they_expire(world: World) -> None:
    cid = connect_cluster(world)
    now = [0.0]
    r = router(world, ttl=5, clock=lambda: now[0])
    alice = call(world, "alice", "sc")
    first = asyncio.run(r.route(alice))
    now[0] = 3.0  # older than TTL/2, used within KEEP_WARM: checked again, and kept from now on
    asyncio.run(r.refresh())
    now[0] = 7.0  # past the first answer's TTL, within the refreshed one's: no lookup
    with world.db.session() as s:
        s.get(Cluster, cid).name = "renamed"  # the database has changed: a lookup would not find 'sc'
    assert asyncio.run(r.route(alice)) == first
    asyncio.run(r.refresh())  # the change is seen by the next check: the answer is gone, the call refused
    assert refusal(r, alice).code == grpc.StatusCode.NOT_FOUND


def test_a_revoked_token_is_refused_within_the_ttl_though_kept_warm(world: World) -> None:
    from oasis.db.models import Token

    connect_cluster(world)
    now = [0.0]
    r = router(world, ttl=5, clock=lambda: now[0])
    alice = call(world, "alice", "sc")
    asyncio.run(r.route(alice))
    with world.db.session() as s:
        s.query(Token).delete()  # every token revoked
    now[0] = 3.0
    asyncio.run(r.refresh())
    assert refusal(r, alice).code == grpc.StatusCode.UNAUTHENTICATED


def test_answers_no_one_uses_are_not_kept_warm(world: World) -> None:
    from oasis.gateway.routes import KEEP_WARM

    connect_cluster(world)
    now = [0.0]
    r = router(world, ttl=5, clock=lambda: now[0])
    asyncio.run(r.route(call(world, "alice", "sc")))
    now[0] = KEEP_WARM + 1
    asyncio.run(r.refresh())
    assert not r._principals and not r._routes
