"""Cluster verification on real SSH hosts (the lab; needs root): the framework is asked through SSH from the
scheduler's host, and a host of workers that stops answering turns the cluster YELLOW, naming the host."""
from __future__ import annotations

import pytest

from tests.integration import workflow as wf
from tests.integration.services import Oasis, wait_until
from tests.integration.test_verification import checks, verify
from tests.lab_fixture import kill_host, site_of

pytestmark = pytest.mark.service(lab=True, env={"OASIS_VERIFICATION_SECONDS": "0"})


def test_a_host_of_workers_away_is_yellow(service: Oasis, lab: dict) -> None:
    from oasis.lab import lab as labmod

    client = service.client
    # the workers on two hosts, so that one of them holds no scheduler
    cid = wf.create_cluster(client, "dask", "lab-verified", workers=2, flavor="1", availability_zone="central",
                            anti_affinity=["worker"])
    victim = None
    try:
        c = wf.wait_cluster(client, cid)
        green = verify(client, cid)
        assert green["status"] == "GREEN", green

        by_address = {h["addresses"][h["network"]]: h for h in site_of(lab, "central")["hosts"]}
        placed = {ng["name"]: {i["internal_ip"] for i in ng["instances"]} for ng in c["node_groups"]}
        victim = by_address[sorted(placed["worker"] - placed["master"])[0]]
        # Its sshd and every process of its namespace die (the worker there too).
        kill_host(victim["namespace"])
        # the host health check (every 10 s) finds the host away; the next verification says so
        yellow = wait_until(lambda: (v := verify(client, cid))["status"] != "GREEN"
                            and checks(v)["Hosts reachable"]["status"] != "GREEN" and v, 120,
                            "a verification to see the host away")
        assert yellow["status"] == "YELLOW", yellow
        hosts = checks(yellow)["Hosts reachable"]
        assert hosts["status"] == "YELLOW" and victim["name"] in hosts["description"], hosts
        assert checks(yellow)["Scheduler alive"]["status"] == "GREEN"
        assert wf.cluster(client, cid)["status"] == "Active"
    finally:
        if victim is not None:
            labmod.up(lab["spec"], lab["state_dir"])  # brings the sshd back
        client.delete(f"/clusters/{cid}")
        wf.wait_gone(client, cid, timeout=300)
