"""`oasis cluster connect`: a cluster's client configuration (GET /v2/clusters/{id}/client-config) as files a
Dask Client or a spark-submit reads, in a directory only its user reads (0700, files 0600)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


CONNECT_CA = "oasis-ca.pem"
TOKEN_PLACEHOLDER = "<token>"


def connect_url(cfg: dict[str, Any], token: str | None = None) -> str | None:
    """The sc:// string of the cluster's Spark Connect gateway, with `token` or a placeholder for it."""
    url = (cfg.get("spark_connect") or {}).get("url")
    if not url:
        return None
    return url.replace(";x-oasis-cluster=", f";token={token or TOKEN_PLACEHOLDER};x-oasis-cluster=", 1)


def connect_instructions(cfg: dict[str, Any], directory: Path, token: str | None) -> list[str]:
    url = connect_url(cfg, token)
    if url is None:
        return []
    lines = ["", "Spark Connect (pip install 'pyspark[connect]'), through the oasis gateway:", f"  {url}"]
    if token is None:
        lines.append(f"  # {TOKEN_PLACEHOLDER}: your oasis token (`oasis cluster connect --show-token` prints "
                     "it in the string; it is never written to a file)")
    if (cfg.get("spark_connect") or {}).get("ca"):
        lines.append(f"  export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={directory}/{CONNECT_CA}   # the gateway's CA")
    lines += ["  from pyspark.sql import SparkSession",
              "  spark = SparkSession.builder.remote(URL).getOrCreate()"]
    return lines


def client_files(cfg: dict[str, Any], directory: Path) -> dict[str, bytes]:
    """The files to write (name: content) for a client configuration."""
    files: dict[str, bytes] = {}
    if cfg.get("cert"):
        files = {"ca.pem": cfg["ca"].encode(), "client.pem": cfg["cert"].encode(),
                 "client-key.pem": cfg["key"].encode()}
    if cfg.get("plugin") == "dask" and files:
        tls = {"ca-file": str(directory / "ca.pem"),
               "client": {"cert": str(directory / "client.pem"), "key": str(directory / "client-key.pem")}}
        files["dask.yaml"] = yaml.safe_dump({"distributed": {"comm": {"require-encryption": True, "tls": tls}}}
                                            ).encode()
    if (cfg.get("spark_connect") or {}).get("ca"):  # the deployment's CA (public), for the gateway's TLS
        files[CONNECT_CA] = cfg["spark_connect"]["ca"].encode()
    if cfg.get("plugin") == "spark":
        files["spark.properties"] = "".join(f"{k} {v}\n" for k, v in (cfg.get("spark_conf") or {}).items()).encode()
    return files


def write_private(directory: Path, files: dict[str, bytes]) -> None:
    """Write the files mode 0600 in `directory` (made or narrowed to 0700), never readable by others even for a
    moment: each file is created with its mode, and an existing one is narrowed before it is written."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    for name, data in files.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
        finally:
            os.close(fd)


def instructions(cfg: dict[str, Any], directory: Path, token: str | None = None) -> str:
    """What to type, once the files are written; `token` goes into the Spark Connect string where given."""
    d = directory
    if cfg.get("plugin") == "dask":
        address = cfg.get("scheduler_address", "")
        lines = [f"Scheduler: {address}",
                 f"Dashboard: {cfg.get('dashboard', '')} (with the client certificate)",
                 "", "In Python:",
                 "  from distributed import Client, Security",
                 f"  security = Security(tls_ca_file='{d}/ca.pem', tls_client_cert='{d}/client.pem',",
                 f"                      tls_client_key='{d}/client-key.pem', require_encryption=True)",
                 f"  client = Client('{address}', security=security)",
                 "", "Or let dask read the settings:",
                 f"  export DASK_CONFIG={d} DASK_SCHEDULER_ADDRESS={address}   # then Client() connects",
                 "", "The dashboard:",
                 f"  curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client-key.pem "
                 f"{cfg.get('dashboard', '')}"]
        return "\n".join(lines)
    master, ui = cfg.get("master_url", ""), cfg.get("web_ui", "")
    return "\n".join([f"Master: {master}", f"Web UI: {ui} (with the client certificate)", "",
                      "Submit (the properties file carries the cluster's secret):",
                      f"  spark-submit --master {master} --properties-file {d}/spark.properties APP",
                      "  # executors must be able to reach the driver: set spark.driver.host to an address of "
                      "this machine that the cluster's hosts reach",
                      "", "The web UI:",
                      f"  curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client-key.pem {ui}",
                      *connect_instructions(cfg, d, token)])
