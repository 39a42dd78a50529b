"""An AddReal that holds packed real servers and a position is the same value as one holding the built real server."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError

import pytest

from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.desired import RealServers
from ipvsctl.model.ipvs import Forward, Protocol, RealKey, RealServer, ServiceKey, VirtualServer
from ipvsctl.model.ops import AddReal, AddService, describe
from ipvsctl.plan import add_reals
from tests.conftest import ip

KEY = ServiceKey(Protocol.TCP, ip("10.96.0.1"), 80)
PLAIN = [RealServer(RealKey(ip(f"10.244.0.{i}"), 8080 + i), 1) for i in range(1, 11)]


def test_packed_ops_equal_built_ones_in_every_way() -> None:
    packed = RealServers(PLAIN)
    assert packed.plain_v4()
    lazy = add_reals(KEY, packed)
    built = [AddReal(KEY, r) for r in PLAIN]
    assert [op._index for op in lazy] == list(range(10))  # they really are the packed kind
    assert lazy == built
    assert [hash(op) for op in lazy] == [hash(op) for op in built]
    assert [repr(op) for op in lazy] == [repr(op) for op in built]
    assert [describe(op) for op in lazy] == [describe(op) for op in built]
    assert pickle.loads(pickle.dumps(lazy)) == built
    match lazy[3]:
        case AddReal(service=k, server=r):
            assert (k, r) == (KEY, PLAIN[3])
        case _:
            pytest.fail("AddReal's class pattern did not match")


def test_an_add_real_is_frozen() -> None:
    op = add_reals(KEY, RealServers(PLAIN))[0]
    with pytest.raises(FrozenInstanceError):
        op.service = KEY  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del op.service


def test_other_real_servers_are_held_built() -> None:
    odd = [
        *PLAIN[:2],
        RealServer(RealKey(ip("10.244.0.99"), 80), 5, Forward.ROUTE),
        RealServer(RealKey(ip("fd00::1"), 80), 1),
    ]
    packed = RealServers(odd)
    assert not packed.plain_v4()
    ops = add_reals(KEY, packed)
    assert [op._index for op in ops] == [-1] * 4
    assert [op.server for op in ops] == odd
    assert add_reals(KEY, tuple(PLAIN)) == [AddReal(KEY, r) for r in PLAIN]


def test_plain_real_servers_by_position() -> None:
    packed = RealServers(PLAIN)
    assert [packed[i] for i in range(10)] == PLAIN
    assert packed[-1] == PLAIN[-1]
    assert packed[2:4] == tuple(PLAIN[2:4])
    with pytest.raises(IndexError):
        packed[10]
    with pytest.raises(IndexError):
        packed[-11]


def test_the_kernel_gets_the_real_servers_the_packed_ops_stand_for() -> None:
    kernel = MemoryKernel()
    results = kernel.execute([AddService(VirtualServer(KEY)), *add_reals(KEY, RealServers(PLAIN))])
    assert results == [None] * 11
    (state,) = kernel.dump()
    assert {r.server for r in state.real_servers} == set(PLAIN)
