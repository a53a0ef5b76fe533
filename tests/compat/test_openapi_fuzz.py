"""The OpenAPI document the server publishes, checked two ways: it describes every operation of the operation
table, and schemathesis, fuzzing every operation from it against a live `oasis up`, finds no server error and
no response that the document does not describe."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.services import Oasis

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
EXAMPLES = int(os.environ.get("OASIS_FUZZ_EXAMPLES", "15"))
BUDGET_SECONDS = 120


def test_document_lists_every_operation(oasis: Oasis) -> None:
    r = httpx.get(f"{oasis.url}/openapi.json", timeout=30)  # no token needed
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    operations = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    for probe in [("GET", "/v2/clusters"), ("POST", "/v1.1/clusters/multiple"), ("GET", "/v1.1/job-executions/{id}/cancel"),
                  ("PUT", "/v2/images/{id}/tags"), ("POST", "/v1.1/images/{id}/tag"), ("PATCH", "/v2/plugins/{name}"),
                  ("PUT", "/v1.1/job-binary-internals/{name}"), ("POST", "/v1.1/jobs/{id}/execute"),
                  ("GET", "/v1.0/cluster-templates/{id}/export"), ("POST", "/v3/auth/tokens"), ("POST", "/v3/users"),
                  ("GET", "/")]:
        assert probe in operations, probe
    cluster = doc["paths"]["/v2/clusters"]["post"]
    assert cluster["requestBody"]["content"]["application/json"]["schema"]["required"] == \
        ["name", "plugin_name", "plugin_version"]
    v1 = doc["paths"]["/v1.1/clusters"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "hadoop_version" in v1["properties"] and "plugin_version" not in v1["properties"]
    listed = doc["paths"]["/v1.1/clusters"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "tenant_id" in listed["properties"]["clusters"]["items"]["properties"]


def test_the_known_hostile_cases_are_400s_on_a_live_server(oasis: Oasis) -> None:
    """What a fuzzer found before (tests/unit/test_bad_input.py's cases), against the real process: each a 400, and
    the server answers normally afterwards (nothing left it allocating or stuck)."""
    from tests.unit.test_bad_input import HOSTILE, deep

    # Before the fuzzer, which may revoke the module's token or change its user's password.
    token = oasis.client.headers["X-Auth-Token"]
    with httpx.Client(base_url=oasis.url, timeout=30) as c:
        for method, path, body, says in HOSTILE:
            ctype = "application/octet-stream" if "job-binary-internals" in path else "application/json"
            r = c.request(method, path, content=body, headers={"X-Auth-Token": token, "Content-Type": ctype})
            assert r.status_code == 400 and says in r.text, (method, path, body[:60], r.status_code, r.text[:300])
        for path, headers in (("/v3/auth/tokens", {}), ("/v2/sites/join", {"X-Oasis-Join-Token": "t"})):
            r = c.post(path, content=deep(), headers={"Content-Type": "application/json", **headers})
            assert r.status_code == 400 and "nested" in r.text, (path, r.text[:300])
        assert c.get("/v2/clusters", headers={"X-Auth-Token": token}).status_code == 200


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(oasis: Oasis, tmp_path: Path) -> None:
    token = oasis.client.headers["X-Auth-Token"]
    started = time.monotonic()
    proc = subprocess.run(
        [SCHEMATHESIS, "run", f"{oasis.url}/openapi.json",
         "--checks", "not_a_server_error,response_schema_conformance",
         "--phases", "examples,fuzzing", "--max-examples", str(EXAMPLES), "--no-shrink",
         "--max-time", str(BUDGET_SECONDS), "--request-timeout", "30", "--workers", "2",
         "--header", f"X-Auth-Token: {token}",
         # v1.0 is v1.1's clusters, templates, plugins and images again, served by the same handlers.
         "--exclude-path-regex", "^/v1\\.0/", "--suppress-health-check", "all",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=BUDGET_SECONDS + 60, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    # It did test: (nearly) every operation, with many generated cases.
    tested = int(out.split("Tested:")[1].split()[0])
    generated = int(out.split("Test cases:")[1].split()[0])
    assert tested >= 120 and generated >= 5 * tested, out[-3000:]
    assert elapsed < BUDGET_SECONDS + 30
