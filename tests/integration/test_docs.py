"""Every command in the docs runs: the fenced blocks marked `console` of the README and of every page of docs/
are executed against a live `oasis up` (the module's `service`), page by page, in order, and each command must exit
0 and print the output lines the block shows after it (each one somewhere in its output, in that order).

Which fences run: `console` only (RUN_FENCES). A `console` block is a terminal session: lines starting with `$ `
are commands (a trailing backslash or a heredoc, `<<'EOF'` … `EOF`, continues one), the other lines are what the
command prints (a `...` line is left unchecked). The blocks of one page share one shell, so a `cd` or an `export`
holds for the rest of the page. What must not run here (`oasis up` itself, a remote site, root's lab, a Spark job:
too slow) goes in another fence: `shell`, `text`, `yaml`, `python`, or none.

Each page gets a scratch directory of its own (world-readable, since jobs read its file:// data as their project's
user) as its working directory and $HOME, `oasis` on PATH running this checkout, and the service's state dir in
OASIS_STATE_DIR (so `oasis` finds its clouds.yaml); nothing else of the test's environment."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from tests.integration.services import Oasis

pytestmark = pytest.mark.service(clean_log=True)  # the docs' commands leave no traceback and no secret in its log

ROOT = Path(__file__).resolve().parents[2]
RUN_FENCES = ("console",)
PAGE_TIMEOUT = 900  # seconds for a whole page; a Dask cluster and a job take seconds, not minutes
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


@dataclass
class Command:
    page: str
    line: int  # 1-based, in the page
    text: str  # what the shell runs (continuation lines and heredoc bodies included)
    expected: list[str] = field(default_factory=list)


def pages() -> list[Path]:
    """The README, then the pages in the order of mkdocs.yml's nav, then any page the nav does not name."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text()).get("nav") or []
    named: list[str] = []

    def walk(items: list) -> None:
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                walk(value)
            elif isinstance(value, str):
                named.append(value)

    walk(nav)
    docs = ROOT / "docs"
    ordered = [docs / n for n in named if (docs / n).is_file()]
    rest = sorted(p for p in docs.glob("*.md") if p not in ordered)
    return [ROOT / "README.md", *ordered, *rest]


def commands(text: str, page: str) -> list[Command]:
    """The commands of a page's `console` blocks, with the output lines each block shows after them."""
    found: list[Command] = []
    for token in MarkdownIt().parse(text):
        if token.type != "fence" or token.info.strip().split(" ")[0] not in RUN_FENCES:
            continue
        start = token.map[0] + 2  # the fence line is map[0] (0-based); its first content line is one below
        lines = token.content.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                cmd, first = [line[2:]], i
                while cmd[-1].endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd.append(lines[i])
                heredoc = HEREDOC.search(line)
                if heredoc:
                    end = heredoc.group(2)
                    while i + 1 < len(lines) and lines[i].strip() != end:
                        i += 1
                        cmd.append(lines[i])
                    assert lines[i].strip() == end, f"{page}:{start + first}: heredoc without its {end} line"
                found.append(Command(page, start + first, "\n".join(cmd)))
            elif line.strip() and line.strip() != "...":
                assert found and found[-1].line >= start, \
                    f"{page}:{start + i}: a console block must start with a `$ ` command"
                found[-1].expected.append(line.strip())
            i += 1
    return found


def script(cmds: list[Command], out: Path) -> str:
    """One shell for the page: each command in a group (so that `cd` and `export` stay), its output and exit code
    kept apart; the first failure ends the page."""
    parts = ["set -o pipefail", 'cd "$HOME"']
    for n, c in enumerate(cmds):
        parts.append(f"{{\n{c.text}\n}} > {out}/{n}.out 2>&1 < /dev/null\n"
                     f"echo $? > {out}/{n}.rc\n"
                     f"[ \"$(cat {out}/{n}.rc)\" = 0 ] || exit 1")
    return "\n".join(parts) + "\n"


def environment(service: Oasis, scratch: Path) -> dict[str, str]:
    bin_dir = scratch / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "oasis"  # this checkout's CLI, whatever `oasis` the venv has installed
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m oasis.cli.main "$@"\n')
    shim.chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch),
        "PYTHONPATH": str(ROOT),
        "OASIS_STATE_DIR": str(service.state_dir),
        "LANG": "C.UTF-8",
        "COLUMNS": "160",  # rich's tables: wide enough that a short expected line is not wrapped
        "TMPDIR": tempfile.gettempdir(),
    }


def failure(cmd: Command, output: str, why: str, service: Oasis) -> str:
    """What a reader of the failure needs: where, what ran, what it printed, and what the service said last."""
    logs = sorted(service.state_dir.glob("up-*.log"))
    tail = "\n".join(logs[-1].read_text(errors="replace").splitlines()[-40:]) if logs else ""
    return f"{cmd.page}:{cmd.line}: {why}\n$ {cmd.text}\n--- output ---\n{output}\n--- the service's log ---\n{tail}"


PAGES = [p for p in pages() if commands(p.read_text(), p.name)]


def test_the_parser_finds_commands_output_and_heredocs() -> None:
    page = ("x\n\n```console\n$ echo a \\\n  b\na b\n$ cat > f <<'EOF'\n$ not a command\nEOF\n```\n\n"
            "```shell\noasis up\n```\n\n```\n$ nor this\n```\n")
    found = commands(page, "p.md")
    assert [(c.line, c.text, c.expected) for c in found] == [
        (4, "echo a \\\n  b", ["a b"]), (7, "cat > f <<'EOF'\n$ not a command\nEOF", [])]


def test_the_pages_that_teach_commands_have_them() -> None:
    names = {p.name for p in PAGES}
    assert {"user-guide.md", "operator-guide.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_console_command_of_the_page_runs(service: Oasis, page: Path) -> None:
    cmds = commands(page.read_text(), str(page.relative_to(ROOT)))
    scratch = Path(tempfile.mkdtemp(prefix="oasis-docs-"))
    scratch.chmod(0o755)  # jobs run as their project's user and read the page's file:// data here
    out = scratch / ".out"
    out.mkdir()
    try:
        env = environment(service, scratch)
        proc = subprocess.run(["bash", "-c", script(cmds, out)], env=env, cwd=scratch, capture_output=True,
                              text=True, timeout=PAGE_TIMEOUT)
        for n, cmd in enumerate(cmds):
            rc_file = out / f"{n}.rc"
            assert rc_file.exists(), failure(cmd, proc.stderr, "not reached", service)
            output = (out / f"{n}.out").read_text(errors="replace")
            rc = int(rc_file.read_text())
            assert rc == 0, failure(cmd, output, f"exit code {rc}", service)
            at = 0
            for want in cmd.expected:
                found = output.find(want, at)
                assert found >= 0, failure(cmd, output, f"output lacks {want!r} (after what came before)",
                                                  service)
                at = found + len(want)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
