"""The configuration file: what it sets, what it refuses (one line, exit 2), and who wins over whom."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from oasis.cli import main as cli_main
from oasis.config import Settings
from oasis.configfile import ConfigError, read_config

KEYSTONE = """[identity]
backend = keystone
[keystone_authtoken]
www_authenticate_uri = http://ks.example:5000/v3
auth_url = http://ks.example:5000
username = oasis
password = pa%ss
project_name = service
token_cache_time = 5
[database]
connection = postgresql+psycopg://oasis:dbpw@db/oasis
[object_store]
url = swift+http://u:k@swift:8080/auth/v1.0?container=c
[oslo_policy]
policy_file = ~/policy.yaml
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "oasis.conf"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_full_file_fills_the_settings(tmp_path: Path) -> None:
    values = read_config(write(tmp_path, "[DEFAULT]\nport = 9999\n" + KEYSTONE))
    assert values["identity_backend"] == "keystone"
    assert values["database_url"] == "postgresql+psycopg://oasis:dbpw@db/oasis"
    assert values["object_store"].startswith("swift+http://")
    assert values["port"] == 9999
    assert values["policy_file"] == Path("~/policy.yaml").expanduser()
    ks = values["keystone"]
    assert (ks.auth_url, ks.username, ks.password, ks.project_name) == ("http://ks.example:5000", "oasis", "pa%ss",
                                                                       "service")
    assert ks.user_domain_name == ks.project_domain_name == "Default"
    assert ks.token_cache_time == 5 and ks.www_authenticate_uri == "http://ks.example:5000/v3"
    settings = Settings(state_dir=tmp_path, **values)
    assert "pa%ss" not in repr(settings)  # the password is kept out of a settings dump


def test_cache_time_defaults_to_30_and_uri_to_auth_url(tmp_path: Path) -> None:
    text = "[identity]\nbackend = keystone\n[keystone_authtoken]\nauth_url = http://k:5000/v3\nusername = o\npassword = p\n"
    ks = read_config(write(tmp_path, text))["keystone"]
    assert ks.token_cache_time == 30 and ks.www_authenticate_uri == "http://k:5000/v3"


@pytest.mark.parametrize("text, words", [
    ("[nova]\nx = 1\n", "unknown section [nova]"),
    ("[identity]\nbakend = keystone\n", "[identity] bakend: unknown option"),
    ("[identity]\nbackend = ldap\n", "[identity] backend: must be one of builtin, keystone"),
    ("[DEFAULT]\nport = eighty\n", "[DEFAULT] port: must be a port number"),
    ("[keystone_authtoken]\nauth_url = k:5000\n", "[keystone_authtoken] auth_url: must be an http"),
    ("[keystone_authtoken]\ntoken_cache_time = -1\n", "token_cache_time: must be a number of seconds"),
    ("[identity]\nbackend = keystone\n", "[keystone_authtoken] needs auth_url, username, password"),
    ("no section here\n", "not an INI file"),
])
def test_bad_files_are_one_clear_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        read_config(write(tmp_path, text))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_bad_value_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        read_config(write(tmp_path, "[keystone_authtoken]\nauth_url = hunter2-secret\n"))
    assert "hunter2" not in str(e.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        read_config(tmp_path / "absent.conf")


def test_a_password_readable_by_everyone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chmod 600"):
        read_config(write(tmp_path, KEYSTONE, 0o644))
    # a password in the database URL counts too; a file without a secret may be readable
    with pytest.raises(ConfigError, match="readable by every user"):
        read_config(write(tmp_path, "[database]\nconnection = postgresql://u:pw@h/d\n", 0o604))
    assert read_config(write(tmp_path, "[database]\nconnection = postgresql://u@h/d\n", 0o644))
    assert read_config(write(tmp_path, KEYSTONE, 0o640))["identity_backend"] == "keystone"  # a service group


def test_the_cli_says_one_line_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[nova]\nx = 1\n")
    for command in ("up", "api", "engine"):
        r = CliRunner().invoke(cli_main.app, [command, "--state-dir", str(tmp_path), "--config", str(path)])
        assert r.exit_code == 2, r.output
        assert "unknown section [nova]" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli_main.app, ["up", "--state-dir", str(tmp_path)],
                           env={"OASIS_CONFIG": str(tmp_path / "nope.conf")})
    assert r.exit_code == 2 and "no such configuration file" in r.output


def test_command_line_over_file_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr("oasis.server.run_api", seen.append)
    path = write(tmp_path, "[DEFAULT]\nport = 9001\n[database]\nconnection = sqlite:///from-file.db\n")
    env = {"OASIS_DATABASE_URL": "sqlite:///from-env.db"}
    r = CliRunner().invoke(cli_main.app, ["api", "--state-dir", str(tmp_path), "--config", str(path)], env=env)
    assert r.exit_code == 0, r.output
    assert seen[-1].database_url == "sqlite:///from-file.db" and seen[-1].port == 9001
    r = CliRunner().invoke(cli_main.app, ["api", "--state-dir", str(tmp_path), "--config", str(path),
                                          "--database-url", "sqlite:///from-argv.db", "--port", "9002"], env=env)
    assert r.exit_code == 0, r.output
    assert seen[-1].database_url == "sqlite:///from-argv.db" and seen[-1].port == 9002
