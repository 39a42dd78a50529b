"""Summaries of the virtual servers from ``/proc/net/ip_vs``, in one read of one file.

The file shows what ``ipvsadm -Ln`` shows: per virtual server its protocol, address, port,
scheduler and persistence, and per real server its address, port, forwarding method, weight
and active and inactive connection counts. It leaves out the thresholds, the persistent
connection count, the scheduler flags and the traffic counters.

Reading it costs a few system calls for the whole table, where netlink needs a request and two
reads per virtual server. The agent's full resync uses it to tell which virtual servers it has
to read again (see ``agent/engine.py``); nothing is decoded from it into model values.

The kernel prints (``ip_vs_info_seq_show``)::

    IP Virtual Server version 1.2.1 (size=4096)
    Prot LocalAddress:Port Scheduler Flags
      -> RemoteAddress:Port Forward Weight ActiveConn InActConn
    TCP  0A600001:0050 rr
      -> 0AF40001:1F90      Masq    1      0          0
    UDP  [fd00:0000:0000:0000:0000:0000:0000:0001]:0035 rr persistent 300 FFFFFFFF
    FWM  00000001 wlc

Firewall-mark virtual servers do not show their address family, so they get no summary.
"""

from __future__ import annotations

import ipaddress
import re
from hashlib import blake2b
from typing import BinaryIO

from ipvsctl.model.ipvs import Protocol, ServiceKey

PATH = "/proc/net/ip_vs"
CHUNK = 1 << 18  # bytes per read: the whole table is never held (10,000 x 10 is about 6 MB)

_PROTOCOLS = {p.name.encode(): p for p in (Protocol.TCP, Protocol.UDP, Protocol.SCTP)}
# A virtual server's line and the real server lines under it.
_BLOCK = re.compile(rb"^(\S+) +(\S+)[^\n]*\n(?: [^\n]*\n)*", re.MULTILINE)


def read(path: str = PATH, chunk: int = CHUNK) -> dict[ServiceKey, int] | None:
    """A number per virtual server (not firewall marks) that changes when anything the file
    shows of it changes; None when the file cannot be read (no IPVS, no procfs)."""
    try:
        with open(path, "rb", buffering=0) as stream:
            return parse(stream, chunk)
    except OSError:
        return None


def parse(stream: BinaryIO, chunk: int = CHUNK) -> dict[ServiceKey, int]:
    """The summaries of the text ``stream`` gives, read ``chunk`` bytes at a time."""
    out: dict[ServiceKey, int] = {}
    pending = b""
    while True:
        data = stream.read(chunk)
        if not data:
            break
        text = pending + data if pending else data
        cut = _last_start(text)
        _summarize(text, cut, out)
        pending = text[cut:]
    if pending:
        _summarize(pending if pending.endswith(b"\n") else pending + b"\n", None, out)
    return out


def _last_start(text: bytes) -> int:
    """Where the last line of ``text`` that names a virtual server starts: the block that begins
    there may go on in the next chunk (0 when there is none)."""
    end = len(text)
    while end > 0:
        start = text.rfind(b"\n", 0, end - 1) + 1
        if text[start : start + 1] != b" ":
            return start
        end = start
    return 0


def _summarize(text: bytes, stop: int | None, out: dict[ServiceKey, int]) -> None:
    for match in _BLOCK.finditer(text, 0, len(text) if stop is None else stop):
        key = _key(match.group(1), match.group(2))
        if key is not None:
            # the same number in every process (``hash`` of bytes is not): ``diff`` keeps it on disk
            out[key] = int.from_bytes(blake2b(match.group(0), digest_size=8).digest(), "little")


def _key(proto: bytes, where: bytes) -> ServiceKey | None:
    protocol = _PROTOCOLS.get(proto)
    if protocol is None:  # the heading lines, FWM
        return None
    host, _, port = where.rpartition(b":")
    try:
        if host.startswith(b"["):
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host[1:-1].decode())
        else:
            address = ipaddress.IPv4Address(int(host, 16))
        return ServiceKey(protocol, address, int(port, 16))
    except ValueError:
        return None
