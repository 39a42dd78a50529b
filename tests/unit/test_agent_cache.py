"""The engine's cached kernel view, carried forward by operations, equals what the kernel then holds."""

from __future__ import annotations

import random

import pytest

from ipvsctl.agent.cache import advance
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import Protocol, RealKey, RealServer, ServiceKey, VirtualServer
from ipvsctl.model.ops import AddReal, AddService, DeleteReal, DeleteService, EditReal, EditService, Operation
from tests.conftest import ip

KEYS = [ServiceKey(Protocol.TCP, ip(f"10.0.0.{i}"), 80) for i in range(1, 4)]
REALS = [RealKey(ip(f"10.1.0.{i}"), 8080) for i in range(1, 6)]


def random_ops(rng: random.Random, n: int) -> list[Operation]:
    ops: list[Operation] = []
    for _ in range(n):
        key, real = rng.choice(KEYS), rng.choice(REALS)
        kind = rng.randrange(6)
        if kind == 0:
            ops.append(AddService(VirtualServer(key, rng.choice(["rr", "wlc"]))))
        elif kind == 1:
            ops.append(EditService(VirtualServer(key, rng.choice(["rr", "lc"]))))
        elif kind == 2:
            ops.append(DeleteService(key))
        elif kind == 3:
            ops.append(AddReal(key, RealServer(real, rng.randrange(3))))
        elif kind == 4:
            ops.append(EditReal(key, RealServer(real, rng.randrange(3))))
        else:
            ops.append(DeleteReal(key, real))
    return ops


@pytest.mark.parametrize("seed", range(200))
def test_advance_matches_the_kernel(seed: int) -> None:
    """Random batches, failures included (they must be skipped): same servers, same reals, same order."""
    rng = random.Random(seed)
    kernel = MemoryKernel()
    cache = {s.server.key: s for s in kernel.dump()}
    for _ in range(3):
        ops = random_ops(rng, rng.randrange(1, 25))
        results = kernel.execute(ops)
        advance(cache, ops, results)
        want = {s.server.key: s for s in kernel.dump()}
        assert cache.keys() == want.keys()
        for key, state in want.items():
            assert cache[key].server == state.server
            assert [r.server for r in cache[key].real_servers] == [r.server for r in state.real_servers]
