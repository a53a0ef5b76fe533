"""file:// data sources on a site's shares: the manifest's `shares`, the path check a job passes at create (API, 400)
and at prepare (engine), Sahara's cluster `shares` narrowing them, and the embedded single-host site left as is."""
from __future__ import annotations

import pytest

from oasis.db.models import Host, Site
from oasis.edp.shares import ShareError, check_file_sources, usable_shares
from oasis.sites.manifest import ManifestError, check_shares
from tests.unit.conftest import World
from tests.unit.test_api_edp import active_cluster, binary, template

SHARES = [{"path": "/srv/oasis-share", "access_level": "rw", "id": "data"},
          {"path": "/srv/reference/", "access_level": "ro"}]


def test_manifest_shares_are_validated_and_normalized() -> None:
    assert check_shares(None, "sites[0]") == []
    assert check_shares(SHARES, "sites[0]") == [{"path": "/srv/oasis-share", "access_level": "rw", "id": "data"},
                                                {"path": "/srv/reference", "access_level": "ro"}]
    assert check_shares([{"path": "/x"}], "s")[0]["access_level"] == "rw"  # Sahara's default
    for bad, field in (("/srv", "sites[0].shares: must be a list"), ([{"path": "srv"}], "sites[0].shares[0].path"),
                       ([{"path": "/srv", "access_level": "rx"}], "sites[0].shares[0].access_level"),
                       ([{"path": "/srv", "mode": "rw"}], "sites[0].shares[0]: unknown key(s) mode"), (["/srv"], "")):
        with pytest.raises(ManifestError) as e:
            check_shares(bad, "sites[0]")
        assert field in str(e.value)


def test_paths_must_lie_under_a_share_and_writes_need_rw() -> None:
    shares = usable_shares(check_shares(SHARES, "s"), None)
    check_file_sources([("file:///srv/oasis-share/in", "r"), ("file:///srv/oasis-share/out/x", "rw"),
                        ("file:///srv/reference/books", "r"), ("swift://c/in", "rw"), ("s3://b/k", "rw")],
                       shares, "central")
    refused = {"file:///tmp/in": "not on a share of site 'central'",
               "file:///srv/oasis-share-2/in": "not on a share",  # a sibling with the same prefix is not under it
               "file:///srv/oasis-share/../etc/passwd": "not on a share",
               "file:///srv": "not on a share"}
    for url, message in refused.items():
        with pytest.raises(ShareError) as e:
            check_file_sources([(url, "r")], shares, "central")
        assert message in str(e.value) and "/srv/oasis-share (rw)" in str(e.value)
    with pytest.raises(ShareError, match="read-only share"):
        check_file_sources([("file:///srv/reference/out", "rw")], shares, "central")
    check_file_sources([("file:///anywhere/at/all", "rw")], None, "local")  # the embedded single-host site


def test_a_clusters_sahara_shares_narrow_the_sites() -> None:
    site = check_shares(SHARES, "s")
    assert [s.path for s in usable_shares(site, [{"id": "data"}])] == ["/srv/oasis-share"]
    narrowed = usable_shares(site, [{"id": "data", "access_level": "ro"}])
    assert [(s.path, s.access_level) for s in narrowed] == [("/srv/oasis-share", "ro")]
    with pytest.raises(ShareError, match="read-only"):
        check_file_sources([("file:///srv/oasis-share/out", "rw")], narrowed, "central")
    assert usable_shares(site, [{"id": "manila-uuid-unknown"}]) == []  # names nothing this site mounts
    assert usable_shares(site, [{"id": "data", "path": "/mnt/elsewhere"}]) == []  # oasis cannot remount it


def test_job_create_answers_400_off_the_share_on_a_multi_host_site(world: World) -> None:
    main = binary(world, "main.py")
    jt = template(world, "Spark", [main["id"]])
    cid = active_cluster(world)

    def source(name: str, url: str) -> str:
        r = world.post("/v2/data-sources", {"name": name, "type": "file", "url": url})
        assert r.status_code == 202, r.text
        return r.json()["data_source"]["id"]

    inside, outside = source("in", "file:///srv/oasis-share/in"), source("tmp", "file:///tmp/in")
    out_ro = source("ro-out", "file:///srv/reference/out")
    out = source("out", "file:///srv/oasis-share/out-%JOB_EXEC_ID%")

    def run(inp: str, output: str | None = None):
        body = {"job_template_id": jt["id"], "cluster_id": cid, "input_id": inp, **({"output_id": output} if output else {})}
        return world.post("/v2/jobs", body)

    assert run(outside).status_code == 202  # the embedded local site: any local path, as before
    with world.db.session() as s:  # the site becomes a multi-host one with shares
        site = s.get(Site, world.site_id)
        site.spec = {**site.spec, "shares": check_shares(SHARES, "s")}
        s.add(Host(site_id=site.id, name="remote-1", access="ssh", address="10.0.0.5", vcpus=2, ram_mb=2048,
                   disk_gb=20, base_dir="/srv/oasis"))
    r = run(outside)
    assert r.status_code == 400 and r.json()["error_name"] == "INVALID_DATA", r.text
    assert "file:///tmp/in is not on a share of site" in r.json()["error_message"]
    r = run(inside, out_ro)
    assert r.status_code == 400 and "read-only share" in r.json()["error_message"]
    assert run(inside, out).status_code == 202
