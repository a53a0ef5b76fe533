"""The dashboard (oasis/web) in-process on the `world`: signing in and out, the cookie's flags, CSRF, every page for
a member and for an administrator, another project's objects as 404 pages, the API's validation errors on the
forms, the live streams, and the job log reader against both shapes of the logs endpoint."""
from __future__ import annotations

import asyncio
import json
import re
import warnings
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from oasis.db.models import Cluster, Job, ProvisionEvent, ProvisionStep
from oasis.web.client import Api
from oasis.web.logs import read_log, whole_utf8
from oasis.web.session import COOKIE, csrf_for

from tests.world import PASSWORD, World, cluster_body

PAGES = ("/dashboard/", "/dashboard/clusters", "/dashboard/clusters/new", "/dashboard/jobs", "/dashboard/jobs/new",
         "/dashboard/templates", "/dashboard/job-templates", "/dashboard/job-binaries", "/dashboard/data-sources")
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def browser(world: World, https: bool = False) -> TestClient:
    """A client of its own (its own cookie jar), as one browser."""
    return TestClient(world.client.app, base_url="https://testserver" if https else "http://testserver",
                      raise_server_exceptions=False)


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, html[-2000:]
    return found.group(1)


def sign_in(client: TestClient, user: str, project: str, password: str = PASSWORD):  # noqa: ANN201
    csrf = csrf_of(client.get("/dashboard/login").text)
    return client.post("/dashboard/login", data={"csrf": csrf, "username": user, "password": password,
                                                 "project": project, "next": "/dashboard/"}, follow_redirects=False)


@pytest.fixture
def alice(world: World) -> Iterator[TestClient]:
    with browser(world) as client:
        assert sign_in(client, "alice", "p1").status_code == 303
        yield client


@pytest.fixture
def admin(world: World) -> Iterator[TestClient]:
    with browser(world) as client:
        assert sign_in(client, "admin", "admin").status_code == 303
        yield client


def token_of(client: TestClient) -> str:
    return client.cookies[COOKIE]


def form_csrf(client: TestClient) -> str:
    return csrf_for(token_of(client))


def cluster_template(world: World, name: str = "dask-small", who: str = "alice") -> dict:
    body = cluster_body("x", plugin="dask", workers=1)
    r = world.post("/v2/cluster-templates", {"name": name, "plugin_name": body["plugin_name"],
                                             "plugin_version": body["plugin_version"],
                                             "node_groups": body["node_groups"]}, who=who)
    assert r.status_code == 202, r.text
    return r.json()["cluster_template"]


def active_cluster(world: World, name: str, who: str = "alice") -> str:
    r = world.post("/v2/clusters", cluster_body(name, plugin="dask", workers=1), who=who)
    assert r.status_code == 202, r.text
    cid = r.json()["cluster"]["id"]
    with world.db.session() as s:
        c = s.get(Cluster, cid)
        c.status, c.op, c.secrets = "Active", None, {"made": "by configure"}
        c.info = {"Dask": {"Dashboard": "https://127.0.0.1:20001/status", "Scheduler": "tls://127.0.0.1:20000"}}
    return cid


# --- signing in and out ---------------------------------------------------------------------------------------


def test_pages_ask_for_a_login_first(world: World) -> None:
    with browser(world) as client:
        r = client.get("/dashboard/clusters", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fclusters"
        r = client.get("/dashboard/clusters/abc/events")
        assert r.status_code == 401
        r = client.get("/dashboard", follow_redirects=False)
        assert r.status_code in (307, 308) and r.headers["location"].endswith("/dashboard/")


def test_the_script_and_stylesheet_are_served_here_and_fetch_nothing_from_elsewhere(world: World) -> None:
    with browser(world) as client:
        page = client.get("/dashboard/login").text
        assert re.findall(r'(?:src|href)="([^"]+)"', page) == ["/dashboard/static/dashboard.css",
                                                                "/dashboard/static/dashboard.js", "#main", "/dashboard/"]
        assert "<script>" not in page and " style=" not in page  # nothing inline: the CSP allows none
        for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
            r = client.get(f"/dashboard/static/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"]
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", r.text), f"{name} names another origin"


def test_login_sets_a_strict_httponly_cookie_and_logout_revokes_the_token(world: World) -> None:
    with browser(world) as client:
        r = sign_in(client, "alice", "p1")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        token = token_of(client)
        page = client.get("/dashboard/")
        assert page.status_code == 200 and "alice" in page.text and token not in page.text
        assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 200

        r = client.post("/dashboard/logout", data={"csrf": form_csrf(client)}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/login"
        assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 401
        assert client.get("/dashboard/", follow_redirects=False).status_code == 303


def test_the_cookie_is_secure_over_https(world: World) -> None:
    with browser(world, https=True) as client:
        r = sign_in(client, "alice", "p1")
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_a_wrong_password_shows_the_api_message(world: World) -> None:
    with browser(world) as client:
        r = sign_in(client, "alice", "p1", password="wrong")
        assert r.status_code == 401
        assert "The request you have made requires authentication." in r.text and COOKIE not in r.cookies


def test_a_pasted_token_signs_in_with_a_token_of_the_dashboards_own(world: World) -> None:
    with browser(world) as client:
        csrf = csrf_of(client.get("/dashboard/login").text)
        r = client.post("/dashboard/login", data={"csrf": csrf, "token": world.tokens["bob"]}, follow_redirects=False)
        assert r.status_code == 303
        assert token_of(client) != world.tokens["bob"]
        assert "project <strong>p2</strong>" in client.get("/dashboard/").text
        client.post("/dashboard/logout", data={"csrf": form_csrf(client)})
        # signing out revoked the dashboard's token, not the pasted one
        assert world.get("/v2/clusters", who="bob").status_code == 200
        csrf = csrf_of(client.get("/dashboard/login").text)
        r = client.post("/dashboard/login", data={"csrf": csrf, "token": "not-a-token"}, follow_redirects=False)
        assert r.status_code == 401 and "That token is not valid" in r.text


def test_a_login_without_the_forms_nonce_is_refused(world: World) -> None:
    with browser(world) as client:
        r = client.post("/dashboard/login", data={"csrf": "forged", "username": "alice", "password": PASSWORD,
                                                  "project": "p1"}, follow_redirects=False)
        assert r.status_code == 403 and COOKIE not in r.cookies


def test_an_expired_or_revoked_token_goes_back_to_the_login(world: World, alice: TestClient) -> None:
    token = token_of(alice)
    r = world.client.delete("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert r.status_code == 204
    r = alice.get("/dashboard/jobs", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fjobs&expired=1"
    assert 'oasis_dashboard=""' in r.headers["set-cookie"]  # the dead cookie is cleared
    assert "Your session has ended" in alice.get(r.headers["location"]).text


def test_the_login_never_redirects_off_the_dashboard(world: World) -> None:
    with browser(world) as client:
        for target in ("https://evil.example/", "//evil.example/dashboard", "/dashboard/../v2", "/dashboardx"):
            client.cookies.clear()
            csrf = csrf_of(client.get("/dashboard/login").text)
            r = client.post("/dashboard/login", data={"csrf": csrf, "username": "alice", "password": PASSWORD,
                                                      "project": "p1", "next": target}, follow_redirects=False)
            assert (r.status_code, r.headers["location"]) == (303, "/dashboard/")


# --- CSRF -----------------------------------------------------------------------------------------------------


def test_a_form_without_the_sessions_csrf_token_is_refused(world: World, alice: TestClient) -> None:
    template = cluster_template(world)
    for csrf in (None, "0" * 64, csrf_for(world.tokens["alice"])):  # absent, wrong, another session's
        data = {"name": "forged", "cluster_template_id": template["id"]}
        if csrf:
            data["csrf"] = csrf
        r = alice.post("/dashboard/clusters", data=data, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
    assert world.get("/v2/clusters").json()["clusters"] == []
    r = alice.post("/dashboard/logout", data={}, follow_redirects=False)
    assert r.status_code == 403
    assert world.client.get("/v2/clusters", headers={"X-Auth-Token": token_of(alice)}).status_code == 200


# --- pages ----------------------------------------------------------------------------------------------------


def test_every_page_renders_for_a_member_and_an_admin_with_only_what_each_may_see(
        world: World, alice: TestClient, admin: TestClient) -> None:
    cluster_template(world)
    mine = active_cluster(world, "alices")
    theirs = active_cluster(world, "bobs", who="bob")
    for client in (alice, admin):
        for path in PAGES:
            r = client.get(path)
            assert r.status_code == 200, (path, r.text[-2000:])
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
            assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
            assert 'aria-label="Dashboard"' in r.text and '<main id="main">' in r.text
            assert token_of(client) not in r.text
    listed = alice.get("/dashboard/clusters").text
    assert mine in listed and theirs not in listed
    everything = admin.get("/dashboard/clusters").text
    assert mine in everything and theirs in everything
    overview = alice.get("/dashboard/").text
    assert "local" in overview and "h1" in overview and "Active</span> 1" in overview
    page = alice.get(f"/dashboard/clusters/{mine}").text
    assert 'href="https://127.0.0.1:20001/status"' in page and "oasis cluster connect alices" in page
    assert admin.get(f"/dashboard/clusters/{theirs}").status_code == 200


def test_another_projects_objects_are_404_pages(world: World, alice: TestClient) -> None:
    theirs = active_cluster(world, "bobs", who="bob")
    r = alice.get(f"/dashboard/clusters/{theirs}")
    assert r.status_code == 404 and f"Cluster with id &#39;{theirs}&#39; not found" in r.text
    assert "Traceback" not in r.text
    for action in ("scale", "delete"):
        r = alice.post(f"/dashboard/clusters/{theirs}/{action}", data={"csrf": form_csrf(alice), "confirm": "yes"})
        assert r.status_code == 404
    assert world.get(f"/v2/clusters/{theirs}", who="bob").json()["cluster"]["status"] == "Active"
    r = alice.get("/dashboard/jobs/0f0f0f0f-0000-0000-0000-000000000000")
    assert r.status_code == 404 and "Job with id" in r.text
    stream = alice.get(f"/dashboard/clusters/{theirs}/events")
    assert stream.status_code == 200 and stream.text.startswith("event: gone")


def test_the_apis_validation_errors_show_on_the_form(world: World, alice: TestClient) -> None:
    template = cluster_template(world)
    r = alice.post("/dashboard/clusters", data={"csrf": form_csrf(alice), "name": "not a hostname!",
                                                "cluster_template_id": template["id"]})
    assert r.status_code == 400 and 'id="form-error"' in r.text
    api = world.post("/v2/clusters", {"name": "not a hostname!", "plugin_name": template["plugin_name"],
                                      "plugin_version": template["plugin_version"],
                                      "cluster_template_id": template["id"]}).json()
    message = api["error_message"].split("\nError ID:")[0]
    assert message.replace("'", "&#39;") in r.text  # the API's own words, escaped
    assert 'value="not a hostname!"' in r.text  # what the user typed is kept
    r = alice.post("/dashboard/clusters", data={"csrf": form_csrf(alice), "name": "c1", "cluster_template_id": ""})
    assert r.status_code == 400 and "Choose a cluster template." in r.text


def test_create_scale_and_delete_a_cluster_from_the_pages(world: World, alice: TestClient) -> None:
    template = cluster_template(world)
    r = alice.post("/dashboard/clusters", data={"csrf": form_csrf(alice), "name": "web1",
                                                "cluster_template_id": template["id"]}, follow_redirects=False)
    assert r.status_code == 303
    cid = r.headers["location"].rsplit("/", 1)[1]
    made = world.get(f"/v2/clusters/{cid}").json()["cluster"]
    assert (made["name"], made["cluster_template_id"], made["plugin_name"]) == ("web1", template["id"], "dask")
    r = alice.post("/dashboard/clusters", data={"csrf": form_csrf(alice), "name": "web1",
                                                "cluster_template_id": template["id"]})
    assert r.status_code == 400 and "Cluster with name &#39;web1&#39; already exists" in r.text
    # not Active yet: the API refuses the scale, and its reason shows beside the form
    r = alice.post(f"/dashboard/clusters/{cid}/scale", data={"csrf": form_csrf(alice), "count-worker": "2"})
    assert r.status_code == 400 and 'id="scale-error"' in r.text

    active = active_cluster(world, "web2")
    r = alice.post(f"/dashboard/clusters/{active}/scale", data={"csrf": form_csrf(alice), "count-worker": "3"},
                   follow_redirects=False)
    assert r.status_code == 303
    with world.db.session() as s:
        row = s.get(Cluster, active)
        assert row.op == "scale" and row.op_target["resize"] == {"worker": 3}
    r = alice.post(f"/dashboard/clusters/{active}/scale", data={"csrf": form_csrf(alice), "count-worker": "two"})
    assert r.status_code == 400 and "must be a whole number" in r.text

    r = alice.post(f"/dashboard/clusters/{cid}/delete", data={"csrf": form_csrf(alice)})
    assert r.status_code == 400 and "Tick the box" in r.text
    r = alice.post(f"/dashboard/clusters/{cid}/delete", data={"csrf": form_csrf(alice), "confirm": "yes"},
                   follow_redirects=False)
    assert r.status_code == 303
    assert world.get(f"/v2/clusters/{cid}").json()["cluster"]["status"] == "Deleting"


def test_a_reader_is_shown_the_apis_403(world: World) -> None:
    template = cluster_template(world)
    with browser(world) as carol:
        assert sign_in(carol, "carol", "p1").status_code == 303
        assert carol.get("/dashboard/clusters").status_code == 200
        r = carol.post("/dashboard/clusters", data={"csrf": form_csrf(carol), "name": "nope",
                                                    "cluster_template_id": template["id"]})
        assert r.status_code == 403 and 'id="form-error"' in r.text


def job_template(world: World) -> dict:
    internal = world.client.put("/v2/job-binary-internals/wc.py", content=b"print('hi')",
                                headers={**world.h(), "Content-Type": "application/octet-stream"}).json()
    binary = world.post("/v2/job-binaries", {"name": "wc.py",
                                             "url": f"internal-db://{internal['job_binary_internal']['id']}"}).json()
    return world.post("/v2/job-templates", {"name": "wc", "type": "Dask",
                                            "mains": [binary["job_binary"]["id"]]}).json()["job_template"]


def test_run_a_job_from_the_page(world: World, alice: TestClient) -> None:
    cid = active_cluster(world, "runner")
    jt = job_template(world)
    source = world.post("/v2/data-sources", {"name": "text", "type": "swift", "url": "swift://c/in.txt",
                                             "description": "<script>alert(1)</script>"}).json()["data_source"]
    page = alice.get("/dashboard/data-sources").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    r = alice.post("/dashboard/jobs", data={"csrf": form_csrf(alice), "job_template_id": jt["id"], "cluster_id": cid,
                                            "input_id": source["id"], "args": "datasource://text\n--top 3\n",
                                            "substitute": "yes"}, follow_redirects=False)
    assert r.status_code == 303
    jid = r.headers["location"].rsplit("/", 1)[1]
    job = world.get(f"/v2/jobs/{jid}").json()["job"]
    assert job["input_id"] == source["id"] and job["job_configs"]["args"] == ["datasource://text", "--top 3"]
    assert job["job_configs"]["configs"] == {"edp.substitute_data_source_for_name": True}
    r = alice.post("/dashboard/jobs", data={"csrf": form_csrf(alice), "job_template_id": jt["id"], "cluster_id": "x"})
    assert r.status_code == 400 and "Cluster with id &#39;x&#39; not found" in r.text
    assert jid in alice.get("/dashboard/jobs").text


# --- live streams ---------------------------------------------------------------------------------------------


def events_of(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_the_cluster_stream_pushes_steps_events_and_status_then_ends(world: World, alice: TestClient) -> None:
    cid = active_cluster(world, "streamed")
    with world.db.session() as s:
        step = ProvisionStep(cluster_id=cid, project_id=world.projects["p1"], step_name="Spawning", step_type="x",
                             total=1, successful=True, duration=0.5)
        s.add(step)
        s.flush()
        s.add(ProvisionEvent(step_id=step.id, instance_name="streamed-worker-1", event_info="up", successful=True))
    r = alice.get(f"/dashboard/clusters/{cid}/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-store"
    got = events_of(r.text)
    assert [name for name, _ in got] == ["step", "event", "status", "end"]
    assert got[0][1]["step_name"] == "Spawning" and got[1][1]["instance_name"] == "streamed-worker-1"
    assert got[2][1]["status"] == "Active" and got[2][1]["info"]["Dask"]["Scheduler"].startswith("tls://")


def test_the_job_stream_pushes_the_logs_from_the_pages_offsets_and_ends_with_the_job(
        world: World, alice: TestClient) -> None:
    cid = active_cluster(world, "logs")
    with world.db.session() as s:
        job = Job(project_id=world.projects["p1"], job_template_id=job_template(world)["id"], cluster_id=cid, job_configs={},
                  status="SUCCEEDED", info={}, return_code=0)
        s.add(job)
        s.flush()
        jid = job.id
    world.store.put(f"jobs/{jid}/stdout", "river 3\ncité 2\n".encode())
    world.store.put(f"jobs/{jid}/stderr", b"# 1 partition\n")
    page = alice.get(f"/dashboard/jobs/{jid}")
    assert page.status_code == 200 and "cité 2" in page.text and 'data-settled="true"' in page.text
    r = alice.get(f"/dashboard/jobs/{jid}/logs/events?stdout=8&stderr=0")
    got = events_of(r.text)
    assert got[0] == ("status", {"status": "SUCCEEDED", "return_code": 0, "start_time": None, "end_time": None})
    assert got[1] == ("log", {"stream": "stdout", "text": "cité 2\n", "offset": 8, "next": 16})
    assert got[2][1]["stream"] == "stderr" and got[3][0] == "end"


def test_an_ended_jobs_history_is_listed_and_downloaded_with_the_apis_headers(world: World, alice: TestClient) -> None:
    cid = active_cluster(world, "hist")
    with world.db.session() as s:
        job = Job(project_id=world.projects["p1"], job_template_id=job_template(world)["id"], cluster_id=cid,
                  job_configs={}, status="SUCCEEDED", info={}, return_code=0)
        s.add(job)
        s.flush()
        jid = job.id
    world.store.put(f"jobs/{jid}/history/dask-report.html", b"<html>Dask Performance Report</html>")
    page = alice.get(f"/dashboard/jobs/{jid}")
    assert f'href="/dashboard/jobs/{jid}/history/dask-report.html"' in page.text
    r = alice.get(f"/dashboard/jobs/{jid}/history/dask-report.html")
    assert r.status_code == 200 and r.content == b"<html>Dask Performance Report</html>"
    assert r.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in r.headers["content-security-policy"] and r.headers["cache-control"] == "no-store"
    with browser(world) as bob:
        sign_in(bob, "bob", "p2")
        assert bob.get(f"/dashboard/jobs/{jid}/history/dask-report.html").status_code == 404


# --- the log reader ----------------------------------------------------------------------------------------------


def test_whole_utf8_stops_before_a_cut_character() -> None:
    data = "aé€😀".encode()
    assert whole_utf8(data) == len(data)
    assert [whole_utf8(data[:n]) for n in range(len(data) + 1)] == [0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10]


LOG = "line one\nligne deux é\n".encode()


def offset_endpoint(complete: bool) -> Starlette:
    """The logs endpoint as the other helper's change makes it: `offset`, X-Oasis-Log-Size, -Complete."""

    async def logs(request: Request) -> Response:
        offset = int(request.query_params.get("offset", "0"))
        headers = {"X-Oasis-Log-Size": str(len(LOG))}
        if complete:
            headers["X-Oasis-Log-Complete"] = "true"
        return Response(LOG[offset:], media_type="text/plain", headers=headers)

    return Starlette(routes=[Route("/v2/jobs/{id}/logs", logs)])


def todays_endpoint() -> Starlette:
    async def logs(request: Request) -> Response:
        if set(request.query_params) - {"stream"}:
            return JSONResponse({"error_code": 400, "error_name": "INVALID_PARAMS_ON_REQUEST",
                                 "error_message": "The only valid params for this request are: stream"}, 400)
        return Response(LOG, media_type="text/plain")

    return Starlette(routes=[Route("/v2/jobs/{id}/logs", logs)])


@pytest.mark.parametrize("app", ["offsets", "offsets-complete", "today"])
def test_the_log_reader_reads_on_from_an_offset_on_either_endpoint(app: str) -> None:
    api_app = {"offsets": offset_endpoint(False), "offsets-complete": offset_endpoint(True),
               "today": todays_endpoint()}[app]

    async def run() -> list:
        async with Api(api_app, "http://test", "tok") as api:
            first = await read_log(api, "j1", "stdout", 0, job_final=False)
            cut = await read_log(api, "j1", "stdout", len(LOG) - 2, job_final=False)  # inside "é"
            rest = await read_log(api, "j1", "stdout", 9, job_final=True)
            return [first, cut, rest]

    first, cut, rest = asyncio.run(run())
    assert first.text == LOG.decode() and first.next_offset == len(LOG)
    assert rest.text == "ligne deux é\n" and rest.next_offset == len(LOG)
    assert cut.text.endswith("\n") or cut.text == "\ufffd\n"
    if app == "offsets":  # the API says: not complete, whatever the job's status
        assert (first.complete, rest.complete) == (False, False)
    elif app == "offsets-complete":
        assert (first.complete, rest.complete) == (True, True)
    else:  # no header: complete once the job's status is final
        assert (first.complete, rest.complete) == (False, True)


def test_a_stream_ends_when_the_browser_goes_away(world: World, alice: TestClient) -> None:
    """A cluster that never settles (no engine here): its stream runs until the client disconnects, then ends."""
    r = world.post("/v2/clusters", cluster_body("forever", plugin="dask", workers=1))
    cid = r.json()["cluster"]["id"]
    cookie = f"{COOKIE}={token_of(alice)}".encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": f"/dashboard/clusters/{cid}/events", "raw_path": b"",
             "root_path": "", "query_string": b"", "headers": [(b"host", b"testserver"), (b"cookie", cookie)],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    sent: list[dict] = []

    async def run() -> None:
        first_chunk = asyncio.Event()

        async def receive() -> dict:
            await first_chunk.wait()  # the browser reads the first events, then goes away
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                first_chunk.set()

        # a guard against a hang, not a measure: a stream that ignored the disconnect would run forever
        await asyncio.wait_for(world.client.app(scope, receive, send), 60)

    asyncio.run(run())
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
    assert body.startswith("event: status") and '"status":"Validating"' in body and "event: end" not in body
