"""Run a plan against a kernel and keep the ownership record true at every instant.

Order of writes: (1) record the union of what we own and what we are about to create,
(2) execute the operations, (3) record what we own now. A crash between (1) and (3) leaves
claims on objects that may not exist; the next run forgets those.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ipvsctl.kernel.base import Kernel, KernelError
from ipvsctl.model.desired import Desired, Owner
from ipvsctl.model.ipvs import Protocol, RealKey, ServiceKey
from ipvsctl.model.ops import (
    AddService,
    BindAddress,
    DeleteReal,
    DeleteService,
    Operation,
    UnbindAddress,
    service_of,
)
from ipvsctl.plan import Observed, Ownership, Plan, plan
from ipvsctl.settings import DEFAULT_SYSCTLS, Settings
from ipvsctl.state import Store


@dataclass(frozen=True)
class Result:
    plan: Plan
    errors: tuple[KernelError, ...] = ()
    owners: dict[ServiceKey, Owner] = field(default_factory=dict)
    # wall time of each phase: "kernel read", "manifests" (load + translate), "plan", "program"
    seconds: dict[str, float] = field(default_factory=dict)

    def failures(self) -> list[tuple[Owner | None, KernelError]]:
        """Kernel errors with the Service port they concern (first error per virtual server)."""
        seen: set[object] = set()
        out: list[tuple[Owner | None, KernelError]] = []
        for err in self.errors:
            key = service_of(err.op)
            if key is not None and key in seen:
                continue  # later errors on the same virtual server follow from the first
            seen.add(key)
            if key is None and isinstance(err.op, BindAddress | UnbindAddress):  # the Service at that address
                at = (k for k in self.owners if k.address == err.op.address)
                key = min(at, key=ServiceKey.sort_key, default=None)
            out.append((self.owners.get(key) if key else None, err))
        return out


def observe(kernel: Kernel) -> Observed:
    services = {state.server.key: state for state in kernel.dump()}
    return Observed(services, frozenset(kernel.bound_addresses()), frozenset(kernel.node_addresses()))


def settle(
    owned: Ownership, target: Ownership, ops: tuple[Operation, ...], results: list[KernelError | None]
) -> Ownership:
    """The record after execution: the target, corrected by what failed."""
    services = dict(target.services)
    addresses = set(target.addresses)
    for op, res in zip(ops, results, strict=True):
        if res is None:
            continue
        if isinstance(op, AddService):
            services.pop(op.server.key, None)  # not created (EEXIST: someone else's)
        elif isinstance(op, DeleteService) and res.errno != errno.ESRCH and op.key in owned.services:
            services[op.key] = owned.services[op.key]
        elif isinstance(op, BindAddress) and res.errno != errno.EEXIST:
            addresses.discard(op.address)
        elif isinstance(op, UnbindAddress) and res.errno != errno.EADDRNOTAVAIL:
            addresses.add(op.address)
    draining = {k: v for k, v in target.draining.items() if k[0] in services}
    return Ownership(services, frozenset(addresses), draining)


Write = Callable[[Ownership, Ownership], None]


def execute(
    p: Plan,
    kernel: Kernel,
    owned: Ownership,
    write: Write,
    on_flush: Callable[[int], None] | None = None,
) -> tuple[list[KernelError | None], Ownership]:
    """Record intent, write to the kernel, record the outcome. Returns the results and the record now held.

    ``write(before, after)`` records a change of the record: ``Store.save(after)`` for the
    whole record, or a journal patch when ``owned`` and the plan's target are a slice of it
    (the agent's partial syncs). Then flush the UDP conntrack entries of removed real servers
    (``flush_udp_conntrack``); ``on_flush`` gets the number of entries each flush deleted."""
    intent = Ownership(
        {**owned.services, **p.target.services},
        owned.addresses | p.target.addresses,
        {**owned.draining, **p.target.draining},
    )
    if intent != owned:
        write(owned, intent)
    results = kernel.execute(p.ops) if p.ops else []
    final = settle(owned, p.target, p.ops, results)
    if final != intent:
        write(intent, final)
    flush_udp_conntrack(kernel, p.ops, results, on_flush)
    return results, final


def flush_udp_conntrack(
    kernel: Kernel,
    ops: tuple[Operation, ...],
    results: list[KernelError | None],
    on_flush: Callable[[int], None] | None = None,
) -> None:
    """After a UDP real server (or a whole UDP virtual server) is gone, delete the conntrack entries
    of flows to it: otherwise a client that keeps its source port matches the stale entry, whose
    reply comes from the removed backend, and is blackholed (kube-proxy's k8s #71514, #76664).
    Only operations that succeeded count."""
    for op, res in zip(ops, results, strict=True):
        if res is not None:
            continue
        real: RealKey | None
        if isinstance(op, DeleteReal):
            key, real = op.service, op.key
        elif isinstance(op, DeleteService):
            key, real = op.key, None
        else:
            continue
        if key.protocol != Protocol.UDP:
            continue
        n = kernel.flush_conntrack(key, real)
        if on_flush is not None:
            on_flush(n)
        if n > 0:
            from ipvsctl import logs  # here: a diff never deletes, and never loads the logging library

            logs.get().info("conntrack entries deleted", service=str(key), real=str(real) if real else "any", count=n)


def sync(
    desired: Desired,
    kernel: Kernel,
    store: Store,
    settings: Settings,
    *,
    dry_run: bool = False,
    observed: Observed | None = None,
) -> Result:
    """Make what ipvsctl owns equal to ``desired``. The caller holds the lock.

    ``observed``: the kernel as the caller already read it (under the same lock), or None to read it here."""
    seconds: dict[str, float] = {}
    owned = store.load()
    if observed is None:
        started = time.perf_counter()
        observed = observe(kernel)
        seconds["kernel read"] = time.perf_counter() - started
    started = time.perf_counter()
    p = plan(desired, observed, owned, adopt=settings.adopt, now=time.time(), drain_timeout=settings.drain_timeout)
    seconds["plan"] = time.perf_counter() - started
    owners = {**owned.services, **p.target.services}
    if dry_run:
        return Result(p, (), owners, seconds)
    started = time.perf_counter()
    if settings.set_sysctls:
        kernel.set_sysctls(DEFAULT_SYSCTLS)
    results, _ = execute(p, kernel, owned, lambda _before, after: store.save(after))
    seconds["program"] = time.perf_counter() - started
    return Result(p, tuple(r for r in results if r is not None), owners, seconds)
