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
from ipvsctl.model.ipvs import RealServerState, ServiceKey, VirtualServerState
from ipvsctl.model.ops import AddReal, AddService, DeleteReal, DeleteService, EditReal, EditService, Operation


def advance(
    cache: MutableMapping[ServiceKey, VirtualServerState],
    ops: Sequence[Operation],
    results: Sequence[KernelError | None],
) -> None:
    """Apply the operations that succeeded (result None) to ``cache``, in order."""
    for op, res in zip(ops, results, strict=True):
        if res is not None:
            continue
        if isinstance(op, AddService):
            cache[op.server.key] = VirtualServerState(op.server)
        elif isinstance(op, EditService):
            if (state := cache.get(op.server.key)) is not None:
                cache[op.server.key] = replace(state, server=op.server)
        elif isinstance(op, DeleteService):
            cache.pop(op.key, None)
        elif isinstance(op, AddReal):
            if (state := cache.get(op.service)) is not None:
                cache[op.service] = replace(state, real_servers=(RealServerState(op.server), *state.real_servers))
        elif isinstance(op, EditReal):
            if (state := cache.get(op.service)) is not None:
                reals = tuple(
                    replace(r, server=op.server) if r.server.key == op.server.key else r for r in state.real_servers
                )
                cache[op.service] = replace(state, real_servers=reals)
        elif isinstance(op, DeleteReal) and (state := cache.get(op.service)) is not None:
            reals = tuple(r for r in state.real_servers if r.server.key != op.key)
            cache[op.service] = replace(state, real_servers=reals)
