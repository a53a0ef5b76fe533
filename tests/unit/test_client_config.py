"""GET /v2/clusters/{id}/client-config: a cluster's credentials for the members of its own project only, and the
plugins' credential files and settings (made without a host: the pure half and the file contents)."""
from __future__ import annotations

import ssl
from pathlib import Path

import yaml
from oasis.db.models import Cluster
from oasis.plugins import get_plugin
from oasis.plugins.base import ClusterView, InstanceView

from tests.unit.conftest import World, cluster_body
from tests.unit.test_api_clusters import create, set_status

DASK_INFO = {"Dask": {"Scheduler": "tls://127.0.0.1:20001", "Dashboard": "https://127.0.0.1:20002/status"}}


def active_cluster(world: World, plugin: str = "dask", is_public: bool = False) -> str:
    c = create(world, cluster_body("cc", plugin=plugin, workers=1, is_public=is_public))
    view = ClusterView(c["id"], "cc", c["plugin_version"], {}, {})
    with world.db.session() as s:
        row = s.get(Cluster, c["id"])
        row.secrets = get_plugin(plugin).make_secrets(view)
        row.info = DASK_INFO if plugin == "dask" else {"Spark": {"Master": "spark://127.0.0.1:20001",
                                                                 "Web UI": "https://127.0.0.1:20002"}}
    set_status(world, c["id"], "Active")
    return c["id"]


def test_a_member_gets_the_dask_client_config(world: World) -> None:
    cid = active_cluster(world)
    r = world.get(f"/v2/clusters/{cid}/client-config")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    cfg = r.json()["client_config"]
    assert cfg["plugin"] == "dask" and cfg["scheduler_address"] == "tls://127.0.0.1:20001"
    assert cfg["require_encryption"] is True
    with world.db.session() as s:
        secrets = s.get(Cluster, cid).secrets
    assert cfg["ca"] == secrets["ca"]["cert"] and cfg["cert"] == secrets["client"]["cert"]
    assert "PRIVATE KEY" in cfg["key"]
    assert secrets["ca"]["key"] not in r.text, "the CA's key signs servers: never handed out"


def test_a_member_gets_the_spark_client_config(world: World) -> None:
    cid = active_cluster(world, "spark")
    cfg = world.get(f"/v2/clusters/{cid}/client-config").json()["client_config"]
    with world.db.session() as s:
        secrets = s.get(Cluster, cid).secrets
    assert cfg["master_url"] == "spark://127.0.0.1:20001"
    assert cfg["spark_conf"] == {"spark.authenticate": "true", "spark.authenticate.secret": secrets["auth_secret"],
                                 "spark.network.crypto.enabled": "true"}
    assert cfg["cert"] == secrets["client"]["cert"]
    assert secrets["ca"]["key"] not in str(cfg) and secrets["store_password"] not in str(cfg)


def test_other_projects_get_404_even_for_a_public_cluster(world: World) -> None:
    cid = active_cluster(world, is_public=True)
    assert world.get(f"/v2/clusters/{cid}", who="bob").status_code == 200  # public: visible...
    for who in ("bob", "admin"):  # ...but its credentials are its project's alone
        r = world.get(f"/v2/clusters/{cid}/client-config", who=who)
        assert r.status_code == 404, (who, r.text)
        assert "PRIVATE KEY" not in r.text
    assert world.get("/v2/clusters/no-such-id/client-config").status_code == 404


def test_a_reader_of_the_project_may_not_take_the_credentials(world: World) -> None:
    cid = active_cluster(world)
    r = world.get(f"/v2/clusters/{cid}/client-config", who="carol")
    assert r.status_code == 403 and "PRIVATE KEY" not in r.text


def test_a_cluster_not_active_is_a_clear_409(world: World) -> None:
    c = create(world, cluster_body("young", plugin="dask", workers=1))
    r = world.get(f"/v2/clusters/{c['id']}/client-config")
    assert r.status_code == 409, r.text
    assert "once it is Active" in r.json()["error_message"]


def test_no_response_shows_the_secrets(world: World) -> None:
    cid = active_cluster(world)
    with world.db.session() as s:
        key = s.get(Cluster, cid).secrets["client"]["key"]
    for path in (f"/v2/clusters/{cid}", "/v2/clusters", f"/v2/clusters/{cid}?show_progress=true"):
        assert key not in world.get(path).text and "PRIVATE KEY" not in world.get(path).text


def test_the_route_is_in_the_openapi_document(world: World) -> None:
    doc = world.get("/openapi.json")
    if doc.status_code == 200:
        assert "/v2/clusters/{id}/client-config" in doc.json()["paths"]


# --- the plugins' files -------------------------------------------------------------------------------------


def _instance(name: str, processes: list[str], ports: dict[str, int], workdir: str, files: dict) -> InstanceView:
    inst = InstanceView(name, name, "ng", processes, "127.0.0.1", workdir, ports, 1, 1024, None, None)  # type: ignore[arg-type]

    async def write(path: str, data: bytes, mode: int = 0o600) -> None:
        files[path] = (data, mode)

    inst.write = write  # type: ignore[method-assign]
    return inst


def test_dask_files_give_tls_settings_by_path_and_nothing_secret_in_argv_or_env(tmp_path: Path) -> None:
    import asyncio

    plugin = get_plugin("dask")
    files: dict = {}
    s = _instance("s", ["scheduler"], {"scheduler": 20001, "dashboard": 20002}, f"{tmp_path}/s", files)
    view = ClusterView("cid", "c", "x", {}, {"python": "python3"}, [s])
    view.secrets = plugin.make_secrets(view)
    asyncio.run(plugin.configure(view, [s]))
    assert all(mode == 0o600 for _, mode in files.values())
    config = yaml.safe_load(files[f"{tmp_path}/s/conf/dask/dask.yaml"][0])["distributed"]
    assert config["comm"]["require-encryption"] is True
    assert config["scheduler"]["dashboard"]["tls"]["cert"] == f"{tmp_path}/s/conf/tls/node.pem"
    job_files = plugin.job_files(view, f"{tmp_path}/job")
    job_config = yaml.safe_load(job_files[f"{tmp_path}/job/dask/dask.yaml"])["distributed"]["comm"]["tls"]
    assert set(job_config) == {"ca-file", "client"}
    launch = plugin.launch(view, "Dask", "main.py", [], {}, [], f"{tmp_path}/job")
    assert launch.env["DASK_SCHEDULER_ADDRESS"] == "tls://127.0.0.1:20001"
    assert launch.env["DASK_CONFIG"] == f"{tmp_path}/job/dask"
    flat = " ".join([*launch.argv, *launch.env.values()])
    assert "PRIVATE KEY" not in flat and "BEGIN" not in flat
    # the files make a working client context, with the client certificate and the cluster's CA
    for path, data in job_files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    ctx = ssl.create_default_context(cafile=job_config["ca-file"])
    ctx.load_cert_chain(job_config["client"]["cert"], job_config["client"]["key"])


def test_spark_secret_goes_to_files_and_never_to_argv_or_env(tmp_path: Path) -> None:
    import asyncio

    plugin = get_plugin("spark")
    files: dict = {}
    m = _instance("m", ["master"], {"master": 20001, "master_ui": 20002}, f"{tmp_path}/m", files)
    view = ClusterView("cid", "c", "x", {"general": {"spark.authenticate": "false"}},
                       {"python": "python3", "spark_home": "/spark"}, [m])
    view.secrets = plugin.make_secrets(view)
    secret = view.secrets["auth_secret"]
    asyncio.run(plugin.configure(view, [m]))
    defaults = files[f"{tmp_path}/m/conf/spark-defaults.conf"][0].decode()
    assert f"spark.authenticate.secret {secret}\n" in defaults
    assert "spark.authenticate true\n" in defaults, "a cluster config cannot turn authentication off"
    assert "spark.network.crypto.enabled true\n" in defaults
    assert "spark.ssl.standalone.needClientAuth true\n" in defaults
    assert all(mode == 0o600 for _, mode in files.values())
    job = plugin.job_files(view, f"{tmp_path}/job")[f"{tmp_path}/job/spark.properties"].decode()
    assert f"spark.authenticate.secret {secret}\n" in job
    launch = plugin.launch(view, "Spark", "main.py", [], {}, [], f"{tmp_path}/job")
    assert launch.argv[launch.argv.index("--properties-file") + 1] == f"{tmp_path}/job/spark.properties"
    for text in (*launch.argv, *launch.env.values()):
        assert secret not in text and view.secrets["store_password"] not in text

