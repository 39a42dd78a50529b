"""The engine's picture of the kernel, carried forward by the operations it ran.

After a partial sync the engine does not read its virtual servers back; it applies the
operations that succeeded to its cached states, as the kernel did (new real servers first,
edits in place). Every full resync reads the virtual servers it plans again.

The cache keeps what the engine plans with and reports: each virtual server's configuration,
and each real server's configuration and connection counts. Traffic counters are not kept
(states read from the cache have none): the planner never reads them, and the metrics read the
virtual servers' counters fresh at scrape time.

It is kept small (``KernelView``): with 10,000 Services of 10 endpoints, holding every
destination as read (a ``RealServerState``, ``RealServer``, ``RealKey`` and often ``Stats``
each) cost more than anything else the agent kept. When a virtual server's real servers are the
ones its winning translation wants, in the order they were added (the kernel lists them newest
first) or in that order, the cache holds that translation's own packed ``RealServers`` and, if
any real server has connections, their counts packed in bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import replace

from ipvsctl.kernel.base import KernelError
from ipvsctl.model.desired import CONNS, DesiredService, RealServers, RealServerStates, make_state
from ipvsctl.model.ipvs import (
    RealKey,
    RealServer,
    RealServerState,
    ServiceKey,
    VirtualServer,
    VirtualServerState,
)
from ipvsctl.model.ops import (
    AddReal,
    AddService,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    Operation,
    service_of,
)

Wanted = Callable[[ServiceKey], DesiredService | None]  # what the engine wants at a key, if anything

# One virtual server as kept: its configuration; its real servers' configurations, either the
# translation's RealServers or a tuple of each one's RealServer (no connections) or
# RealServerState; whether the kernel lists them in the reverse order; with RealServers, their
# connection counts (active, inactive, persistent per real server), or None when all are 0.
_Entry = tuple[VirtualServer, RealServers | tuple[RealServer | RealServerState, ...], bool, bytes | None]


def _conns(state: RealServerState) -> tuple[int, int, int]:
    return state.active_conns, state.inactive_conns, state.persistent_conns


def compact(state: VirtualServerState, like: DesiredService | None = None) -> _Entry:
    """A state as kept (see the module's description); ``like`` is what the engine wants there."""
    server = state.server
    have = state.real_servers
    if like is not None:
        if like.server == server:
            server = like.server
        want = like.reals if isinstance(like.reals, RealServers) else RealServers(like.reals)
        configs = tuple([r.server for r in have])
        for newest_first in (True, False):
            ordered = have[::-1] if newest_first else have
            if want.same(configs[::-1] if newest_first else configs):
                counts = [_conns(r) for r in ordered]
                busy = any(c != (0, 0, 0) for c in counts)
                conns = b"".join(CONNS.pack(*c) for c in counts) if busy else None
                return server, want, newest_first, conns
    reals = tuple([r.server if _conns(r) == (0, 0, 0) else RealServerState(r.server, *_conns(r)) for r in have])
    return server, reals, False, None


def expand(entry: _Entry) -> VirtualServerState:
    """The state an entry was made from (equal to it, but for traffic counters). Real servers
    kept as a translation's are handed out packed (``RealServerStates``): the planner compares
    them with what it wants without building them."""
    server, reals, newest_first, conns = entry
    if isinstance(reals, RealServers):
        return VirtualServerState(server, RealServerStates(reals, conns, newest_first))  # type: ignore[arg-type]
    return VirtualServerState(
        server, tuple([make_state(r, 0, 0, 0) if isinstance(r, RealServer) else r for r in reals])
    )


class KernelView(MutableMapping[ServiceKey, VirtualServerState]):
    """Virtual server states by key, stored compactly (see the module's description); reading
    one builds it. Each state stored is compared with what ``wanted`` says the engine wants at
    its key, to share that translation's objects.

    A state read by a full resync also keeps the kernel's digest of its real servers
    (``Kernel.real_servers``): the next resync hands it back, and when the kernel's answer has
    not changed, the entry is carried over as it is instead of being decoded and compacted
    again. It may also keep the kernel's summary (``Kernel.summaries``) the read was made with:
    while the summary stays the same, the next resync need not ask at all. Any other change of
    an entry (``advance`` after a partial sync) forgets both."""

    __slots__ = ("_digests", "_entries", "_summaries", "_wanted")

    def __init__(self, wanted: Wanted | None = None) -> None:
        self._entries: dict[ServiceKey, _Entry] = {}
        self._digests: dict[ServiceKey, bytes] = {}
        self._summaries: dict[ServiceKey, int] = {}
        self._wanted = wanted

    def count(self, key: ServiceKey) -> int:
        """How many real servers the virtual server has (0 if it is not known)."""
        entry = self._entries.get(key)
        return len(entry[1]) if entry is not None else 0

    def digest(self, key: ServiceKey) -> bytes:
        """The kernel's digest of the real servers this entry was read from (b"" if none)."""
        return self._digests.get(key, b"")

    def summary(self, key: ServiceKey) -> int | None:
        """The kernel's summary this entry was read or carried with (None if none)."""
        return self._summaries.get(key)

    def read(self, key: ServiceKey, state: VirtualServerState, digest: bytes, summary: int | None = None) -> None:
        """Keep a state as a full read found it, with the kernel's digest of its real servers
        and the summary the kernel gave of it just before."""
        self[key] = state
        self._digests[key] = digest
        if summary is not None:
            self._summaries[key] = summary

    def carry(self, key: ServiceKey, old: KernelView, server: VirtualServer, summary: int | None = None) -> None:
        """Take ``old``'s entry for this key, whose real servers the kernel reports unchanged
        (the digest or the summary ``old`` kept), with the virtual server's configuration as
        read now and the kernel's summary as given now."""
        entry = old._entries[key]
        if entry[0] != server:
            entry = (server, *entry[1:])
        self._entries[key] = entry
        self._digests[key] = old._digests[key]
        if summary is not None:
            self._summaries[key] = summary

    def __getitem__(self, key: ServiceKey) -> VirtualServerState:
        return expand(self._entries[key])

    def __setitem__(self, key: ServiceKey, state: VirtualServerState) -> None:
        self._entries[key] = compact(state, self._wanted(key) if self._wanted is not None else None)
        self._digests.pop(key, None)
        self._summaries.pop(key, None)

    def __delitem__(self, key: ServiceKey) -> None:
        del self._entries[key]
        self._digests.pop(key, None)
        self._summaries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[ServiceKey]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


# A virtual server's real servers while advance gathers them: by key, each with its position
# (newest first); and those of every virtual server touched.
_Reals = dict[RealKey, tuple[int, RealServerState]]
_Touched = dict[ServiceKey, _Reals]


def advance(
    cache: MutableMapping[ServiceKey, VirtualServerState],
    ops: Sequence[Operation],
    results: Sequence[KernelError | None],
) -> None:
    """Apply the operations that succeeded (result None) to ``cache``, in order.

    Real-server changes are gathered per virtual server and written once, after its last
    operation: a cold start adds ten real servers to each of thousands of virtual servers, and
    rebuilding a state per operation made this the slowest step of a full sync; gathering all of
    them until the end held a built state of every real server at once (20 MB at 10,000
    Services of 10 endpoints, the peak of the agent's first sync)."""
    touched: _Touched = {}
    keys = [service_of(op) for op in ops]
    last = {key: i for i, key in enumerate(keys)}  # each virtual server's last operation
    newest = 0
    for i, (op, res, key) in enumerate(zip(ops, results, keys, strict=True)):
        if res is None:
            newest = _apply(cache, touched, op, newest)
        if key is not None and last[key] == i and key in touched:
            _write(cache, key, touched.pop(key))


def _apply(cache: MutableMapping[ServiceKey, VirtualServerState], touched: _Touched, op: Operation, newest: int) -> int:
    """One operation that succeeded; returns the position the next added real server gets."""
    if isinstance(op, AddService):
        cache[op.server.key] = VirtualServerState(op.server)
        touched.pop(op.server.key, None)
    elif isinstance(op, EditService):
        if (state := cache.get(op.server.key)) is not None:
            cache[op.server.key] = replace(state, server=op.server)
    elif isinstance(op, DeleteService):
        cache.pop(op.key, None)
        touched.pop(op.key, None)
    elif isinstance(op, AddReal | EditReal | DeleteReal):
        reals = touched.get(op.service)
        if reals is None:
            if (state := cache.get(op.service)) is None:
                return newest
            reals = touched[op.service] = {r.server.key: (n, r) for n, r in enumerate(state.real_servers)}
        if isinstance(op, AddReal):
            newest -= 1
            reals[op.server.key] = (newest, RealServerState(op.server))
        elif isinstance(op, EditReal):
            if (found := reals.get(op.server.key)) is not None:
                reals[op.server.key] = (found[0], replace(found[1], server=op.server))
        else:
            reals.pop(op.key, None)
    return newest


def _write(cache: MutableMapping[ServiceKey, VirtualServerState], key: ServiceKey, reals: _Reals) -> None:
    ordered = tuple(r for _, r in sorted(reals.values(), key=lambda item: item[0]))
    cache[key] = replace(cache[key], real_servers=ordered)
