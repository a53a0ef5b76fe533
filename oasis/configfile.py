"""The configuration file of `oasis up|api|engine --config FILE` (or $OASIS_CONFIG): INI, as every OpenStack
service has, so that what an operator would otherwise put on a command line (a database password, Keystone's
service credentials, the object store's key) lives in a file of mode 0600 instead.

    [DEFAULT]
    state_dir = /var/lib/oasis
    [identity]
    backend = keystone
    [keystone_authtoken]
    www_authenticate_uri = http://keystone:5000/v3
    auth_url = http://keystone:5000/v3
    username = oasis
    password = ...
    project_name = service
    [database]
    connection = postgresql+psycopg://oasis:...@db/oasis
    [object_store]
    url = swift+http://...
    [proxy]
    domain = oasis_proxy

`read_config` gives the `Settings` keyword arguments the file sets; a command-line option wins over them, they
win over the environment's defaults (oasis.cli.main). Anything wrong is one `ConfigError` line."""
from __future__ import annotations

import configparser
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from oasis.config import KeystoneAuth, quota_limit

BACKENDS = ("builtin", "keystone")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file, and the section and key at fault."""


def _text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("must be a port number (1-65535)")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ValueError("must be a number of seconds, 0 or more")
    return seconds


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value
    return parse


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ValueError("must name at least one role (comma-separated)")
    return names


# section -> key -> (what it parses into, the parser). [DEFAULT] is configparser's: its keys would otherwise
# appear in every section, so they are read from it alone.
SCHEMA: dict[str, dict[str, tuple[str, Callable[[str], Any]]]] = {
    "DEFAULT": {"state_dir": ("state_dir", lambda v: Path(_text(v)).expanduser()),
                "host": ("host", _text), "port": ("port", _port),
                "log_format": ("log_format", _choice(*LOG_FORMATS))},
    "identity": {"backend": ("identity_backend", _choice(*BACKENDS))},
    "keystone_authtoken": {
        "www_authenticate_uri": ("www_authenticate_uri", _url), "auth_url": ("auth_url", _url),
        "username": ("username", _text), "password": ("password", _text), "project_name": ("project_name", _text),
        "user_domain_name": ("user_domain_name", _text), "project_domain_name": ("project_domain_name", _text),
        "token_cache_time": ("token_cache_time", _seconds), "cafile": ("cafile", _text)},
    "database": {"connection": ("database_url", _text)},
    "object_store": {"url": ("object_store", _text)},
    "oslo_policy": {"policy_file": ("policy_file", lambda v: Path(_text(v)).expanduser())},
    "proxy": {"domain": ("proxy_domain", _text), "roles": ("proxy_roles", _names)},
    # every project's default limits (oasis/db/quotas.py): `instances = 20`; -1 is unlimited
    "quota": {key: (f"quota_{key}", quota_limit)
              for key in ("clusters", "instances", "vcpus", "ram_mb", "volume_gb", "running_jobs")},
}
KEYSTONE_REQUIRED = ("auth_url", "username", "password")


def _holds_secret(parser: configparser.ConfigParser) -> bool:
    """Whether the file carries a credential: a password, or a URL with one in it."""
    if parser.has_option("keystone_authtoken", "password"):
        return True
    for section, key in (("database", "connection"), ("object_store", "url")):
        if parser.has_option(section, key) and urlsplit(parser.get(section, key)).password:
            return True
    return False


def read_config(path: Path) -> dict[str, Any]:
    """The `Settings` keyword arguments the file at `path` gives (only what it sets)."""
    path = Path(path).expanduser()
    parser = configparser.ConfigParser(interpolation=None)  # a password may hold a '%'
    try:
        with path.open(encoding="utf-8") as f:
            mode = stat.S_IMODE(path.stat().st_mode)
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it: {getattr(e, 'strerror', None) or e}") from None
    except configparser.Error as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"{path}: not an INI file: {first}") from None
    # Refused rather than warned about: a warning scrolls away, the password would stay readable by every user.
    if mode & stat.S_IROTH and _holds_secret(parser):
        raise ConfigError(f"{path}: holds a password and is readable by every user (mode {mode:o}); "
                          f"make it private: chmod 600 {path}")
    defaults = set(parser.defaults())
    out: dict[str, Any] = {}
    keystone: dict[str, Any] = {}
    for section in ["DEFAULT", *parser.sections()]:
        known = SCHEMA.get(section)
        if known is None:
            raise ConfigError(f"{path}: unknown section [{section}]; known: "
                              f"{', '.join(s for s in SCHEMA if s != 'DEFAULT')}")
        items = parser.defaults() if section == "DEFAULT" else {
            k: v for k, v in parser.items(section) if k not in defaults}
        for key, raw in items.items():
            if key not in known:
                raise ConfigError(f"{path}: [{section}] {key}: unknown option; known: {', '.join(known)}")
            name, parse = known[key]
            try:
                value = parse(raw.strip())
            except ValueError as e:
                # The value itself is not echoed: it may be a password.
                raise ConfigError(f"{path}: [{section}] {key}: {e}") from None
            (keystone if section == "keystone_authtoken" else out)[name] = value
    if out.get("identity_backend") == "keystone" or keystone:
        missing = [k for k in KEYSTONE_REQUIRED if k not in keystone]
        if out.get("identity_backend") == "keystone" and missing:
            raise ConfigError(f"{path}: [keystone_authtoken] needs {', '.join(missing)} with backend = keystone")
        if not missing:
            out["keystone"] = KeystoneAuth(**keystone)
    if "proxy_domain" in out and out.get("identity_backend") != "keystone":
        raise ConfigError(f"{path}: [proxy] domain needs [identity] backend = keystone (proxy users are "
                          f"Keystone users)")
    return out
