"""A framework's own HTTP(S) status endpoint, asked from the instance that runs it (the Dask scheduler's
`/json/identity.json`, the Spark master's `/json/`): the request goes out on the instance's host, through the
instance's Remote, so that it takes the way every other instance command takes (SSH, a gateway, a proxy
command), and plugins never open a connection themselves.

The cluster's client certificate and key reach the probe on its stdin, never on its command line or in its
environment, and are handed to OpenSSL through pipes: they never touch the host's disk."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from oasis.plugins.base import InstanceView, RemoteError, unreachable_in

PROBE_TIMEOUT = 10.0

# The part of a remote script that makes `context`: an SSL context with the cluster's CA and its client's
# certificate and key, read from the JSON on stdin (`creds`) and handed to OpenSSL through pipes; None without.
CLIENT_CONTEXT = r'''
import json, os, ssl, sys
creds = json.loads(sys.stdin.read() or "{}")
context = None
if creds:
    context = ssl.create_default_context(cadata=creds["ca"])
    pipes = []
    for pem in (creds["cert"], creds["key"]):
        r, w = os.pipe()
        os.write(w, pem.encode())
        os.close(w)
        pipes.append(r)
    try:
        context.load_cert_chain("/dev/fd/%d" % pipes[0], "/dev/fd/%d" % pipes[1])
    finally:
        for r in pipes:
            os.close(r)
'''

# Runs with the instance's Python (-I -S: the standard library only, nothing from the environment).
PROBE_CODE = CLIENT_CONTEXT + r'''
import urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
try:
    with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
        sys.stdout.write(response.read().decode("utf-8", "replace"))
except Exception as e:
    reason = getattr(e, "reason", None) or e
    sys.stderr.write("%s: %s" % (type(e).__name__, reason))
    sys.exit(3)
'''


class ProbeFailed(Exception):
    """The endpoint did not answer, or not with JSON; the message says why, for the verification's check."""


async def run_python(inst: InstanceView, python: str, code: str, args: list[str], creds: dict[str, str] | None,
                     *, isolated: bool = True, timeout: float = PROBE_TIMEOUT) -> str:
    """Run `code` with the instance's Python on `inst`'s host (`creds` on its stdin) and return its stdout;
    `isolated`: the standard library only (-S), else with the packages of the instance's runtime (distributed)."""
    stdin = json.dumps(creds or {}).encode()
    flags = ["-I", "-S"] if isolated else ["-I"]
    try:
        result = await inst.remote.run([python, *flags, "-c", code, *args], timeout=timeout + 20, check=False,
                                       stdin=stdin)
    except asyncio.TimeoutError:
        raise ProbeFailed(f"no answer within {timeout + 20:.0f} s") from None
    except RemoteError as e:
        gone = unreachable_in(e)
        raise ProbeFailed(f"host unreachable ({gone.reason})" if gone else str(e)) from None
    if result.rc != 0:
        raise ProbeFailed((result.stderr.strip() or f"exit code {result.rc}")[-300:])
    return result.stdout


async def get_text(inst: InstanceView, python: str, url: str, creds: dict[str, str] | None) -> str:
    """GET `url` from `inst`'s host, as TLS client `creds` ({ca, cert, key}, PEM) where given: its body."""
    return await run_python(inst, python, PROBE_CODE, [url, str(PROBE_TIMEOUT)], creds)


async def get_json(inst: InstanceView, python: str, url: str, creds: dict[str, str] | None) -> Any:
    """GET `url` from `inst`'s host, as TLS client `creds` ({ca, cert, key}, PEM) where given, and its JSON."""
    text = await get_text(inst, python, url, creds)
    try:
        return json.loads(text)
    except ValueError:
        raise ProbeFailed(f"{url} did not answer with JSON") from None
