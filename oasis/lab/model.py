"""The lab file: what sites, leaves and hosts a lab has, and the address plan derived from it.

Topology (why it looks like this):

    root ns (controller) --olspine/olroot-- oasis-spine (router between sites)
                                               |  one /30 uplink per leaf (olsN <-> olup)
                                            oasis-<leaf gateway> (the leaf's router, bridge olbr)
                                               |  bridge ports olhN <-> ol0
                                            oasis-<host> (one per host, own sshd and hostname)

Every leaf has its own gateway namespace that routes for it, the way a site's edge router would.
The spine only connects gateways; which leaves may talk to which is an nft filter in the spine
("joins"), and what the controller may reach is decided by the routes the root namespace gets:

* ``direct``: root routes the leaf via the spine, so hosts are reached by their fixed address.
* ``gateway``: root routes only the gateway's uplink address and the leaf's floating range; hosts
  are reached through the gateway (SSH jump) or by floating addresses DNAT-ed on the gateway.
* ``proxy_command``: root routes nothing of the leaf; hosts are reached only by running a command
  inside the gateway namespace (``ip netns exec <gw ns> nc {host} {port}``).

The root namespace always carries ``unreachable <range>`` first, so any lab address without a more
specific route is refused locally instead of following the default route off the machine.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NS_PREFIX = "oasis-"
LINK_PREFIX = "ol"
NFT_TABLE = "oasis_lab"
# Links the lab makes. Only ROOT_LINK lives in the root namespace; the others live inside lab
# namespaces and disappear with them.
ROOT_LINK = "olspine"  # root side of the controller <-> spine veth
SPINE_ROOT_LINK = "olroot"  # spine side of it
BRIDGE = "olbr"  # the leaf bridge, inside the leaf's gateway namespace
UPLINK = "olup"  # gateway side of the gateway <-> spine veth
HOST_LINK = "ol0"  # a host's only interface
SPINE_NS = NS_PREFIX + "spine"

ACCESS_MODES = ("direct", "gateway", "proxy_command")
FIRST_HOST_OCTET = 11  # hosts get .11, .12, ... ; the gateway is .1
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

DEFAULT_LAB_YAML = """\
# The default oasis lab: three sites on one machine, one per way of reaching instances.
name: default
range: 10.213.0.0/16          # every lab address; root gets `unreachable` for all of it first
controller_link: 10.213.255.0/30   # root .1 <-> spine .2
transit: 10.213.254.0/24      # carved into one /30 per leaf: spine .4k+1 <-> gateway .4k+2
host_capacity: {vcpus: 2, ram_mb: 4096, disk_gb: 20}
sites:
  - name: central
    leaves:
      - name: central-net
        cidr: 10.213.1.0/24
        access: direct        # the controller routes this leaf
        gateway: central-gw
        hosts: 3
  - name: edge-1
    leaves:
      - name: edge-1-net
        cidr: 10.213.2.0/24
        access: gateway       # no route to the leaf; through the gateway or floating addresses
        gateway: edge-1-gw
        floating_range: 10.213.102.0/24
        hosts: 3
  - name: edge-2
    leaves:
      - name: edge-2-net
        cidr: 10.213.3.0/24
        access: proxy_command # nothing routed; only `ip netns exec <gw> nc {host} {port}`
        gateway: edge-2-gw
        hosts: 2
# Leaves (or whole sites) whose hosts may reach each other through the spine. central and edge-1
# are joined so that, e.g., a Spark driver on a central host can reach executors on edge-1.
joins:
  - [central, edge-1]
"""


class LabFileError(ValueError):
    """The lab file is wrong; the message names the field."""


@dataclass(frozen=True)
class Capacity:
    vcpus: int = 2
    ram_mb: int = 4096
    disk_gb: int = 20


@dataclass(frozen=True)
class Host:
    name: str
    site: str
    leaf: str
    address: str  # fixed address on the leaf
    floating: str | None
    capacity: Capacity
    is_gateway: bool = False
    uplink_address: str | None = None  # gateways only: their address on the spine transit

    @property
    def namespace(self) -> str:
        return NS_PREFIX + self.name

    @property
    def addresses(self) -> list[str]:
        return [self.address] + ([self.uplink_address] if self.uplink_address else [])


@dataclass(frozen=True)
class Leaf:
    name: str
    site: str
    index: int  # position across the whole lab; picks the uplink /30 and spine port name
    cidr: ipaddress.IPv4Network
    access: str
    gateway: Host
    hosts: tuple[Host, ...]
    floating_range: ipaddress.IPv4Network | None
    uplink: ipaddress.IPv4Network  # /30 between spine and gateway
    proxy_command: str | None

    @property
    def spine_address(self) -> str:
        return str(self.uplink.network_address + 1)

    @property
    def spine_link(self) -> str:
        return f"{LINK_PREFIX}s{self.index}"

    @property
    def prefix_len(self) -> int:
        return self.cidr.prefixlen


@dataclass(frozen=True)
class Site:
    name: str
    leaves: tuple[Leaf, ...]


@dataclass(frozen=True)
class Lab:
    name: str
    range: ipaddress.IPv4Network
    controller_link: ipaddress.IPv4Network
    transit: ipaddress.IPv4Network
    sites: tuple[Site, ...]
    joins: tuple[tuple[str, str], ...]  # pairs of leaf names
    host_capacity: Capacity = field(default_factory=Capacity)

    @property
    def controller_address(self) -> str:
        return str(self.controller_link.network_address + 1)

    @property
    def spine_controller_address(self) -> str:
        return str(self.controller_link.network_address + 2)

    @property
    def leaves(self) -> list[Leaf]:
        return [leaf for site in self.sites for leaf in site.leaves]

    @property
    def hosts(self) -> list[Host]:
        """Every host, gateways included."""
        return [h for leaf in self.leaves for h in (leaf.gateway, *leaf.hosts)]

    @property
    def namespaces(self) -> list[str]:
        return [SPINE_NS] + [h.namespace for h in self.hosts]

    def controller_routes(self) -> list[str]:
        """Prefixes the root namespace routes via the spine (everything else stays unreachable)."""
        routes: list[str] = []
        for leaf in self.leaves:
            if leaf.access == "direct":
                routes.append(str(leaf.cidr))
            elif leaf.access == "gateway":
                routes.append(f"{leaf.gateway.uplink_address}/32")
            if leaf.floating_range is not None and leaf.access != "proxy_command":
                routes.append(str(leaf.floating_range))
        return routes


# --- loading -------------------------------------------------------------------------------


def _net(value: Any, where: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise LabFileError(f"{where}: {value!r} is not an IPv4 network ({exc})") from None


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise LabFileError(
            f"{where}: {value!r} must be lowercase letters, digits and '-', starting with a letter, at most 31 chars"
        )
    return value


def _mapping(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LabFileError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise LabFileError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    return value


def _capacity(value: Any, where: str, default: Capacity) -> Capacity:
    if value is None:
        return default
    data = _mapping(value, where, {"vcpus", "ram_mb", "disk_gb"})
    out = {}
    for key in ("vcpus", "ram_mb", "disk_gb"):
        v = data.get(key, getattr(default, key))
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise LabFileError(f"{where}.{key}: must be a positive integer, got {v!r}")
        out[key] = v
    return Capacity(**out)


def parse_lab(data: Any, source: str = "lab file") -> Lab:
    """Validate a parsed lab file and derive every address; raise LabFileError naming the field."""
    top = _mapping(
        data, source, {"name", "range", "controller_link", "transit", "host_capacity", "sites", "joins"}
    )
    lab_name = _name(top.get("name", "lab"), "name")
    lab_range = _net(top.get("range", "10.213.0.0/16"), "range")
    controller_link = _net(top.get("controller_link", "10.213.255.0/30"), "controller_link")
    transit = _net(top.get("transit", "10.213.254.0/24"), "transit")
    capacity = _capacity(top.get("host_capacity"), "host_capacity", Capacity())
    if controller_link.prefixlen != 30:
        raise LabFileError(f"controller_link: must be a /30, got {controller_link}")

    used: list[tuple[str, ipaddress.IPv4Network]] = []

    def claim(net: ipaddress.IPv4Network, where: str) -> None:
        if not net.subnet_of(lab_range):
            raise LabFileError(f"{where}: {net} is outside the lab range {lab_range}")
        for other_where, other in used:
            if net.overlaps(other):
                raise LabFileError(f"{where}: {net} overlaps {other_where} ({other})")
        used.append((where, net))

    claim(controller_link, "controller_link")
    claim(transit, "transit")
    uplinks = list(transit.subnets(new_prefix=30))

    raw_sites = top.get("sites")
    if not isinstance(raw_sites, list) or not raw_sites:
        raise LabFileError("sites: must be a non-empty list")
    names: set[str] = set()

    def unique(name: str, where: str) -> str:
        if name in names:
            raise LabFileError(f"{where}: name {name!r} is used twice")
        names.add(name)
        return name

    sites: list[Site] = []
    leaf_index = 0
    for si, raw_site in enumerate(raw_sites):
        sw = f"sites[{si}]"
        s = _mapping(raw_site, sw, {"name", "leaves", "host_capacity"})
        site_name = unique(_name(s.get("name"), f"{sw}.name"), f"{sw}.name")
        site_capacity = _capacity(s.get("host_capacity"), f"{sw}.host_capacity", capacity)
        raw_leaves = s.get("leaves")
        if not isinstance(raw_leaves, list) or not raw_leaves:
            raise LabFileError(f"{sw}.leaves: must be a non-empty list")
        leaves: list[Leaf] = []
        host_counter = 0
        for li, raw_leaf in enumerate(raw_leaves):
            lw = f"{sw}.leaves[{li}]"
            lf = _mapping(
                raw_leaf,
                lw,
                {"name", "cidr", "access", "gateway", "hosts", "floating_range", "proxy_command", "host_capacity"},
            )
            leaf_name = unique(_name(lf.get("name", f"{site_name}-net{li}"), f"{lw}.name"), f"{lw}.name")
            cidr = _net(lf.get("cidr"), f"{lw}.cidr")
            if cidr.prefixlen > 24 or cidr.prefixlen < 16:
                raise LabFileError(f"{lw}.cidr: use a /16../24 network, got {cidr}")
            claim(cidr, f"{lw}.cidr")
            access = lf.get("access", "direct")
            if access not in ACCESS_MODES:
                raise LabFileError(f"{lw}.access: {access!r} is not one of {', '.join(ACCESS_MODES)}")
            gw_name = unique(_name(lf.get("gateway", f"{leaf_name}-gw"), f"{lw}.gateway"), f"{lw}.gateway")
            leaf_capacity = _capacity(lf.get("host_capacity"), f"{lw}.host_capacity", site_capacity)
            floating = None
            if lf.get("floating_range") is not None:
                if access == "proxy_command":
                    raise LabFileError(f"{lw}.floating_range: a proxy_command leaf has no routed floating range")
                floating = _net(lf["floating_range"], f"{lw}.floating_range")
                claim(floating, f"{lw}.floating_range")
            raw_hosts = lf.get("hosts", 1)
            host_names: list[str]
            if isinstance(raw_hosts, int) and not isinstance(raw_hosts, bool):
                if raw_hosts < 0:
                    raise LabFileError(f"{lw}.hosts: must be >= 0")
                host_names = [f"{site_name}-{host_counter + i + 1}" for i in range(raw_hosts)]
            elif isinstance(raw_hosts, list):
                host_names = [_name(h, f"{lw}.hosts[{i}]") for i, h in enumerate(raw_hosts)]
            else:
                raise LabFileError(f"{lw}.hosts: a count or a list of host names, got {raw_hosts!r}")
            host_counter += len(host_names)
            if FIRST_HOST_OCTET + len(host_names) >= cidr.num_addresses - 1:
                raise LabFileError(f"{lw}.hosts: {len(host_names)} hosts do not fit in {cidr}")
            if leaf_index >= len(uplinks):
                raise LabFileError(f"transit: {transit} has room for only {len(uplinks)} leaves")
            uplink = uplinks[leaf_index]
            proxy_command = lf.get("proxy_command")
            if access == "proxy_command" and proxy_command is None:
                proxy_command = f"ip netns exec {NS_PREFIX}{gw_name} nc {{host}} {{port}}"
            elif proxy_command is not None and access != "proxy_command":
                raise LabFileError(f"{lw}.proxy_command: only for access: proxy_command")
            if proxy_command is not None and ("{host}" not in proxy_command or "{port}" not in proxy_command):
                raise LabFileError(f"{lw}.proxy_command: must contain {{host}} and {{port}}")
            gateway = Host(
                name=gw_name,
                site=site_name,
                leaf=leaf_name,
                address=str(cidr.network_address + 1),
                floating=None,
                capacity=leaf_capacity,
                is_gateway=True,
                uplink_address=str(uplink.network_address + 2),
            )
            hosts = []
            for hi, hname in enumerate(host_names):
                octet = FIRST_HOST_OCTET + hi
                fip = None
                if floating is not None:
                    if octet >= floating.num_addresses - 1:
                        raise LabFileError(f"{lw}.floating_range: {floating} is too small for {len(host_names)} hosts")
                    fip = str(floating.network_address + octet)
                hosts.append(
                    Host(
                        name=unique(hname, f"{lw}.hosts[{hi}]"),
                        site=site_name,
                        leaf=leaf_name,
                        address=str(cidr.network_address + octet),
                        floating=fip,
                        capacity=leaf_capacity,
                    )
                )
            leaves.append(
                Leaf(
                    name=leaf_name,
                    site=site_name,
                    index=leaf_index,
                    cidr=cidr,
                    access=access,
                    gateway=gateway,
                    hosts=tuple(hosts),
                    floating_range=floating,
                    uplink=uplink,
                    proxy_command=proxy_command,
                )
            )
            leaf_index += 1
        sites.append(Site(name=site_name, leaves=tuple(leaves)))

    # joins name leaves or whole sites; a site stands for all of its leaves.
    by_site = {s.name: [leaf.name for leaf in s.leaves] for s in sites}
    leaf_names = {leaf.name for s in sites for leaf in s.leaves}
    joins: list[tuple[str, str]] = []
    raw_joins = top.get("joins") or []
    if not isinstance(raw_joins, list):
        raise LabFileError("joins: must be a list of [a, b] pairs")
    for ji, pair in enumerate(raw_joins):
        jw = f"joins[{ji}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise LabFileError(f"{jw}: must be a pair [a, b] of site or leaf names")
        sides = []
        for side in pair:
            if side in by_site:
                sides.append(by_site[side])
            elif side in leaf_names:
                sides.append([side])
            else:
                raise LabFileError(f"{jw}: {side!r} is neither a site nor a leaf")
        for a in sides[0]:
            for b in sides[1]:
                if a != b and (a, b) not in joins and (b, a) not in joins:
                    joins.append((a, b))

    return Lab(
        name=lab_name,
        range=lab_range,
        controller_link=controller_link,
        transit=transit,
        sites=tuple(sites),
        joins=tuple(joins),
        host_capacity=capacity,
    )


def load_lab(path: str | Path | None = None) -> Lab:
    """Load a lab file, or the default lab when path is None."""
    if path is None:
        return parse_lab(yaml.safe_load(DEFAULT_LAB_YAML), "default lab")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise LabFileError(f"cannot read lab file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabFileError(f"{p}: not valid YAML ({exc})") from None
    return parse_lab(data, str(p))
