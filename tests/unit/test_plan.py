"""Planner: properties over random states (hypothesis) and a table of drain/ownership cases."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsctl.errors import Origin
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.desired import Desired, DesiredService, Owner
from ipvsctl.model.ipvs import Protocol, RealKey, RealServer, ServiceFlag, ServiceKey, VirtualServer
from ipvsctl.model.ops import (
    AddReal,
    AddService,
    BindAddress,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    UnbindAddress,
    service_of,
)
from ipvsctl.plan import Observed, Ownership, plan
from tests.conftest import ip

KEYS = [
    ServiceKey(p, ip(f"10.96.0.{i}"), port)
    for p in (Protocol.TCP, Protocol.UDP)
    for i in (1, 2, 3)
    for port in (80, 443)
] + [ServiceKey(Protocol.TCP, ip("fd00::1"), 80)]
REALS = [RealKey(ip(f"10.1.0.{i}"), 8080) for i in range(1, 5)]
REALS6 = [RealKey(ip(f"fd00:1::{i}"), 8080) for i in range(1, 5)]

servers = st.builds(
    lambda sched, persistent: (sched, ServiceFlag.PERSISTENT if persistent else 0, 300 if persistent else 0),
    st.sampled_from(["rr", "wrr", "lc", "sh"]),
    st.booleans(),
)


@st.composite
def kernel_entry(draw: st.DrawFn, key: ServiceKey) -> tuple[VirtualServer, tuple[RealServer, ...]]:
    sched, flags, timeout = draw(servers)
    pool = REALS if key.address.version == 4 else REALS6
    chosen = draw(st.lists(st.sampled_from(pool), unique=True, max_size=4))
    reals = tuple(RealServer(k, weight=draw(st.integers(0, 3))) for k in chosen)
    return VirtualServer(key, sched, flags, timeout), reals


@st.composite
def world(draw: st.DrawFn) -> tuple[Desired, dict[ServiceKey, tuple], set[ServiceKey]]:
    """(desired, kernel contents, owned keys): desired and kernel overlap at random, ownership too."""
    desired_keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=6))
    kernel_keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=6))
    owned = {k for k in kernel_keys if draw(st.booleans())} | set(draw(st.lists(st.sampled_from(KEYS), max_size=2)))
    services = {}
    for k in desired_keys:
        vs, reals = draw(kernel_entry(k))
        reals = tuple(replace(r, weight=max(1, r.weight)) for r in reals)
        services[k] = DesiredService(vs, reals, Owner("ns", f"s{KEYS.index(k)}", "p"), True, Origin("f", 0))
    kernel = {k: draw(kernel_entry(k)) for k in kernel_keys}
    return Desired(services), kernel, owned


def load_kernel(contents: dict[ServiceKey, tuple]) -> MemoryKernel:
    kernel = MemoryKernel()
    ops = []
    for vs, reals in contents.values():
        ops.append(AddService(vs))
        ops.extend(AddReal(vs.key, r) for r in reals)
    assert all(r is None for r in kernel.execute(ops))
    return kernel


def observed(kernel: MemoryKernel) -> Observed:
    return Observed({s.server.key: s for s in kernel.dump()}, frozenset(kernel.bound_addresses()))


def snapshot(kernel: MemoryKernel) -> dict[ServiceKey, tuple]:
    return {s.server.key: (s.server, {r.server for r in s.real_servers}) for s in kernel.dump()}


@settings(max_examples=300, deadline=None)
@given(world())
def test_plan_reaches_desired_and_touches_nothing_foreign(w) -> None:
    """Applying the plan gives the desired state for ours, leaves foreign servers exactly as they were,
    and planning again yields nothing."""
    desired, contents, owned_keys = w
    kernel = load_kernel(contents)
    before = snapshot(kernel)
    owned = Ownership({k: Owner("ns", "old") for k in owned_keys})
    p = plan(desired, observed(kernel), owned)
    foreign = {k for k in contents if k not in owned_keys}
    touched = {service_of(op) for op in p.ops}
    assert not touched & foreign, "a foreign virtual server appears in the plan"
    assert all(r is None for r in kernel.execute(p.ops))
    after = snapshot(kernel)
    for k in foreign:
        assert after[k] == before[k]
    for k, want in desired.services.items():
        if k in foreign:
            assert {c.field for c in p.conflicts} == {"spec"}
            continue
        got_server, got_reals = after[k]
        assert got_server.same_config(want.server)
        assert got_reals == set(want.reals)
    for k in owned_keys - set(desired.services):
        assert k not in after
    again = plan(desired, observed(kernel), p.target)
    assert again.ops == ()


@settings(max_examples=100, deadline=None)
@given(world())
def test_equal_states_plan_nothing(w) -> None:
    """When the kernel already holds what is desired, and we own it, the plan is empty."""
    desired, _, _ = w
    contents = {k: (d.server, d.reals) for k, d in desired.services.items()}
    kernel = load_kernel(contents)
    for addr in {k.address for k in desired.services}:
        kernel.execute([BindAddress(addr)])
    owned = Ownership({k: d.owner for k, d in desired.services.items()}, frozenset(kernel.bound_addresses()))
    assert plan(desired, observed(kernel), owned).ops == ()


KEY = ServiceKey(Protocol.TCP, ip("10.96.0.1"), 80)
UKEY = ServiceKey(Protocol.UDP, ip("10.96.0.1"), 53)
A, B = RealKey(ip("10.1.0.1"), 8080), RealKey(ip("10.1.0.2"), 8080)
OWNER = Owner("ns", "s", "http")


def one(key: ServiceKey, reals: tuple[RealServer, ...], scheduler: str = "rr") -> Desired:
    return Desired({key: DesiredService(VirtualServer(key, scheduler), reals, OWNER, False)})


def kernel_with(key: ServiceKey, reals: list[RealServer], conns: dict[RealKey, int] | None = None) -> MemoryKernel:
    kernel = load_kernel({key: (VirtualServer(key), tuple(reals))})
    for rk, n in (conns or {}).items():
        kernel.set_conns(key, rk, n, 0)
    return kernel


def test_leaving_tcp_real_with_connections_is_drained_then_deleted() -> None:
    """A TCP real server leaving with connections goes to weight 0; once idle the next plan deletes it."""
    kernel = kernel_with(KEY, [RealServer(A), RealServer(B)], {B: 3})
    owned = Ownership({KEY: OWNER})
    desired = one(KEY, (RealServer(A),))
    p = plan(desired, observed(kernel), owned, now=100.0)
    assert p.ops == (EditReal(KEY, RealServer(B, weight=0)),)
    assert p.target.draining == {(KEY, B): 100.0}
    kernel.execute(p.ops)
    assert plan(desired, observed(kernel), p.target, now=110.0).ops == ()  # still busy: keep draining
    kernel.set_conns(KEY, B, 0, 0)
    assert plan(desired, observed(kernel), p.target, now=120.0).ops == (DeleteReal(KEY, B),)


def test_drain_timeout_deletes_busy_real() -> None:
    """After the drain timeout a still-busy real server is deleted."""
    kernel = kernel_with(KEY, [RealServer(A), RealServer(B, weight=0)], {B: 3})
    owned = Ownership({KEY: OWNER}, draining={(KEY, B): 0.0})
    assert plan(one(KEY, (RealServer(A),)), observed(kernel), owned, now=61.0, drain_timeout=60).ops == (
        DeleteReal(KEY, B),
    )


def test_returning_endpoint_gets_weight_back_in_place() -> None:
    """A draining real server whose endpoint is ready again is re-weighted, not deleted and re-added."""
    kernel = kernel_with(KEY, [RealServer(A), RealServer(B, weight=0)], {B: 3})
    owned = Ownership({KEY: OWNER}, draining={(KEY, B): 0.0})
    p = plan(one(KEY, (RealServer(A), RealServer(B))), observed(kernel), owned, now=5.0)
    assert p.ops == (EditReal(KEY, RealServer(B)),)
    assert p.target.draining == {}


def test_udp_real_is_deleted_at_once() -> None:
    """UDP real servers are deleted at once even with connections (no drain)."""
    kernel = kernel_with(UKEY, [RealServer(A), RealServer(B)], {B: 3})
    p = plan(one(UKEY, (RealServer(A),)), observed(kernel), Ownership({UKEY: OWNER}))
    assert p.ops == (DeleteReal(UKEY, B),)


def test_scheduler_change_is_an_edit() -> None:
    """Changing the scheduler edits the virtual server in place."""
    kernel = kernel_with(KEY, [RealServer(A)])
    p = plan(one(KEY, (RealServer(A),), scheduler="lc"), observed(kernel), Ownership({KEY: OWNER}))
    assert p.ops == (EditService(VirtualServer(KEY, "lc")),)


def test_foreign_virtual_server_is_a_conflict_unless_adopted() -> None:
    """A desired VIP that exists but is not ours is reported and left alone; --adopt takes it over."""
    kernel = kernel_with(KEY, [RealServer(B, weight=5)])
    desired = one(KEY, (RealServer(A),))
    p = plan(desired, observed(kernel), Ownership())
    assert p.ops == () and len(p.conflicts) == 1 and "not created by ipvsctl" in p.conflicts[0].message
    adopted = plan(desired, observed(kernel), Ownership(), adopt=True)
    assert AddReal(KEY, RealServer(A)) in adopted.ops and KEY in adopted.target.services


def test_held_service_is_not_deleted() -> None:
    """An owned virtual server whose Service input was rejected stays as it is."""
    kernel = kernel_with(KEY, [RealServer(A)])
    desired = Desired(held=frozenset({("ns", "s")}))
    p = plan(desired, observed(kernel), Ownership({KEY: OWNER}))
    assert p.ops == () and KEY in p.target.services


def test_unreadable_file_blocks_deletes() -> None:
    """When a whole file could not be read nothing is deleted: we cannot know what it held."""
    kernel = kernel_with(KEY, [RealServer(A)])
    kernel.execute([BindAddress(KEY.address)])
    owned = Ownership({KEY: OWNER}, frozenset({KEY.address}))
    p = plan(Desired(incomplete=True), observed(kernel), owned)
    assert p.ops == () and p.target == owned


def test_removed_service_is_deleted_and_address_unbound() -> None:
    """An owned virtual server no longer described is deleted and its address unbound."""
    kernel = kernel_with(KEY, [RealServer(A)])
    kernel.execute([BindAddress(KEY.address)])
    p = plan(Desired(), observed(kernel), Ownership({KEY: OWNER}, frozenset({KEY.address})))
    assert p.ops == (DeleteService(KEY), UnbindAddress(KEY.address))
    assert p.target == Ownership()


def test_same_reals_in_any_order_plan_nothing_and_one_difference_is_seen() -> None:
    """The no-change shortcut (kernel order newest first, or want's order) and the general path agree."""
    key = ServiceKey(Protocol.TCP, ip("10.96.0.9"), 80)
    reals = tuple(RealServer(RealKey(ip(f"10.0.0.{i}"), 8080)) for i in range(1, 7))
    shuffled = [reals[i] for i in (3, 0, 5, 1, 4, 2)]
    for order in (list(reals), list(reversed(reals)), shuffled):
        assert plan(one(key, reals), observed(kernel_with(key, order)), Ownership({key: OWNER})).ops == ()
        changed = [replace(r, weight=3) if r.key == reals[2].key else r for r in order]
        p = plan(one(key, reals), observed(kernel_with(key, changed)), Ownership({key: OWNER}))
        assert p.ops == (EditReal(key, reals[2]),)
        extra = [*order, RealServer(RealKey(ip("10.0.0.99"), 8080))][1:]
        p = plan(one(key, reals), observed(kernel_with(key, extra)), Ownership({key: OWNER}))
        assert set(p.ops) == {AddReal(key, order[0]), DeleteReal(key, RealKey(ip("10.0.0.99"), 8080))}
