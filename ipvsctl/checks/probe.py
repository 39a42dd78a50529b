"""One health check of one real server, as a coroutine: TCP connect, HTTP(S) GET, a DNS query,
a UDP exchange, or a command.

Each returns ``(healthy, reason)``; the reason is what a person reads in the log when the
server's state changes ("connection refused", "status 500", "exit status 1", "timed out after 2 s").
Nothing here raises for a failed check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import socket
import ssl
import struct

from ipvsctl.checks.spec import MAX_BODY, QUERY_TYPES, CheckSpec
from ipvsctl.model.ipvs import IPAddress

MAX_STATUS_LINE = 1024
MAX_DATAGRAM = 65535
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class CheckFailed(Exception):
    """A check that cannot even start (a CA file that does not load): the reason is the message."""


def _describe(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError):
        return f"TLS: {err.reason or err}"
    if isinstance(err, OSError):
        # asyncio's connect errors carry the errno with a text of their own
        return (os.strerror(err.errno) if err.errno else err.strerror or str(err)).lower()
    return str(err) or type(err).__name__


@functools.lru_cache(maxsize=64)
def _context(ca_file: str, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _tls(spec: CheckSpec) -> ssl.SSLContext:
    try:
        return _context(spec.ca_file, spec.insecure)
    except (OSError, ssl.SSLError) as err:  # not cached: a CA file put right is read on the next check
        raise CheckFailed(f"CA file {spec.ca_file}: {_describe(err)}") from None


async def _read_body(reader: asyncio.StreamReader) -> bytes:
    """What follows the status line, headers included, up to MAX_BODY bytes more than them."""
    data = b""
    while len(data) < 2 * MAX_BODY and (chunk := await reader.read(65536)):
        data += chunk
    _, _, body = data.partition(b"\r\n\r\n")
    return body


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
        body = await _read_body(reader) if spec.body else b""
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    parts = line[:MAX_STATUS_LINE].decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False, "no HTTP status line in the answer" if line else "closed without an answer"
    status = int(parts[1])
    if not spec.accepts(status):
        return False, f"status {status}"
    if spec.body and spec.body.encode() not in body:
        return False, f"status {status} without {spec.body!r} in the body"
    return True, f"status {status}"


async def _exchange(address: IPAddress, port: int, payload: bytes) -> bytes:
    """One datagram to the server and its first answer (a refusal, ICMP port unreachable, raises)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (str(address), port))
        await loop.sock_sendall(sock, payload)
        return await loop.sock_recv(sock, MAX_DATAGRAM)


def dns_query(ident: int, name: str, qtype: str) -> bytes:
    """A DNS query (RFC 1035 4.1) for ``name`` of ``qtype``, recursion desired."""
    labels = [label for label in name.rstrip(".").split(".") if label]
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in labels) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", QUERY_TYPES[qtype], 1)


async def _dns(spec: CheckSpec, address: IPAddress, port: int) -> tuple[bool, str]:
    ident = random.randrange(1 << 16)
    answer = await _exchange(address, port, dns_query(ident, spec.query, spec.query_type))
    if len(answer) < 12:
        return False, "an answer too short to be DNS"
    got, flags = struct.unpack("!HH", answer[:4])
    if got != ident or not flags & 0x8000:
        return False, "an answer that is not a reply to the query"
    rcode = flags & 0x000F
    name = RCODES.get(rcode, str(rcode))
    return rcode == 0, f"rcode {name}"


async def _udp(spec: CheckSpec, address: IPAddress, port: int) -> tuple[bool, str]:
    answer = await _exchange(address, port, spec.payload.encode())
    if spec.body and spec.body.encode() not in answer:
        return False, f"an answer without {spec.body!r}"
    return True, "answered"


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
        elif spec.kind == "dns":
            step = _dns(spec, address, port)
        elif spec.kind == "udp":
            step = _udp(spec, address, port)
        else:
            step = _exec(spec, address, port, service)
        return await asyncio.wait_for(step, spec.timeout)
    except TimeoutError:
        return False, f"timed out after {spec.timeout:g} s"
    except CheckFailed as err:
        return False, str(err)
    except (OSError, ssl.SSLError, UnicodeError, ValueError) as err:
        return False, _describe(err)
