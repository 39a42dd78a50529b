"""One kernel contract, two kernels: ``MemoryKernel`` always, ``NetlinkKernel`` on a real IPVS kernel.

The netlink kernel runs only when real-kernel tests are selected (``-m kernel``),
as root, on a kernel with IPVS (scripts/vm gives one). It touches only what the
tests create: services at documentation addresses (198.51.100.0/24,
2001:db8::/32) or test firewall marks, addresses on its own test interface. The
harness refuses any other target, and teardown deletes what the test made. It
never flushes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from ipvsctl.kernel.base import Kernel, KernelError, KernelUnavailable
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import IPAddress, ServiceKey
from ipvsctl.model.ops import (
    AddReal,
    AddService,
    BindAddress,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    Operation,
    UnbindAddress,
)

TEST_INTERFACE = "ipvsctltest0"
DOC_NETS = (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8::/32"))
TEST_FWMARKS = range(0x1F5C0000, 0x1F5D0000)  # firewall marks the tests may use
MEMORY_NODE_ADDRESSES = (ipaddress.ip_address("203.0.113.5"), ipaddress.ip_address("2001:db8:ffff::5"))


def _in_test_space(key: ServiceKey) -> bool:
    if key.fwmark:
        return key.fwmark in TEST_FWMARKS
    return any(key.address in net for net in DOC_NETS)


def _service_key(op: Operation) -> ServiceKey | None:
    if isinstance(op, AddService | EditService):
        return op.server.key
    if isinstance(op, DeleteService):
        return op.key
    if isinstance(op, AddReal | EditReal | DeleteReal):
        return op.service
    return None


@dataclass
class Harness:
    """A kernel under contract test, with what the test created (for cleanup) and ipvsadm's view."""

    kind: str
    kernel: Kernel
    services: dict[ServiceKey, None] = field(default_factory=dict)
    addresses: dict[IPAddress, None] = field(default_factory=dict)

    @property
    def real(self) -> bool:
        return self.kind == "netlink"

    def execute(self, ops: Sequence[Operation]) -> list[KernelError | None]:
        for op in ops:
            key = _service_key(op)
            if key is not None and not _in_test_space(key):
                raise AssertionError(f"contract tests touch only documentation addresses or test marks: {op}")
            if isinstance(op, BindAddress | UnbindAddress) and not any(op.address in n for n in DOC_NETS):
                raise AssertionError(f"contract tests bind only documentation addresses: {op}")
            if isinstance(op, AddService):
                self.services[op.server.key] = None
            if isinstance(op, BindAddress):
                self.addresses[op.address] = None
        return self.kernel.execute(ops)

    def ok(self, ops: Sequence[Operation]) -> None:
        """Execute and require every operation to succeed."""
        results = self.execute(ops)
        failed = [r.message for r in results if r is not None]
        assert not failed, failed

    def ipvsadm_save(self) -> list[str] | None:
        """``ipvsadm -Sn`` lines on the real kernel (None for the memory kernel)."""
        if not self.real:
            return None
        out = subprocess.run(["ipvsadm", "-Sn"], capture_output=True, text=True, check=True).stdout
        return out.splitlines()

    def cleanup(self) -> None:
        existing = {s.server.key for s in self.kernel.dump()}
        gone = [DeleteService(k) for k in self.services if k in existing]
        # Only tests that bound addresses look at them: pyroute2's import alone takes a minute in the VM.
        bound = self.kernel.bound_addresses() if self.addresses else set()
        unbind = [UnbindAddress(a) for a in self.addresses if a in bound]
        results = self.kernel.execute([*gone, *unbind])
        assert all(r is None for r in results), [r.message for r in results if r]


def _netlink_kernel(request: pytest.FixtureRequest) -> Kernel:
    if "kernel" not in (request.config.getoption("-m") or ""):
        pytest.skip("real-kernel test: select it with -m kernel (inside scripts/vm)")
    if os.geteuid() != 0:
        pytest.skip("real-kernel test: needs root (CAP_NET_ADMIN)")
    if shutil.which("ipvsadm") is None:
        pytest.skip("real-kernel test: needs ipvsadm to cross-check")
    from ipvsctl.kernel.netlink import NetlinkKernel

    modprobe = shlex.split(os.environ.get("IPVSCTL_MODPROBE", "modprobe"))
    kernel = NetlinkKernel(interface=TEST_INTERFACE, modprobe=modprobe)
    try:
        kernel.dump()
    except KernelUnavailable as exc:
        kernel.close()
        pytest.skip(f"real-kernel test: {exc}")
    return kernel


def _remove_test_interface() -> None:
    with contextlib.suppress(Exception):
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=TEST_INTERFACE):
                ipr.link("del", index=index)


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("netlink", id="netlink", marks=pytest.mark.kernel),
    ]
)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "memory":
        kernel: Kernel = MemoryKernel(node_addresses=MEMORY_NODE_ADDRESSES)
    else:
        kernel = _netlink_kernel(request)
    h = Harness(request.param, kernel)
    try:
        yield h
    finally:
        try:
            h.cleanup()
        finally:
            kernel.close()
            if h.real and h.addresses:
                _remove_test_interface()
