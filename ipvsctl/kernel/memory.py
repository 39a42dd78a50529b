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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ipvsctl.kernel.base import KernelError
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
)

OpMatcher = type | Callable[[Operation], bool]

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

    Test hooks: ``set_conns``/``set_stats`` fake traffic, ``fail_next`` injects
    an errno on chosen operations, ``writes`` counts operations submitted to
    ``execute`` (so a test can prove a run wrote nothing), ``executed`` keeps
    every submitted operation in order, ``sysctls`` holds written sysctls, ``flushed`` every
    ``flush_conntrack`` call (``set_conntrack_count`` sets what such a call returns).
    """

    def __init__(
        self,
        *,
        schedulers: Iterable[str] = DEFAULT_SCHEDULERS,
        node_addresses: Iterable[IPAddress] = (),
        sysctls: Mapping[str, str] | None = None,
    ) -> None:
        self.schedulers = set(schedulers)
        self._node_addresses = list(node_addresses)
        self._services: dict[ServiceKey, _Service] = {}
        self._bound: dict[IPAddress, None] = {}
        self._failures: list[_Failure] = []
        self.sysctls: dict[str, str] = dict(sysctls or {})
        self.writes = 0
        self.executed: list[Operation] = []
        self.flushed: list[tuple[ServiceKey, RealKey | None]] = []
        self._conntrack_counts: dict[tuple[ServiceKey, RealKey | None], int] = {}
        self.closed = False

    # --- the Kernel protocol ---

    def dump(self, reals: bool = True) -> list[VirtualServerState]:
        states = [self._state(svc) for svc in list(self._services.values())]
        return states if reals else [replace(s, real_servers=()) for s in states]

    def get(self, key: ServiceKey) -> VirtualServerState | None:
        svc = self._services.get(key)
        return self._state(svc) if svc else None

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
        return None

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
