"""NetlinkKernel.dump reuses what it decoded when a virtual server's destination dump is byte-for-byte the same.

A fake generic netlink socket answers the dumps from a table, the way the kernel
frames them (one NEW_DEST message per destination, several per datagram, then
NLMSG_DONE), so the reuse can be checked without a kernel.
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
def test_unchanged_dump_is_reused_not_decoded(decodes: list[int], per_datagram: int) -> None:
    table = {_server(1): _reals(10), _server(2): _reals(7)}
    kernel = _kernel(FakeIpvsSocket(table, per_datagram))
    first = kernel.dump()
    assert len(decodes) == 17
    assert [len(s.real_servers) for s in first] == [10, 7]
    assert [r.server for r in first[0].real_servers] == [r.server for r in table[_server(1)]]
    second = kernel.dump()
    assert len(decodes) == 17, "nothing changed, so nothing is decoded again"
    assert second == first
    assert all(a.real_servers is b.real_servers for a, b in zip(first, second, strict=True))


def test_a_changed_weight_or_counter_decodes_that_virtual_server_only(decodes: list[int]) -> None:
    table = {_server(1): _reals(10), _server(2): _reals(10), _server(3): _reals(10)}
    kernel = _kernel(FakeIpvsSocket(table, per_datagram=4))
    kernel.dump()
    table[_server(1)][3] = replace(table[_server(1)][3], server=replace(table[_server(1)][3].server, weight=0))
    table[_server(3)][9] = replace(table[_server(3)][9], active_conns=1, stats=Stats(conns=5, inpkts=9))
    decodes.clear()
    after = {s.server.key: s for s in kernel.dump()}
    assert len(decodes) == 20, "the two changed virtual servers are decoded afresh, the third is reused"
    assert after[_server(1).key].real_servers[3].server.weight == 0
    assert after[_server(3).key].real_servers[9].active_conns == 1
    assert after[_server(3).key].real_servers[9].stats.conns == 5
    assert after[_server(2).key].real_servers == tuple(table[_server(2)])


def test_reuse_record_holds_only_the_last_dump(decodes: list[int]) -> None:
    table = {_server(1): _reals(5), _server(2): _reals(5)}
    kernel = _kernel(FakeIpvsSocket(table))
    kernel.dump()
    gone = table.pop(_server(2))
    kernel.dump()
    assert set(kernel._reuse) == {_server(1).key}
    table[_server(2)] = gone
    decodes.clear()
    kernel.dump()
    assert len(decodes) == 5, "a virtual server that came back is decoded, not taken from an old record"


def test_a_dump_without_reals_leaves_the_record(decodes: list[int]) -> None:
    table = {_server(1): _reals(4)}
    sock = FakeIpvsSocket(table)
    kernel = _kernel(sock)
    kernel.dump()
    assert [s.real_servers for s in kernel.dump(reals=False)] == [()]
    decodes.clear()
    kernel.dump()
    assert decodes == []
    assert sock.dest_dumps == 2
