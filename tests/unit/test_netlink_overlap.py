"""NetlinkKernel.execute: when binds run beside the IPVS requests, and what a failure on either side does.

The two senders are replaced by recorders, so what is checked here is the split itself: which
operations go to which sender, in what order, on which thread, and where the results land. That
the kernel gives the same results either way is the contract test's job
(test_many_binds_beside_many_virtual_servers, on the real kernel in the VM).
"""

from __future__ import annotations

import errno
import ipaddress
import threading
from collections.abc import Sequence

import pytest

from ipvsctl.kernel.base import KernelError, KernelUnavailable
from ipvsctl.kernel.netlink import BATCH, OVERLAP, NetlinkKernel
from ipvsctl.model.ipvs import Protocol, ServiceKey, VirtualServer
from ipvsctl.model.ops import AddressOperation, AddService, BindAddress, Operation, UnbindAddress


def _vip(n: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(0xC6336400 + n)  # 198.51.100.0 + n


class Recorder:
    """Stands in for both senders of a NetlinkKernel; fails the operations named in ``fail``."""

    def __init__(self, kernel: NetlinkKernel, fail: dict[Operation, int], raise_in_binds: bool = False) -> None:
        self.calls: list[tuple[str, list[Operation], str]] = []
        self.fail = fail
        self.raise_in_binds = raise_in_binds
        kernel._run_addresses = self.addresses  # type: ignore[method-assign]
        kernel._run_batch = self.batch  # type: ignore[method-assign]

    def addresses(self, ops: Sequence[AddressOperation]) -> list[KernelError | None]:
        self.calls.append(("addresses", list(ops), threading.current_thread().name))
        if self.raise_in_binds:
            raise KernelUnavailable("gone")
        return [KernelError(op, self.fail[op]) if op in self.fail else None for op in ops]

    def batch(self, ops: Sequence[Operation], indices: Sequence[int], results: list[KernelError | None]) -> None:
        assert 0 < len(indices) <= BATCH
        self.calls.append(("ipvs", [ops[i] for i in indices], threading.current_thread().name))
        for i in indices:
            if ops[i] in self.fail:
                results[i] = KernelError(ops[i], self.fail[ops[i]])


def _mixed(binds: int, services: int) -> list[Operation]:
    ops: list[Operation] = [BindAddress(_vip(n)) for n in range(binds)]
    ops += [AddService(VirtualServer(ServiceKey(Protocol.TCP, _vip(n), 80))) for n in range(services)]
    ops.append(UnbindAddress(_vip(250)))
    return ops


def test_many_of_both_run_on_two_threads_and_results_land_in_place() -> None:
    ops = _mixed(OVERLAP, 2 * BATCH + 3)
    fail = {ops[2]: errno.EEXIST, ops[OVERLAP + BATCH]: errno.EEXIST, ops[-1]: errno.EADDRNOTAVAIL}
    kernel = NetlinkKernel()
    rec = Recorder(kernel, fail)
    results = kernel.execute(ops)
    assert {i: r.errno for i, r in enumerate(results) if r is not None} == {ops.index(op): c for op, c in fail.items()}
    assert all(r.op is ops[i] for i, r in enumerate(results) if r is not None)
    (binds,) = [c for c in rec.calls if c[0] == "addresses"]
    assert binds[1] == [op for op in ops if isinstance(op, AddressOperation)]  # all of them, in order
    assert binds[2] != threading.current_thread().name
    ipvs = [c for c in rec.calls if c[0] == "ipvs"]
    assert [op for c in ipvs for op in c[1]] == [op for op in ops if not isinstance(op, AddressOperation)]
    assert {c[2] for c in ipvs} == {threading.current_thread().name}


@pytest.mark.parametrize(("binds", "services"), [(OVERLAP - 2, 500), (200, OVERLAP - 1), (3, 3)])
def test_few_of_either_kind_run_in_order_on_this_thread(binds: int, services: int) -> None:
    ops = _mixed(binds, services)
    kernel = NetlinkKernel()
    rec = Recorder(kernel, {})
    assert kernel.execute(ops) == [None] * len(ops)
    assert [op for c in rec.calls for op in c[1]] == ops
    assert {c[2] for c in rec.calls} == {threading.current_thread().name}


def test_a_failure_beside_the_ipvs_requests_is_raised_once_they_are_done() -> None:
    ops = _mixed(OVERLAP, OVERLAP)
    kernel = NetlinkKernel()
    rec = Recorder(kernel, {}, raise_in_binds=True)
    with pytest.raises(KernelUnavailable, match="gone"):
        kernel.execute(ops)
    sent = [op for c in rec.calls if c[0] == "ipvs" for op in c[1]]
    assert sent == [op for op in ops if not isinstance(op, AddressOperation)]
    assert threading.active_count() == 1
