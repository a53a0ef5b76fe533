"""The hosts manifest the controller registers: sites, how to reach them, hosts and pinned keys.

Written by `oasis lab up` to <state dir>/manifest.yaml (mode 0600: it names the controller's
private key file). Format version 1; keys are documented in build_manifest.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import yaml

from oasis.lab.model import Host, Lab, Leaf
from oasis.lab.paths import SSH_PORT, Paths

MANIFEST_VERSION = 1


def host_public_key(paths: Paths, host: str) -> str:
    """The host's public key line without its comment ("ssh-ed25519 AAAA...")."""
    text = paths.host_key(host).with_suffix(".pub").read_text().split()
    return f"{text[0]} {text[1]}"


def _gateway_address(leaf: Leaf) -> str:
    # the address the controller uses for the gateway: its uplink where root routes only that,
    # else its leaf address (routed for direct leaves, behind the proxy command otherwise)
    return leaf.gateway.uplink_address if leaf.access == "gateway" else leaf.gateway.address


def share_dir(paths: Paths, site: str) -> Path:
    """A site's share: the hosts are namespaces on one filesystem, so a directory is what every host mounts."""
    return paths.root / "shares" / site


def _host_entry(paths: Paths, leaf: Leaf, host: Host) -> dict[str, Any]:
    addresses = {leaf.name: host.address}
    if host.uplink_address:
        addresses["transit"] = host.uplink_address
    return {
        "name": host.name,
        "network": leaf.name,
        "addresses": addresses,
        "floating_address": host.floating,
        "ssh_user": "root",
        "ssh_port": SSH_PORT,
        "host_key": host_public_key(paths, host.name),
        "base_dir": str(paths.base_dir(host.name)),
        "authorized_keys": str(paths.sshd_dir(host.name) / "authorized_keys"),
        "capacity": {"vcpus": host.capacity.vcpus, "ram_mb": host.capacity.ram_mb, "disk_gb": host.capacity.disk_gb},
        # block storage: volumes as sparse image files on loop devices (this kernel has no device-mapper for
        # LVM), up to the host's disk size in all
        "volumes": {"backend": "loop", "dir": str(paths.volumes_dir(host.name)), "size_gb": host.capacity.disk_gb},
        "namespace": host.namespace,
    }


def _network_entry(paths: Paths, lab: Lab, leaf: Leaf) -> dict[str, Any]:
    gw = leaf.gateway
    joined = sorted({b if a == leaf.name else a for a, b in lab.joins if leaf.name in (a, b)})
    return {
        "name": leaf.name,
        "cidr": str(leaf.cidr),
        "access": leaf.access,
        "proxy_command": leaf.proxy_command,
        "floating_range": str(leaf.floating_range) if leaf.floating_range else None,
        "gateway": {
            "name": gw.name,
            "address": _gateway_address(leaf),
            "addresses": {leaf.name: gw.address, "transit": gw.uplink_address},
            "ssh_user": "root",
            "ssh_port": SSH_PORT,
            "host_key": host_public_key(paths, gw.name),
            "base_dir": str(paths.base_dir(gw.name)),
            # a standalone deploy authorizes the control plane's key here too (sites reached through the gateway)
            "authorized_keys": str(paths.sshd_dir(gw.name) / "authorized_keys"),
            "namespace": gw.namespace,
        },
        "joined_with": joined,
    }


def build_manifest(lab: Lab, paths: Paths) -> dict[str, Any]:
    """The manifest as a plain dict.

    version, lab, generated_at, controller{address, ssh_user, private_key, public_key,
    known_hosts}, sites[]{name, access, proxy_command, gateway{...}, floating_range,
    management_network, networks[]{name, cidr, access, proxy_command, floating_range,
    gateway{name, address, addresses, ssh_user, ssh_port, host_key, base_dir, authorized_keys,
    namespace},
    joined_with[]}, hosts[]{name, network, addresses{network: address}, floating_address,
    ssh_user, ssh_port, host_key, base_dir, capacity{vcpus, ram_mb, disk_gb}, volumes{backend, dir,
    size_gb}, namespace},
    shares[]{id, path, access_level}}.

    A site's access/proxy_command/gateway/floating_range are those of its management network
    (its first). Access modes: direct (ssh to the fixed address), gateway (ssh through the
    gateway, or straight to floating_address where one is set), proxy_command (format the
    template with {host} {port} and use it as the connection's transport).
    """
    sites = []
    for site in lab.sites:
        networks = [_network_entry(paths, lab, leaf) for leaf in site.leaves]
        mgmt = networks[0]
        sites.append(
            {
                "name": site.name,
                "access": mgmt["access"],
                "proxy_command": mgmt["proxy_command"],
                "gateway": copy.deepcopy(mgmt["gateway"]),  # a copy: no YAML anchors/aliases
                "floating_range": mgmt["floating_range"],
                "management_network": mgmt["name"],
                "networks": networks,
                "hosts": [_host_entry(paths, leaf, h) for leaf in site.leaves for h in leaf.hosts],
                # where file:// data sources of the site's jobs may lie (see oasis.edp.shares)
                "shares": [{"id": f"{site.name}-share", "path": str(share_dir(paths, site.name)),
                            "access_level": "rw"}],
            }
        )
    client_pub = paths.client_key.with_suffix(".pub").read_text().split()
    return {
        "version": MANIFEST_VERSION,
        "lab": lab.name,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "controller": {
            "address": lab.controller_address,
            "ssh_user": "root",
            "private_key": str(paths.client_key),
            "public_key": f"{client_pub[0]} {client_pub[1]}",
            "known_hosts": str(paths.known_hosts),
        },
        "sites": sites,
    }


def write_manifest(lab: Lab, paths: Paths) -> Path:
    data = build_manifest(lab, paths)
    for site in lab.sites:
        share = share_dir(paths, site.name)
        share.mkdir(parents=True, exist_ok=True)
        # A scratch filesystem every project's Unix user writes to, as /tmp is: sticky, so none removes another's.
        share.chmod(0o1777)
    old = paths.manifest.read_text() if paths.manifest.exists() else None
    text = yaml.safe_dump(data, sort_keys=False)
    # keep the file untouched when only the timestamp would change, so `up` twice changes nothing
    if old is not None:
        prev = yaml.safe_load(old)
        if isinstance(prev, dict):
            prev["generated_at"] = data["generated_at"]
            if prev == data:
                return paths.manifest
    tmp = paths.manifest.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(paths.manifest)
    return paths.manifest


def write_known_hosts(lab: Lab, paths: Paths) -> Path:
    """known_hosts for OpenSSH/asyncssh: every address a host answers on, floating ones too."""
    lines = []
    for leaf in lab.leaves:
        for host in (leaf.gateway, *leaf.hosts):
            names = [*host.addresses] + ([host.floating] if host.floating else [])
            lines.append(f"{','.join(names)} {host_public_key(paths, host.name)}")
    paths.known_hosts.write_text("\n".join(lines) + "\n")
    return paths.known_hosts


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())
