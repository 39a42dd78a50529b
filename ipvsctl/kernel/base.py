"""The kernel boundary: one small interface, in kernel terms.

Two implementations satisfy it: ``NetlinkKernel`` (the real one, IPVS generic
netlink plus rtnetlink for the dummy interface) and ``MemoryKernel`` (for unit
tests, with the same errno semantics as the real kernel).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ipvsctl.model.ipvs import IPAddress, RealKey, RealServerState, ServiceKey, VirtualServer, VirtualServerState
from ipvsctl.model.ops import (
    AddReal,
    AddService,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    Operation,
    describe,
)


class KernelUnavailable(Exception):
    """The running kernel has no IPVS (or we may not talk to it). Carries the fix."""


@dataclass(frozen=True)
class KernelError:
    """One operation the kernel refused. ``errno`` is the kernel's (positive) errno."""

    op: Operation
    errno: int

    @property
    def message(self) -> str:
        return f"{describe(self.op)}: {explain(self.op, self.errno)}"


def explain(op: Operation, code: int) -> str:
    """Map a kernel errno to a sentence that names the likely cause."""
    name = errno.errorcode.get(code, str(code))
    if code == errno.EEXIST:
        what = "real server" if isinstance(op, AddReal) else "virtual server"
        return f"{what} already exists (EEXIST)"
    if code == errno.ENOENT:
        if isinstance(op, AddService | EditService):
            sched = op.server.scheduler
            return (
                f"scheduler {sched!r} (or persistence engine) is not available in this kernel: "
                f"modprobe ip_vs_{sched} (ENOENT)"
            )
        if isinstance(op, EditReal | DeleteReal):
            return "real server does not exist (ENOENT)"
        return "not found (ENOENT)"
    if code == errno.ESRCH:
        if isinstance(op, AddReal | EditReal | DeleteReal | EditService | DeleteService):
            return "virtual server does not exist (ESRCH)"
        return "no such virtual server (ESRCH)"
    if code == errno.EINVAL:
        return "the kernel rejected the arguments (EINVAL): check protocol, scheduler name, netmask"
    if code == errno.EPERM:
        return "permission denied (EPERM): ipvsctl needs CAP_NET_ADMIN (run as root)"
    if code == errno.ENOMEM:
        return "the kernel is out of memory (ENOMEM)"
    return f"kernel error {name}"


class Kernel(Protocol):
    """What ipvsctl needs from the kernel. Implementations must not raise for
    per-operation kernel errors: ``execute`` returns them."""

    def dump(self, reals: bool = True) -> list[VirtualServerState]:
        """Every virtual server in the kernel (ours and foreign) with its real servers and stats.

        ``reals=False``: virtual servers and their stats only (one netlink dump instead of one per
        virtual server), for metrics.

        Raises KernelUnavailable when IPVS cannot be reached."""
        ...

    def get(self, key: ServiceKey) -> VirtualServerState | None:
        """One virtual server with its real servers, or None if it does not exist."""
        ...

    def real_servers(
        self, server: VirtualServer, known: bytes = b""
    ) -> tuple[bytes, tuple[RealServerState, ...] | None]:
        """The real servers of one virtual server (as ``dump(reals=False)`` listed it), with a
        digest of the kernel's answer: equal digests mean the same real servers, connection
        counts and counters. When the digest equals ``known`` nothing is decoded and None comes
        in place of the real servers: they are the ones read along with ``known``.

        Raises KernelUnavailable when IPVS cannot be reached."""
        ...

    def summaries(self) -> Mapping[ServiceKey, int] | None:
        """Per virtual server, a number that changes when anything ``ipvsadm -Ln`` shows of it
        changes: its scheduler and persistence, and each real server's address, port, forwarding
        method, weight and active and inactive connection counts (``/proc/net/ip_vs``, one read
        for the whole table). Thresholds, scheduler flags, persistent connection counts and
        traffic counters are not covered, nor are firewall-mark virtual servers. The numbers
        compare within one process only. None when the kernel cannot say.

        Raises nothing: a caller falls back to ``real_servers``."""
        ...

    def execute(self, ops: Sequence[Operation]) -> list[KernelError | None]:
        """Run operations in order; return one result per operation (None = done).

        A failed operation does not stop the ones after it (as in a netlink batch).
        Raises KernelUnavailable when IPVS cannot be reached at all."""
        ...

    def bound_addresses(self) -> set[IPAddress]:
        """Addresses currently on the dummy interface (empty if it does not exist)."""
        ...

    def node_addresses(self) -> list[IPAddress]:
        """Local addresses usable as node IPs: all but loopback, IPv6 link-local and the dummy interface's."""
        ...

    def set_sysctls(self, values: Mapping[str, str]) -> dict[str, str]:
        """Write sysctls (dotted names); return those that changed, with their new value."""
        ...

    def flush_conntrack(self, service: ServiceKey, real: RealKey | None) -> int:
        """Delete conntrack entries of UDP flows to this virtual server (original destination = its
        address:port) whose reply source is the real server (None: any); return how many were deleted.

        Never raises for a missing conntrack module (returns 0)."""
        ...

    def close(self) -> None: ...
