"""docs/data-flows.yaml is the one source of the data-flow table. This module renders docs/data-flows.md's
generated parts from it (`python -m devtools.data_flows` rewrites them, `--check` only says whether they are
current; tests/unit/test_data_flows_doc.py checks it in every run), checks that every entry has every field, and
matches one observed socket to the entries that describe it (tests/integration/test_data_flows.py).

A flow's `sockets` say how to recognise it on a machine: its server end (the listener: which process role,
on which kind of address, on a port from which source) and its client end (which role connects, from which kind
of address). A role is recognised from a process's command line (and its parent's role), an address kind and a
port source are what the test knows of an address and a port (docs/data-flows.yaml names them all)."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
YAML_PATH = ROOT / "docs" / "data-flows.yaml"
MD_PATH = ROOT / "docs" / "data-flows.md"

FLOW_FIELDS = ("id", "group", "from", "to", "port", "protocol", "direction", "authenticates", "secret",
               "secret_stored", "encrypted", "sockets", "notes")
# the columns of the rendered table, in order, with their headings
COLUMNS = (("from", "from"), ("to", "to"), ("port", "port"), ("protocol", "protocol"), ("direction", "direction"),
           ("authenticates", "authenticated by"), ("secret", "secret carried"), ("secret_stored", "secret stored"),
           ("encrypted", "encrypted"))
SERVER_FIELDS = ("process", "address", "port")
CLIENT_FIELDS = ("process", "address")
EXTERNAL = "external"  # a peer that is no process oasis started (a user's client, the test itself)
BEGIN, END = "<!-- generated from data-flows.yaml: begin {} -->", "<!-- generated from data-flows.yaml: end {} -->"
PARTS = ("flows", "roles", "addresses", "ports")


def load(path: Path = YAML_PATH) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


# --- checking the file ----------------------------------------------------------------------------------------


def problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong with the file: a flow without every field, a socket end that names a role, an address kind
    or a port source the file does not define, an id twice."""
    out: list[str] = []
    roles, kinds = set(doc.get("roles") or {}) | {EXTERNAL}, set(doc.get("addresses") or {})
    sources = set(doc.get("ports") or {})
    seen: set[str] = set()
    for i, flow in enumerate(doc.get("flows") or []):
        where = f"flows[{i}] ({flow.get('id', '?')})"
        out += [f"{where}: no '{f}'" for f in FLOW_FIELDS if f not in flow]
        out += [f"{where}: '{f}' is empty" for f in FLOW_FIELDS
                if f in flow and f not in ("sockets", "notes") and not str(flow[f]).strip()]
        if flow.get("id") in seen:
            out.append(f"{where}: id used twice")
        seen.add(flow.get("id"))
        sockets = flow.get("sockets")
        if not isinstance(sockets, list):
            out.append(f"{where}: 'sockets' must be a list")
            continue
        if not sockets and not str(flow.get("notes") or "").strip():
            out.append(f"{where}: no sockets, so 'notes' must say why (e.g. in-process, a file, not started here)")
        for j, s in enumerate(sockets):
            for end, fields in (("server", SERVER_FIELDS), ("client", CLIENT_FIELDS)):
                e = s.get(end) if isinstance(s, dict) else None
                if not isinstance(e, dict):
                    out.append(f"{where}.sockets[{j}]: no '{end}'")
                    continue
                out += [f"{where}.sockets[{j}].{end}: no '{f}'" for f in fields if not e.get(f)]
                out += [f"{where}.sockets[{j}].{end}: unknown role {r!r}" for r in e.get("process") or []
                        if r not in roles]
                out += [f"{where}.sockets[{j}].{end}: unknown address kind {k!r}" for k in e.get("address") or []
                        if k not in kinds]
                out += [f"{where}.sockets[{j}].{end}: unknown port source {p!r}" for p in e.get("port") or []
                        if _source_name(p) not in sources]
    for name, role in (doc.get("roles") or {}).items():
        if not isinstance(role, dict) or "cmdline" not in role or "what" not in role:
            out.append(f"roles.{name}: needs 'cmdline' (a regular expression) and 'what'")
        elif role.get("parent") and role["parent"] not in roles:
            out.append(f"roles.{name}: unknown parent role {role['parent']!r}")
    return out


def _source_name(port: str) -> str:
    """`alloc:scheduler` is of source `alloc`; `fixed:22` of `fixed`."""
    return str(port).split(":", 1)[0]


# --- matching a socket ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Socket:
    """One socket of a process, as the test saw it. `side`: listen (a listener), server (a connection it
    accepted) or client (a connection it opened). Kinds and sources are what the test knows of each address and
    port; `peer_role` is the role of the process at the other end where that process is one the test lists."""

    pid: int
    role: str
    netns: str
    transport: str
    state: str
    side: str
    local: str
    remote: str
    local_kinds: frozenset[str]
    remote_kinds: frozenset[str]
    local_sources: frozenset[str]
    remote_sources: frozenset[str]
    peer_role: str | None = None

    def describe(self) -> str:
        peer = f", peer {self.peer_role}" if self.peer_role else ""
        return (f"{self.role} (pid {self.pid}, netns {self.netns}) {self.transport} {self.state} {self.side}: "
                f"local {self.local} [{', '.join(sorted(self.local_kinds | self.local_sources))}] remote "
                f"{self.remote} [{', '.join(sorted(self.remote_kinds | self.remote_sources))}]{peer}")


def _end_ok(end: dict[str, Any], role: str | None, kinds: frozenset[str]) -> bool:
    roles = set(end["process"])
    return (role in roles if role is not None else EXTERNAL in roles) and bool(kinds & set(end["address"]))


def matches(flow: dict[str, Any], s: Socket) -> bool:
    for spec in flow["sockets"]:
        server, client = spec["server"], spec["client"]
        if spec.get("transport", "tcp") != s.transport:
            continue
        if s.side == "listen":
            if _end_ok(server, s.role, s.local_kinds) and s.local_sources & set(server["port"]):
                return True
        elif s.side == "server":
            if (_end_ok(server, s.role, s.local_kinds) and s.local_sources & set(server["port"])
                    and _end_ok(client, s.peer_role, s.remote_kinds)):
                return True
        elif (_end_ok(client, s.role, s.local_kinds) and _end_ok(server, s.peer_role, s.remote_kinds)
              and s.remote_sources & set(server["port"])):
            return True
    return False


def undescribed(flows: list[dict[str, Any]], sockets: list[Socket]) -> list[Socket]:
    return [s for s in sockets if not any(matches(f, s) for f in flows)]


def role_of(roles: dict[str, dict[str, Any]], cmdline: str, parent_role: str | None) -> str:
    """The first role (in the file's order) whose pattern the command line matches and whose parent, where it
    names one, is the process's parent's role; `unknown` otherwise."""
    for name, role in roles.items():
        if re.search(role["cmdline"], cmdline) and (not role.get("parent") or role["parent"] == parent_role):
            return name
    return "unknown"


# --- rendering ------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def _flows_table(doc: dict[str, Any]) -> str:
    lines = []
    for group in dict.fromkeys(f["group"] for f in doc["flows"]):
        lines += [f"### {group}", "", "| id | " + " | ".join(h for _, h in COLUMNS) + " |",
                  "|" + "---|" * (len(COLUMNS) + 1)]
        for f in (f for f in doc["flows"] if f["group"] == group):
            lines.append(f"| `{f['id']}` | " + " | ".join(_cell(f[k]) for k, _ in COLUMNS) + " |")
        notes = [f for f in doc["flows"] if f["group"] == group and str(f.get("notes") or "").strip()]
        if notes:
            lines.append("")
            lines += [f"- `{f['id']}`: {_cell(f['notes'])}" for f in notes]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _roles_table(doc: dict[str, Any]) -> str:
    lines = ["| role | what | command line (regular expression) | parent role |", "|---|---|---|---|"]
    for name, r in doc["roles"].items():
        lines.append(f"| `{name}` | {_cell(r['what'])} | `{_cell(r['cmdline'])}` | {r.get('parent') or ''} |")
    return "\n".join(lines) + "\n"


def _plain_table(doc: dict[str, Any], key: str, heading: str) -> str:
    lines = [f"| {heading} | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in doc[key].items()]
    return "\n".join(lines) + "\n"


def parts(doc: dict[str, Any]) -> dict[str, str]:
    return {"flows": _flows_table(doc), "roles": _roles_table(doc),
            "addresses": _plain_table(doc, "addresses", "address kind"),
            "ports": _plain_table(doc, "ports", "port source")}


def render(markdown: str, doc: dict[str, Any]) -> str:
    """The page with every generated part replaced by the rendering of `doc`."""
    for name, text in parts(doc).items():
        begin, end = BEGIN.format(name), END.format(name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(markdown):
            raise ValueError(f"{MD_PATH.name}: no '{begin}' ... '{end}' markers")
        markdown = pattern.sub(lambda _m: f"{begin}\n{text}{end}", markdown)
    return markdown


def main(argv: list[str]) -> int:
    doc = load()
    found = problems(doc)
    if found:
        print("\n".join(found), file=sys.stderr)
        return 1
    current = MD_PATH.read_text()
    wanted = render(current, doc)
    if "--check" in argv:
        if wanted != current:
            print(f"{MD_PATH} is not the rendering of {YAML_PATH}: run python -m devtools.data_flows",
                  file=sys.stderr)
            return 1
        return 0
    MD_PATH.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
