"""The engine's picture of the kernel, carried forward by the operations it ran.

After a partial sync the engine does not read its virtual servers back; it applies the
operations that succeeded to its cached states, as the kernel did (new real servers first,
edits in place). Counters in the cache are as last read; every full resync replaces the
cache with a fresh dump.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import replace

from ipvsctl.kernel.base import KernelError
from ipvsctl.model.ipvs import RealKey, RealServerState, ServiceKey, VirtualServerState
from ipvsctl.model.ops import AddReal, AddService, DeleteReal, DeleteService, EditReal, EditService, Operation


def advance(
    cache: MutableMapping[ServiceKey, VirtualServerState],
    ops: Sequence[Operation],
    results: Sequence[KernelError | None],
) -> None:
    """Apply the operations that succeeded (result None) to ``cache``, in order.

    Real-server changes are gathered per virtual server and written once at the end: a cold
    start adds ten real servers to each of thousands of virtual servers, and rebuilding a
    state per operation made this the slowest step of a full sync."""
    # per touched virtual server: its real servers by key, each with a position (newest first)
    touched: dict[ServiceKey, dict[RealKey, tuple[int, RealServerState]]] = {}
    newest = 0
    for op, res in zip(ops, results, strict=True):
        if res is not None:
            continue
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
                    continue
                reals = touched[op.service] = {r.server.key: (i, r) for i, r in enumerate(state.real_servers)}
            if isinstance(op, AddReal):
                newest -= 1
                reals[op.server.key] = (newest, RealServerState(op.server))
            elif isinstance(op, EditReal):
                if (found := reals.get(op.server.key)) is not None:
                    reals[op.server.key] = (found[0], replace(found[1], server=op.server))
            else:
                reals.pop(op.key, None)
    for key, reals in touched.items():
        state = cache[key]
        ordered = tuple(r for _, r in sorted(reals.values(), key=lambda item: item[0]))
        cache[key] = replace(state, real_servers=ordered)
