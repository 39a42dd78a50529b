"""The engine's cached kernel view, carried forward by operations, equals what the kernel then holds."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from ipvsctl.agent.cache import advance
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.desired import CONNS, Desired, DesiredService, Owner, RealServers, RealServerStates
from ipvsctl.model.ipvs import (
    Protocol,
    RealKey,
    RealServer,
    RealServerState,
    ServiceKey,
    VirtualServer,
    VirtualServerState,
)
from ipvsctl.model.ops import AddReal, AddService, DeleteReal, DeleteService, EditReal, EditService, Operation
from ipvsctl.plan import Observed, Ownership, plan
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


def test_packed_states_read_as_the_tuple_they_stand_for_and_plan_without_building_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache hands the planner real servers packed (RealServerStates): equal to the tuple of
    states the kernel listed, in its order, with connection counts; plan() finds nothing to do
    by comparing the packed configurations, and does the general comparison when they differ."""
    key = ServiceKey(Protocol.TCP, ip("10.0.0.1"), 80)
    configs = RealServers(RealServer(RealKey(ip(f"203.0.113.{i}"), 8080)) for i in (1, 2, 3))
    conns = b"".join(CONNS.pack(*c) for c in [(0, 0, 0), (2, 1, 0), (0, 0, 0)])
    packed = RealServerStates(configs, conns, newest_first=True)
    listed = tuple(RealServerState(r, *c) for r, c in zip(configs, [(0, 0, 0), (2, 1, 0), (0, 0, 0)], strict=True))[
        ::-1
    ]
    assert packed == listed and listed == packed and hash(packed) == hash(listed)
    assert len(packed) == 3 and packed[0] == listed[0] and list(reversed(packed)) == list(reversed(listed))
    want = DesiredService(VirtualServer(key), configs, Owner("demo", "web", "http"), bind=False)
    observed = Observed({key: VirtualServerState(VirtualServer(key), packed)}, frozenset(), frozenset())  # type: ignore[arg-type]
    built: list[int] = []
    original = RealServerStates._states
    monkeypatch.setattr(RealServerStates, "_states", lambda self: built.append(1) or original(self))
    desired = Desired({key: want})
    assert plan(desired, observed, Ownership({key: want.owner}, frozenset())).ops == ()
    assert built == [], "the packed configurations were compared, not built"
    other = replace(want, reals=RealServers([configs[0], configs[2]]))  # 203.0.113.2, the busy one, leaves
    p = plan(Desired({key: other}), observed, Ownership({key: want.owner}, frozenset()), now=1.0)
    assert p.ops == (EditReal(key, RealServer(RealKey(ip("203.0.113.2"), 8080), 0)),)  # busy: drained at weight 0
