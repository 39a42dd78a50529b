"""apply: UDP conntrack entries are flushed after a UDP real server (or UDP virtual server) is removed."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from pyroute2 import NetlinkError

from ipvsctl.apply import Result, execute, observe, sync
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.kernel.netlink import NetlinkKernel
from ipvsctl.model.desired import Desired, DesiredService, Owner
from ipvsctl.model.ipvs import Protocol, RealKey, RealServer, ServiceKey, VirtualServer
from ipvsctl.model.ops import DeleteReal, DeleteService
from ipvsctl.plan import plan
from ipvsctl.settings import Settings
from ipvsctl.state import Store

ip = ipaddress.ip_address

DNS = ServiceKey(Protocol.UDP, ip("10.96.0.10"), 53)
DNS6 = ServiceKey(Protocol.UDP, ip("fd00::10"), 53)
WEB = ServiceKey(Protocol.TCP, ip("10.96.0.20"), 80)
BE1, BE2 = RealKey(ip("10.1.0.1"), 8080), RealKey(ip("10.1.0.2"), 8080)
BE6 = RealKey(ip("fd00:1::1"), 8080)

Services = dict[ServiceKey, tuple[RealKey, ...]]


def desired(services: Services) -> Desired:
    return Desired(
        {
            key: DesiredService(VirtualServer(key), tuple(RealServer(r) for r in reals), Owner("t", f"s{i}", "p"), True)
            for i, (key, reals) in enumerate(services.items())
        }
    )


@pytest.fixture
def kernel() -> MemoryKernel:
    return MemoryKernel()


@pytest.fixture
def run(kernel: MemoryKernel, tmp_path: Path) -> Callable[[Services], Result]:
    """sync() to the given virtual servers, on one kernel and one state directory across calls."""
    settings = Settings(node_name="n", state_dir=tmp_path / "state")

    def go(services: Services) -> Result:
        return sync(desired(services), kernel, Store(settings.state_dir), settings)

    return go


def test_removed_udp_endpoint_is_flushed(kernel: MemoryKernel, run: Callable[[Services], Result]) -> None:
    assert not run({DNS: (BE1, BE2), DNS6: (BE6,)}).errors
    assert kernel.flushed == []
    assert not run({DNS: (BE2,), DNS6: (BE6,)}).errors
    assert DeleteReal(DNS, BE1) in kernel.executed
    assert kernel.flushed == [(DNS, BE1)]


def test_removed_tcp_endpoint_is_not_flushed(kernel: MemoryKernel, run: Callable[[Services], Result]) -> None:
    assert not run({WEB: (BE1, BE2)}).errors
    assert not run({WEB: (BE2,)}).errors
    assert DeleteReal(WEB, BE1) in kernel.executed  # idle, so deleted at once: still no flush
    assert kernel.flushed == []


def test_deleted_udp_service_is_flushed_for_any_backend(
    kernel: MemoryKernel, run: Callable[[Services], Result]
) -> None:
    assert not run({DNS: (BE1,), DNS6: (BE6,), WEB: (BE1,)}).errors
    assert not run({}).errors
    deleted = {op for op in kernel.executed if isinstance(op, DeleteService)}
    assert deleted == {DeleteService(DNS), DeleteService(DNS6), DeleteService(WEB)}
    assert sorted(kernel.flushed, key=lambda f: f[0].sort_key()) == [(DNS, None), (DNS6, None)]


def test_failed_delete_real_is_not_flushed(kernel: MemoryKernel, run: Callable[[Services], Result]) -> None:
    assert not run({DNS: (BE1, BE2)}).errors
    kernel.fail_next(DeleteReal, errno.ENOMEM)
    (error,) = run({DNS: (BE2,)}).errors
    assert error.op == DeleteReal(DNS, BE1)
    assert kernel.flushed == []
    assert not run({DNS: (BE2,)}).errors  # the next run deletes it, and flushes then
    assert kernel.flushed == [(DNS, BE1)]


def test_on_flush_gets_each_count(kernel: MemoryKernel, tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = plan(desired({DNS: (BE1, BE2)}), observe(kernel), store.load())
    results, owned = execute(first, kernel, store.load(), lambda _b, after: store.save(after))
    assert results == [None] * len(first.ops)
    kernel.set_conntrack_count(DNS, BE1, 3)
    counts: list[int] = []
    second = plan(desired({DNS: (BE2,)}), observe(kernel), owned)
    results, _ = execute(second, kernel, owned, lambda _b, after: store.save(after), on_flush=counts.append)
    assert results == [None]
    assert counts == [3]
    assert kernel.flushed == [(DNS, BE1)]


class _NoConntrack:
    """A conntrack socket on a kernel without ctnetlink: every request fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def dump(self, **_: object) -> list[object]:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [OSError(errno.EPROTONOSUPPORT, "no nfnetlink"), NetlinkError(errno.EOPNOTSUPP), NetlinkError(errno.EPERM)],
    ids=["no-nfnetlink", "no-ctnetlink", "eperm"],
)
def test_netlink_flush_never_raises_for_missing_conntrack(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    kernel = NetlinkKernel()
    monkeypatch.setattr(kernel, "_conntrack", lambda family: _NoConntrack(error))
    assert kernel.flush_conntrack(DNS, BE1) == 0
    assert kernel.flush_conntrack(DNS6, None) == 0


def test_netlink_flush_of_tcp_touches_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = NetlinkKernel()

    def refuse(family: int) -> None:
        raise AssertionError("a conntrack socket was opened for a TCP virtual server")

    monkeypatch.setattr(kernel, "_conntrack", refuse)
    assert kernel.flush_conntrack(WEB, BE1) == 0
