"""One health check of one real server, as a coroutine: TCP connect, HTTP(S) GET, or a command.

Each returns ``(healthy, reason)``; the reason is what a person reads in the log when the
server's state changes ("connection refused", "status 500", "exit status 1", "timed out after 2 s").
Nothing here raises for a failed check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl

from ipvsctl.checks.spec import CheckSpec
from ipvsctl.model.ipvs import IPAddress

MAX_STATUS_LINE = 1024


def _describe(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError):
        return f"TLS: {err.reason or err}"
    if isinstance(err, OSError):
        # asyncio's connect errors carry the errno with a text of their own
        return (os.strerror(err.errno) if err.errno else err.strerror or str(err)).lower()
    return str(err) or type(err).__name__


def _tls(spec: CheckSpec) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if spec.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _tcp(address: IPAddress, port: int) -> tuple[bool, str]:
    _, writer = await asyncio.open_connection(str(address), port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, "connected"


async def _http(spec: CheckSpec, address: IPAddress, port: int) -> tuple[bool, str]:
    tls = _tls(spec) if spec.kind == "https" else None
    server_hostname = (spec.host or str(address)) if tls else None
    reader, writer = await asyncio.open_connection(str(address), port, ssl=tls, server_hostname=server_hostname)
    try:
        host = spec.host or (f"[{address}]" if address.version == 6 else str(address))
        request = (
            f"GET {spec.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ipvsctl-health-check\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii", "replace"))
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    parts = line[:MAX_STATUS_LINE].decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False, "no HTTP status line in the answer" if line else "closed without an answer"
    status = int(parts[1])
    return spec.accepts(status), f"status {status}"


async def _exec(spec: CheckSpec, address: IPAddress, port: int, service: str) -> tuple[bool, str]:
    env = dict(os.environ)
    env.update(IPVSCTL_CHECK_ADDRESS=str(address), IPVSCTL_CHECK_PORT=str(port), IPVSCTL_CHECK_SERVICE=service)
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        spec.command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group: a timeout kills whatever it started
    )
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            await asyncio.shield(proc.wait())
        raise
    return code == 0, f"exit status {code}" if code >= 0 else f"killed by signal {-code}"


async def probe(spec: CheckSpec, address: IPAddress, port: int, service: str = "") -> tuple[bool, str]:
    """One check of ``address``:``port`` (the check port, already chosen), bounded by the timeout."""
    try:
        if spec.kind == "tcp":
            step = _tcp(address, port)
        elif spec.kind in ("http", "https"):
            step = _http(spec, address, port)
        else:
            step = _exec(spec, address, port, service)
        return await asyncio.wait_for(step, spec.timeout)
    except TimeoutError:
        return False, f"timed out after {spec.timeout:g} s"
    except (OSError, ssl.SSLError, UnicodeError, ValueError) as err:
        return False, _describe(err)
