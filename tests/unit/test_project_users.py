"""Which Unix user a project's instances run as, and which hosts say they cannot do that (single-user)."""
from __future__ import annotations

import re

from oasis.api.sites import single_user
from oasis.db.models import Host
from oasis.remote.hosts import project_user


def test_a_project_user_name_is_a_short_system_name_of_its_project() -> None:
    assert project_user("5f051ad8-7606-423d-9fc2-6de0dc4f423b") == "oasis-5f051ad87606"
    assert project_user("5F051AD87606423D9FC26DE0DC4F423B") == "oasis-5f051ad87606"  # Keystone's hex ids
    odd = project_user("admin project")  # not hex: its hash
    assert re.fullmatch(r"oasis-[0-9a-f]{12}", odd) and odd != project_user("admin project 2")
    assert len(project_user("x" * 64)) <= 32


def test_single_user_hosts_are_those_whose_agent_cannot_switch_users() -> None:
    assert single_user(Host(access="ssh", spec={"ssh_user": "deploy"}))
    assert not single_user(Host(access="ssh", spec={"ssh_user": "root"}))
    assert not single_user(Host(access="ssh", spec={}))  # root by default
    assert single_user(Host(access="local", spec={"single_user": True}))
    assert not single_user(Host(access="local", spec={"single_user": False}))


def test_the_local_host_as_root_has_its_base_outside_the_state_dir(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from oasis import bootstrap
    from oasis.config import Settings

    monkeypatch.setattr(bootstrap, "LOCAL_INSTANCES", tmp_path / "agent" / "local")
    settings = Settings(state_dir=tmp_path / "state")
    for root in (True, False):
        monkeypatch.setattr(bootstrap, "local_single_user", lambda root=root: not root)
        host = Host(access="local", spec={})
        base = bootstrap.local_base_dir(settings)
        if root:  # reachable by project users, linked from where it used to be
            assert base.parent == tmp_path / "agent" / "local" and base.stat().st_mode & 0o777 == 0o711
            assert (settings.hosts_dir / "localhost").resolve() == base
        else:
            assert base == settings.hosts_dir / "localhost"
        host.spec = {"single_user": bootstrap.local_single_user()}
        assert single_user(host) is (not root)
