"""NetlinkKernel.real_servers: a digest of a destination dump, and no decoding when it is the one given.

A fake generic netlink socket answers the dumps from a table, the way the kernel
frames them (one NEW_DEST message per destination, several per datagram, then
NLMSG_DONE), so the digests can be checked without a kernel.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace

import pytest

from ipvsctl.kernel import codec
from ipvsctl.kernel.netlink import NetlinkKernel
from ipvsctl.model.ipvs import Protocol, RealKey, RealServer, RealServerState, ServiceKey, Stats, VirtualServer

FAMILY = 0x25
_NLMSG = struct.Struct("=IHHII")


def _done(seq: int) -> bytes:
    return _NLMSG.pack(20, codec.NLMSG_DONE, codec.NLM_F_MULTI, seq, 0) + struct.pack("=i", 0)


class FakeIpvsSocket:
    """Answers GET_SERVICE and GET_DEST dumps from ``table``, ``per_datagram`` messages to a datagram."""

    def __init__(self, table: dict[VirtualServer, list[RealServerState]], per_datagram: int = 64) -> None:
        self.table = table
        self.per_datagram = per_datagram
        self.queue: list[bytes] = []
        self.dest_dumps = 0

    def send(self, data: bytes) -> int:
        _length, _family, _flags, seq, _pid = _NLMSG.unpack_from(data, 0)
        cmd = data[_NLMSG.size]
        if cmd == codec.IPVS_CMD_GET_SERVICE:
            messages = [codec.kernel_service_reply(FAMILY, seq, server) for server in self.table]
        else:
            assert cmd == codec.IPVS_CMD_GET_DEST
            self.dest_dumps += 1
            server = next(s for s in self.table if codec.encode_dump_dests(FAMILY, seq, s.key) == data)
            messages = [codec.kernel_dest_reply(FAMILY, seq, state) for state in self.table[server]]
        messages.append(_done(seq))
        for i in range(0, len(messages), self.per_datagram):
            self.queue.append(b"".join(messages[i : i + self.per_datagram]))
        return len(data)

    def recv_into(self, buf: bytearray) -> int:
        datagram = self.queue.pop(0)
        buf[: len(datagram)] = datagram
        return len(datagram)

    def close(self) -> None:
        pass


def _server(n: int) -> VirtualServer:
    return VirtualServer(ServiceKey(Protocol.TCP, ipaddress.ip_address(f"198.51.100.{n}"), 80), "rr")


def _reals(count: int, weight: int = 1) -> list[RealServerState]:
    return [
        RealServerState(RealServer(RealKey(ipaddress.ip_address(f"203.0.113.{i + 1}"), 8080), weight))
        for i in range(count)
    ]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per destination actually decoded."""
    calls: list[int] = []
    real_decode = codec.decode_dest

    def counting(*args: object, **kwargs: object) -> RealServerState:
        calls.append(1)
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(codec, "decode_dest", counting)
    return calls


def _kernel(sock: FakeIpvsSocket) -> NetlinkKernel:
    kernel = NetlinkKernel(interface="ipvsctltest0")
    kernel._sock = sock  # type: ignore[assignment]
    kernel._family = FAMILY
    return kernel


@pytest.mark.parametrize("per_datagram", [64, 3, 1])
def test_an_unchanged_answer_has_the_same_digest_and_is_not_decoded(decodes: list[int], per_datagram: int) -> None:
    table = {_server(1): _reals(10), _server(2): _reals(7)}
    kernel = _kernel(FakeIpvsSocket(table, per_datagram))
    digest, reals = kernel.real_servers(_server(1))
    assert len(decodes) == 10
    assert reals is not None and [r.server for r in reals] == [r.server for r in table[_server(1)]]
    again, none = kernel.real_servers(_server(1), digest)
    assert (again, none) == (digest, None), "same bytes but for the sequence number: nothing decoded"
    assert len(decodes) == 10
    other, reals2 = kernel.real_servers(_server(2), digest)
    assert other != digest and reals2 is not None and len(reals2) == 7, "another virtual server's digest differs"


def test_a_changed_weight_or_counter_changes_the_digest(decodes: list[int]) -> None:
    table = {_server(1): _reals(10), _server(2): _reals(10), _server(3): _reals(10)}
    kernel = _kernel(FakeIpvsSocket(table, per_datagram=4))
    known = {s: kernel.real_servers(s)[0] for s in table}
    table[_server(1)][3] = replace(table[_server(1)][3], server=replace(table[_server(1)][3].server, weight=0))
    table[_server(3)][9] = replace(table[_server(3)][9], active_conns=1, stats=Stats(conns=5, inpkts=9))
    decodes.clear()
    after = {s.key: kernel.real_servers(s, known[s]) for s in table}
    assert len(decodes) == 20, "the two changed virtual servers are decoded afresh, the third is not"
    assert after[_server(2).key] == (known[_server(2)], None)
    reals1, reals3 = after[_server(1).key][1], after[_server(3).key][1]
    assert reals1 is not None and reals1[3].server.weight == 0
    assert reals3 is not None and reals3[9].active_conns == 1 and reals3[9].stats.conns == 5
    assert after[_server(1).key][0] != known[_server(1)] and after[_server(3).key][0] != known[_server(3)]


def test_dump_decodes_every_destination_every_time(decodes: list[int]) -> None:
    """The kernel object keeps no record between dumps: the caller that wants to skip decoding
    keeps the digests (the agent's cache does)."""
    table = {_server(1): _reals(4), _server(2): _reals(3)}
    sock = FakeIpvsSocket(table)
    kernel = _kernel(sock)
    first = kernel.dump()
    assert kernel.dump() == first
    assert len(decodes) == 14
    assert [s.real_servers for s in kernel.dump(reals=False)] == [(), ()]
    assert sock.dest_dumps == 4
