"""Pure: desired state vs what the kernel holds and what we own → ordered operations.

Rules:
- only owned virtual servers (or, with adopt, desired ones that exist) are ever edited or deleted;
- a desired virtual server that exists and is not ours is a conflict for its Service;
- changes of scheduler, flags, persistence or weight are edits, never delete+add;
- a real server that leaves a TCP virtual server is drained (weight 0) while it has
  connections, and deleted once idle or when its drain timeout has passed; UDP and SCTP
  real servers are deleted at once;
- nothing is deleted for Services whose input was rejected, or when a whole file was unreadable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ipvsctl.errors import Problem
from ipvsctl.model.desired import Desired, Owner, RealServers, RealServerStates
from ipvsctl.model.ipvs import (
    IPAddress,
    Protocol,
    RealKey,
    RealServer,
    RealServerState,
    ServiceKey,
    VirtualServerState,
    address_sort_key,
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

DrainKey = tuple[ServiceKey, RealKey]


@dataclass(frozen=True)
class Observed:
    """What the kernel holds now."""

    services: Mapping[ServiceKey, VirtualServerState] = field(default_factory=dict)
    bound: frozenset[IPAddress] = frozenset()  # on our dummy interface
    local: frozenset[IPAddress] = frozenset()  # on any other interface


@dataclass(frozen=True)
class Ownership:
    """What ipvsctl created (the record under /run/ipvsctl)."""

    services: Mapping[ServiceKey, Owner] = field(default_factory=dict)
    addresses: frozenset[IPAddress] = frozenset()
    draining: Mapping[DrainKey, float] = field(default_factory=dict)  # drain start (epoch seconds)


@dataclass(frozen=True)
class Plan:
    ops: tuple[Operation, ...]
    # the ownership record to hold once every operation has succeeded
    target: Ownership
    conflicts: tuple[Problem, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.ops


def drain_step(
    key: ServiceKey, real: RealServerState, started: float | None, now: float, timeout: float
) -> tuple[Operation | None, float | None]:
    """What to do with a real server that should no longer take traffic: (operation, drain start)."""
    if key.protocol != Protocol.TCP:
        return DeleteReal(key, real.server.key), None
    if real.active_conns + real.inactive_conns == 0:
        return DeleteReal(key, real.server.key), None
    started = now if started is None else started
    if now - started >= timeout:
        return DeleteReal(key, real.server.key), None
    if real.server.weight != 0:
        return EditReal(key, replace(real.server, weight=0)), started
    return None, started


def _same_reals(have: tuple[RealServerState, ...], want: tuple[RealServer, ...]) -> bool:
    """True when the kernel holds exactly the wanted real servers, as written: in the order the
    kernel lists them after adding them in ``want``'s order (newest first), or in ``want``'s own.

    A shortcut for the common case of a resync that finds nothing to do: one tuple comparison
    instead of a dictionary per virtual server. Any other order takes the general path."""
    if isinstance(have, RealServerStates) and have.configs == want:
        return True  # the agent's cache: the kernel holds these very configurations, packed
    if len(have) != len(want):
        return False
    servers = tuple([r.server for r in reversed(have)])
    return servers == want or servers[::-1] == want


def plan(
    desired: Desired,
    observed: Observed,
    owned: Ownership,
    *,
    adopt: bool = False,
    now: float = 0.0,
    drain_timeout: float = 60.0,
) -> Plan:
    binds: list[Operation] = []
    adds: list[Operation] = []
    edits: list[Operation] = []
    removals: list[Operation] = []
    service_deletes: list[Operation] = []
    unbinds: list[Operation] = []
    conflicts: list[Problem] = []
    owners: dict[ServiceKey, Owner] = {}
    draining: dict[DrainKey, float] = {}
    want_bound: set[IPAddress] = set()

    for key, want in desired.services.items():
        have = observed.services.get(key)
        if have is not None and key not in owned.services and not adopt:
            conflicts.append(
                Problem(
                    want.origin,
                    "spec",
                    f"virtual server {key} already exists and was not created by ipvsctl "
                    "(left untouched; use --adopt to take it over)",
                )
            )
            continue
        owners[key] = want.owner
        if want.bind:
            want_bound.add(key.address)
        if have is None:
            adds.append(AddService(want.server))
            adds.extend(add_reals(key, want.reals))
            continue
        if not have.server.same_config(want.server):
            edits.append(EditService(want.server))
        if _same_reals(have.real_servers, want.reals):
            continue
        have_reals = {r.server.key: r for r in have.real_servers}
        for real in want.reals:
            current = have_reals.pop(real.key, None)
            if current is None:
                adds.append(AddReal(key, real))
            elif not current.server.same_config(real):
                edits.append(EditReal(key, real))
        for rkey, current in have_reals.items():
            op, started = drain_step(key, current, owned.draining.get((key, rkey)), now, drain_timeout)
            if op is not None:
                removals.append(op)
            if started is not None:
                draining[(key, rkey)] = started

    for key, owner in owned.services.items():
        if key in owners:
            continue
        keep = desired.incomplete or owner.service in desired.held
        if keep:
            owners[key] = owner
            if key.address in owned.addresses:
                want_bound.add(key.address)
            draining.update({k: v for k, v in owned.draining.items() if k[0] == key})
        elif key in observed.services:
            service_deletes.append(DeleteService(key))

    want_bound -= observed.local
    for addr in sorted(want_bound - observed.bound, key=address_sort_key):
        binds.append(BindAddress(addr))
    addresses = set(want_bound)
    for addr in sorted(owned.addresses - want_bound, key=address_sort_key):
        if desired.incomplete:
            addresses.add(addr)
        elif addr in observed.bound:
            unbinds.append(UnbindAddress(addr))

    ops = (*binds, *adds, *edits, *removals, *service_deletes, *unbinds)
    target = Ownership(owners, frozenset(addresses), draining)
    return Plan(tuple(ops), target, tuple(conflicts))


def add_reals(service: ServiceKey, reals: Sequence[RealServer]) -> list[AddReal]:
    """One ``AddReal`` per real server, in order; those of a translation's plain IPv4 packed
    real servers hold the packed sequence and a position (``AddReal.at``)."""
    if isinstance(reals, RealServers) and reals.plain_v4():
        return [AddReal.at(service, reals, i) for i in range(len(reals))]
    return [AddReal(service, r) for r in reals]
