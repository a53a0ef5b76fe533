"""What every command shares: the connection options, error rendering without tracebacks, and output."""
from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from oasis.cli.client import OasisClient, OasisError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

# Tests put an httpx.MockTransport here; None means real HTTP.
TRANSPORT: httpx.BaseTransport | None = None


@dataclass
class Options:
    os_cloud: str = "oasis"
    url: str | None = None
    token: str | None = None
    state_dir: Path | None = None
    as_json: bool = False
    cacert: Path | None = None  # the CA to verify the service's HTTPS with (else the cloud's `cacert`)
    _client: OasisClient | None = field(default=None, repr=False)

    def client(self) -> OasisClient:
        if self._client is None:
            self._client = OasisClient.connect(self.os_cloud, self.url, self.token, self.state_dir,
                                               transport=TRANSPORT, cacert=self.cacert)
        return self._client


def options(ctx: typer.Context) -> Options:
    root = ctx.find_root()
    if not isinstance(root.obj, Options):
        root.obj = Options()
    return root.obj


def client(ctx: typer.Context) -> OasisClient:
    return options(ctx).client()


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def command(app: typer.Typer, *args: Any, **kwargs: Any) -> Callable:
    """app.command, with expected failures (service down, auth, API errors) shown as one line, not a traceback."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except OasisError as e:
                raise fail(str(e)) from None
            except KeyboardInterrupt:
                raise fail("interrupted", 130) from None

        app.command(*args, **kwargs)(wrapper)
        return fn
    return decorate


# --- output ---------------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, str | Callable[[dict], Any]]],
          title: str | None = None, ctx: typer.Context | None = None) -> None:
    """A rich table of `rows`, one column per (header, key or function); --json prints the rows themselves."""
    rows = list(rows)
    if ctx is not None and options(ctx).as_json:
        print(json.dumps(rows, indent=2, sort_keys=True, default=str))
        return
    t = Table(title=title, title_justify="left", header_style="bold")
    for header, _ in columns:
        t.add_column(header, overflow="fold")
    for row in rows:
        t.add_row(*(fmt(get(row)) if callable(get) else fmt(row.get(get)) for _, get in columns))
    console.print(t)


def record(obj: dict[str, Any], ctx: typer.Context | None = None, title: str | None = None,
           skip: Iterable[str] = ()) -> None:
    """One object as a two-column field/value table."""
    if ctx is not None and options(ctx).as_json:
        print(json.dumps(obj, indent=2, sort_keys=True, default=str))
        return
    t = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    t.add_column("Field", style="cyan", no_wrap=True)
    t.add_column("Value", overflow="fold")
    for key in sorted(k for k in obj if k not in set(skip)):
        t.add_row(key, fmt(obj[key]))
    console.print(t)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        return None


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}s"


def key_values(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise OasisError(f"{what} '{item}' is not KEY=VALUE")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def is_terminal() -> bool:
    return console.is_terminal and sys.stdout.isatty()
