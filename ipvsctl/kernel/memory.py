"""An in-memory kernel with the real kernel's IPVS semantics, for tests.

Public on purpose: anyone testing code that drives a ``Kernel`` can use it.
The errno for every refusal is the one Linux returns (see GUIDE.md "IPVS
facts", checked against the netlink kernel by tests/contract): duplicate
service or destination EEXIST; missing service (edit, delete, or adding a
destination to it) ESRCH; missing destination ENOENT; unknown scheduler
ENOENT; malformed request EINVAL; lower threshold above upper, or negative
weight, ERANGE.

Order is the kernel's where it has one, never sorted: real servers come back
newest first (the kernel puts a new destination at the head of its list, and
an edit keeps its place); services in insertion order (the kernel's is hash
order: callers must not depend on service order at all).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ipvsctl.kernel.base import KernelError, KernelUnavailable
from ipvsctl.model.ipvs import (
    SCHEDULERS,
    Forward,
    IPAddress,
    RealKey,
    RealServer,
    RealServerState,
    ServiceFlag,
    ServiceKey,
    Stats,
    VirtualServer,
    VirtualServerState,
)
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
    service_of,
)

OpMatcher = type | Callable[[Operation], bool]
READS = ("dump", "get")


@dataclass(frozen=True)
class Fault:
    """A refusal for ``MemoryKernel.inject``: matching requests fail with ``errno`` and change nothing.

    ``op``: an operation class (``AddService``), a tuple of them, or ``"dump"``/``"get"`` for reads
    (None: every operation, no read). Narrowed by ``service`` (the virtual server an operation or a
    ``get`` concerns; never matches address operations), ``address`` (a bind/unbind's address, or a
    service operation's virtual address) and ``real`` (the real server of a real server operation).
    ``times``: how many matching requests fail (None: all of them until ``clear``).

    Operations fail as in ``NetlinkKernel``: ``execute`` returns a ``KernelError`` with the errno
    and carries on with the rest of the batch. Reads fail as ``NetlinkKernel``'s do: a failed dump
    raises ``KernelUnavailable``; a failed ``get`` returns None for ENOENT/ESRCH and raises
    ``KernelUnavailable`` for anything else.
    """

    errno: int
    op: type | tuple[type, ...] | str | None = None
    service: ServiceKey | None = None
    address: IPAddress | None = None
    real: RealKey | None = None
    times: int | None = None

    def matches(self, op: Operation) -> bool:
        if isinstance(self.op, str) or (self.op is not None and not isinstance(op, self.op)):
            return False
        if self.service is not None and service_of(op) != self.service:
            return False
        if self.address is not None and _address_of(op) != self.address:
            return False
        return self.real is None or _real_of(op) == self.real


def _address_of(op: Operation) -> IPAddress | None:
    if isinstance(op, BindAddress | UnbindAddress):
        return op.address
    key = service_of(op)
    return key.address if key is not None else None


def _real_of(op: Operation) -> RealKey | None:
    if isinstance(op, AddReal | EditReal):
        return op.server.key
    if isinstance(op, DeleteReal):
        return op.key
    return None


# "twos" arrived in Linux 6.x and is missing from many kernels: leave it out by default.
DEFAULT_SCHEDULERS = frozenset(SCHEDULERS) - {"twos"}
_SCHEDNAME_MAX = 15  # IP_VS_SCHEDNAME_MAXLEN - 1: longer names fail netlink validation
_WEIGHT_MAX = 0x7FFFFFFF  # the kernel's weight is an int read from a u32 attribute


@dataclass
class _Dest:
    server: RealServer
    active: int = 0
    inactive: int = 0
    persistent: int = 0
    stats: Stats = field(default_factory=Stats)


@dataclass
class _Service:
    server: VirtualServer
    dests: dict[RealKey, _Dest] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)


@dataclass
class _Failure:
    matches: Callable[[Operation], bool]
    errno: int
    times: int


def _normalise(server: VirtualServer) -> VirtualServer:
    """What reading the service back from the kernel gives: no HASHED, full netmask as 0."""
    netmask = server.netmask
    if netmask and netmask == (0xFFFFFFFF if server.key.address.version == 4 else 128):
        netmask = 0
    return replace(server, flags=int(server.flags) & ~int(ServiceFlag.HASHED), netmask=netmask)


class MemoryKernel:
    """A ``Kernel`` that keeps IPVS state in dictionaries.

    Test hooks: ``set_conns``/``set_stats`` fake traffic, ``inject`` (a ``Fault``) and
    ``fail_next`` make chosen operations or reads fail with an errno (``fault_hits`` counts
    what each fault refused; ``clear`` lifts faults), ``writes`` counts operations submitted to
    ``execute`` (so a test can prove a run wrote nothing), ``summarize`` whether ``summaries``
    answers (False: as a kernel without ``/proc/net/ip_vs``), ``executed`` keeps
    every submitted operation in order, ``sysctls`` holds written sysctls, ``flushed`` every
    ``flush_conntrack`` call (``set_conntrack_count`` sets what such a call returns).
    """

    def __init__(
        self,
        *,
        schedulers: Iterable[str] = DEFAULT_SCHEDULERS,
        node_addresses: Iterable[IPAddress] = (),
        sysctls: Mapping[str, str] | None = None,
        summarize: bool = True,
    ) -> None:
        self.schedulers = set(schedulers)
        self.summarize = summarize
        self._node_addresses = list(node_addresses)
        self._services: dict[ServiceKey, _Service] = {}
        self._bound: dict[IPAddress, None] = {}
        self._failures: list[_Failure] = []
        self._faults: dict[Fault, int | None] = {}  # fault -> requests it still refuses (None: all)
        self.fault_hits: Counter[Fault] = Counter()
        self.sysctls: dict[str, str] = dict(sysctls or {})
        self.writes = 0
        self.executed: list[Operation] = []
        self.flushed: list[tuple[ServiceKey, RealKey | None]] = []
        self._conntrack_counts: dict[tuple[ServiceKey, RealKey | None], int] = {}
        self.closed = False

    # --- the Kernel protocol ---

    def dump(self, reals: bool = True) -> list[VirtualServerState]:
        code = self._read_fault("dump", None)
        if code is not None:
            raise KernelUnavailable(_read_failure("IPVS dump failed", code))
        states = [self._state(svc) for svc in list(self._services.values())]
        return states if reals else [replace(s, real_servers=()) for s in states]

    def get(self, key: ServiceKey) -> VirtualServerState | None:
        code = self._read_fault("get", key)
        if code in (errno.ENOENT, errno.ESRCH):
            return None
        if code is not None:
            raise KernelUnavailable(_read_failure("IPVS GET_SERVICE failed", code))
        svc = self._services.get(key)
        return self._state(svc) if svc else None

    def real_servers(
        self, server: VirtualServer, known: bytes = b""
    ) -> tuple[bytes, tuple[RealServerState, ...] | None]:
        code = self._read_fault("dump", server.key)
        if code is not None:
            raise KernelUnavailable(_read_failure("IPVS dump failed", code))
        svc = self._services.get(server.key)
        reals = self._state(svc).real_servers if svc else ()
        # What the netlink kernel's digest covers (every field of every real server, in order),
        # from the values instead of the bytes.
        digest = hashlib.blake2b(repr(reals).encode(), digest_size=16).digest()
        return digest, (None if digest == known else reals)

    def summaries(self) -> dict[ServiceKey, int] | None:
        if not self.summarize:
            return None
        # What /proc/net/ip_vs shows, from the values: no thresholds, no persistent connections.
        shown = int(ServiceFlag.ONEPACKET | ServiceFlag.PERSISTENT)
        out = {}
        for key, svc in self._services.items():
            if key.fwmark:
                continue
            server = svc.server
            dests = tuple(
                (d.server.key, d.server.forward, d.server.weight, d.active, d.inactive) for d in svc.dests.values()
            )
            out[key] = hash((server.scheduler, int(server.flags) & shown, server.timeout, server.netmask, dests))
        return out

    def execute(self, ops: Sequence[Operation]) -> list[KernelError | None]:
        results: list[KernelError | None] = []
        for op in ops:
            self.writes += 1
            self.executed.append(op)
            code = self._injected(op)
            if code is None:
                code = self._apply(op)
            results.append(KernelError(op, code) if code else None)
        return results

    def bound_addresses(self) -> set[IPAddress]:
        return set(self._bound)

    def node_addresses(self) -> list[IPAddress]:
        return [a for a in self._node_addresses if a not in self._bound]

    def set_sysctls(self, values: Mapping[str, str]) -> dict[str, str]:
        changed: dict[str, str] = {}
        for name, value in values.items():
            if self.sysctls.get(name) != value:
                self.sysctls[name] = value
                changed[name] = value
        return changed

    def flush_conntrack(self, service: ServiceKey, real: RealKey | None) -> int:
        self.flushed.append((service, real))
        return self._conntrack_counts.pop((service, real), 0)

    def close(self) -> None:
        self.closed = True

    # --- test hooks ---

    def inject(self, fault: Fault) -> Fault:
        """Make requests matching ``fault`` fail (see ``Fault``) until it is used up or cleared."""
        if fault.times is not None and fault.times < 1:
            raise ValueError(f"times must be at least 1 or None, got {fault.times}")
        if isinstance(fault.op, str) and fault.op not in READS:
            raise ValueError(f"op must be an operation class or one of {', '.join(READS)}, got {fault.op!r}")
        self._faults[fault] = fault.times
        return fault

    def clear(self, fault: Fault | None = None) -> None:
        """Lift one injected fault, or all of them (and every ``fail_next``)."""
        if fault is None:
            self._faults.clear()
            self._failures.clear()
        else:
            self._faults.pop(fault, None)

    def fail_next(self, matcher: OpMatcher, code: int, times: int = 1) -> None:
        """Make the next ``times`` operations matching ``matcher`` fail with ``code``, without effect.

        ``matcher`` is an operation class (``AddReal``) or a predicate over operations.
        """
        if isinstance(matcher, type):
            cls = matcher

            def matches(op: Operation) -> bool:
                return isinstance(op, cls)
        else:
            matches = matcher
        self._failures.append(_Failure(matches, code, times))

    def set_conns(
        self, service: ServiceKey, real: RealKey, active: int, inactive: int = 0, persistent: int = 0
    ) -> None:
        """Set a real server's connection counters (ActiveConn, InActConn, PersistConn)."""
        dest = self._services[service].dests[real]
        dest.active, dest.inactive, dest.persistent = active, inactive, persistent

    def set_stats(self, service: ServiceKey, stats: Stats, real: RealKey | None = None) -> None:
        """Set the 64-bit counters of a service, or of one of its real servers."""
        svc = self._services[service]
        if real is None:
            svc.stats = stats
        else:
            svc.dests[real].stats = stats

    def set_conntrack_count(self, service: ServiceKey, real: RealKey | None, count: int) -> None:
        """Make the next ``flush_conntrack(service, real)`` report ``count`` deleted entries (then 0)."""
        self._conntrack_counts[(service, real)] = count

    def reset_writes(self) -> None:
        self.writes = 0
        self.executed.clear()

    # --- internals ---

    def _injected(self, op: Operation) -> int | None:
        for failure in self._failures:
            if failure.matches(op):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure.errno
        for fault in list(self._faults):
            if fault.matches(op):
                return self._use(fault)
        return None

    def _read_fault(self, kind: str, key: ServiceKey | None) -> int | None:
        for fault in list(self._faults):
            if fault.op == kind and (fault.service is None or fault.service == key):
                return self._use(fault)
        return None

    def _use(self, fault: Fault) -> int:
        self.fault_hits[fault] += 1
        left = self._faults[fault]
        if left is not None:
            if left <= 1:
                del self._faults[fault]
            else:
                self._faults[fault] = left - 1
        return fault.errno

    def _state(self, svc: _Service) -> VirtualServerState:
        reals = tuple(
            RealServerState(d.server, d.active, d.inactive, d.persistent, d.stats) for d in reversed(svc.dests.values())
        )
        return VirtualServerState(svc.server, reals, svc.stats)

    def _apply(self, op: Operation) -> int:
        match op:
            case AddService(server=s) | EditService(server=s):
                return self._set_service(s, isinstance(op, AddService))
            case DeleteService(key=k):
                if k not in self._services:
                    return errno.ESRCH
                del self._services[k]
                return 0
            case AddReal(service=k, server=r) | EditReal(service=k, server=r):
                return self._set_dest(k, r, isinstance(op, AddReal))
            case DeleteReal(service=k, key=rk):
                svc = self._services.get(k)
                if svc is None:
                    return errno.ESRCH
                if svc.dests.pop(rk, None) is None:
                    return errno.ENOENT
                return 0
            case BindAddress(address=a):
                if a in self._bound:
                    return errno.EEXIST
                self._bound[a] = None
                return 0
            case UnbindAddress(address=a):
                if a not in self._bound:
                    return errno.EADDRNOTAVAIL
                del self._bound[a]
                return 0
        raise TypeError(f"unknown operation {op!r}")

    def _set_service(self, s: VirtualServer, add: bool) -> int:
        key = s.key
        # Netlink attribute validation comes first in the kernel.
        if (key.protocol is None and not key.fwmark) or len(s.scheduler) > _SCHEDNAME_MAX:
            return errno.EINVAL
        existing = self._services.get(key)
        if add and existing is not None:
            return errno.EEXIST
        if not add and existing is None:
            return errno.ESRCH
        if s.scheduler != "none" and s.scheduler not in self.schedulers:
            return errno.ENOENT
        if key.address.version == 6 and not 0 <= s.netmask <= 128:
            return errno.EINVAL
        server = _normalise(s)
        if existing is None:
            self._services[key] = _Service(server)
        else:
            existing.server = server
        return 0

    def _set_dest(self, k: ServiceKey, r: RealServer, add: bool) -> int:
        svc = self._services.get(k)
        if svc is None:
            return errno.ESRCH
        if r.key.address.version != k.address.version and r.forward != Forward.TUNNEL:
            return errno.EINVAL
        if not 0 <= r.weight <= _WEIGHT_MAX or r.lower_threshold > r.upper_threshold:
            return errno.ERANGE
        dest = svc.dests.get(r.key)
        if add:
            if dest is not None:
                return errno.EEXIST
            svc.dests[r.key] = _Dest(r)
        else:
            if dest is None:
                return errno.ENOENT
            dest.server = r
        return 0


def _read_failure(what: str, code: int) -> str:
    """The message ``NetlinkKernel`` gives when a read fails with ``code``."""
    if code == errno.EPERM:
        from ipvsctl.kernel.netlink import NO_PERMISSION

        return NO_PERMISSION
    return f"{what}: {os.strerror(code)}"
