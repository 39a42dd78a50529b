"""The agent's reconcile step: bring the kernel in line for some Services, or for all of them.

The engine keeps, between syncs, each Service's translation and who claims which virtual
server, so a change to one Service costs work for that Service only:

- ``sync(refs)``: translate the changed Services again, read just their virtual servers back
  from the kernel (``Kernel.get``; never a full dump), plan them with the same pure ``plan``
  as the CLI, and execute. This is what endpoint changes trigger.
- ``resync()``: read the whole kernel and plan every Service: drift (owned virtual or real
  servers deleted or edited by hand) is repaired; foreign virtual servers are never touched.
  The virtual servers come from one dump without their real servers, and a summary of every
  virtual server from one read of ``/proc/net/ip_vs`` (``Kernel.summaries``). Those the engine
  wants or owns are read again, one at a time (``Kernel.real_servers``, which skips decoding
  what did not change since the last resync), only when their summary changed since the last
  resync read them, or when it is their turn: every resync reads one in ``DEEP_EVERY`` of them
  anyway, for what the summary does not show (thresholds). What is read is kept at once in the
  compact cache, so a whole dump of every destination is never held next to the cache.
- ``drain()``: re-plan the virtual servers that have draining real servers, reading their
  connection counts fresh, so idle ones are deleted within seconds.

A Service whose operations failed is retried with exponential backoff (``due_retries``).
The loop that decides *when* to call these lives in ``agent/loop.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

from ipvsctl import logs
from ipvsctl.apply import execute
from ipvsctl.checks.spec import PREFIX as CHECK_ANNOTATION
from ipvsctl.checks.spec import spec_of
from ipvsctl.checks.targets import targets_of
from ipvsctl.errors import InputError, Problem
from ipvsctl.kernel.base import Kernel, KernelError
from ipvsctl.model.desired import Desired, DesiredService, Owner
from ipvsctl.model.ipvs import IPAddress, ServiceKey, VirtualServer, VirtualServerState
from ipvsctl.model.k8s import EndpointSlice, Service
from ipvsctl.model.ops import BindAddress, DeleteReal, EditReal, Operation, UnbindAddress, service_of
from ipvsctl.plan import Observed, Ownership, Plan, plan
from ipvsctl.settings import Settings
from ipvsctl.state import Store
from ipvsctl.translate import clash, service_entries

if TYPE_CHECKING:
    from ipvsctl.checks.runner import Checker

from .cache import KernelView, advance
from .index import Index
from .ledger import Ledger
from .world import ServiceRef, World

log = logs.get()

# A full resync reads the real servers of one virtual server in this many over netlink even when
# its summary has not changed: thresholds edited by hand are put back within this many resyncs.
DEEP_EVERY = 8
RETRY_BASE = 1.0
RETRY_CAP = 60.0


@dataclass(frozen=True)
class SyncReport:
    kind: str  # "full", "partial" or "drain"
    services: int  # Services translated again
    virtual_servers: int  # virtual servers planned
    ops: tuple[Operation, ...] = ()
    results: tuple[KernelError | None, ...] = ()
    errors: tuple[KernelError, ...] = ()
    failed: tuple[ServiceRef, ...] = ()  # Services with a kernel error (retried with backoff)
    conflicts: tuple[Problem, ...] = ()
    repairs: int = 0  # full resync only: owned objects put back after drift
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


def _service_of(entry: DesiredService) -> ServiceRef:
    return entry.owner.service


@dataclass
class _Retry:
    attempts: int = 0
    due: float = 0.0


@dataclass
class Engine:
    kernel: Kernel
    store: Store
    settings: Settings
    world: World
    clock: Callable[[], float] = time.time  # wall clock: drain start times are kept in the record
    on_flush: Callable[[int], None] | None = None  # told how many UDP conntrack entries each flush deleted
    # the standalone agent's health checker; None: check annotations are ignored (with one warning
    # per Service when ``warn_checks``, as in --kubernetes mode, where readiness is the kubelet's)
    checks: Checker | None = None
    warn_checks: bool = False
    check_defaults: Mapping[str, str] = field(default_factory=dict)  # the agent config's health-check-defaults
    ledger: Ledger = field(init=False)  # the ownership record, as last written
    # per Service: the virtual servers it asks for (its translation), one entry per key
    entries: dict[ServiceRef, tuple[DesiredService, ...]] = field(init=False, default_factory=dict)
    problems: dict[ServiceRef, list[Problem]] = field(init=False, default_factory=dict)
    held: set[ServiceRef] = field(init=False, default_factory=set)  # translation failed: keep what is there
    # per virtual server: the entries of the Services that ask for it (one per Service)
    claims: Index[ServiceKey, DesiredService] = field(init=False, default_factory=Index)
    observed: KernelView = field(init=False)
    bound: set[IPAddress] = field(init=False, default_factory=set)
    local: set[IPAddress] = field(init=False, default_factory=set)
    node_ips: tuple[IPAddress, ...] = field(init=False, default=())
    retries: dict[ServiceRef, _Retry] = field(init=False, default_factory=dict)
    _owned_by_ref: Index[ServiceRef, ServiceKey] = field(init=False, default_factory=Index)
    _ref_of: dict[ServiceKey, ServiceRef] = field(init=False, default_factory=dict)
    _claimed_at: Index[IPAddress, ServiceKey] = field(init=False, default_factory=Index)
    _unsettled: set[ServiceKey] = field(init=False, default_factory=set)  # translated, not yet resynced
    _record_read: bool = field(init=False, default=True)  # the ledger holds the record as read from disk
    _owned_reals: int = field(init=False, default=0)
    _resyncs: int = field(init=False, default=0)  # full resyncs that read the kernel: whose turn it is
    _warned_checks: set[ServiceRef] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.observed = KernelView(self._winner)
        self.ledger = Ledger(self.store.load())
        self._index_owned(self.ledger.services, ())

    @property
    def owned(self) -> Ownership:
        """The whole ownership record (a copy: O(Services))."""
        return self.ledger.whole()

    # --- the three kinds of sync ---

    def sync(self, refs: Iterable[ServiceRef]) -> SyncReport:
        """Translate these Services again and reconcile only their virtual servers."""
        started = time.monotonic()
        refs = set(refs)
        keys, _ = self._retranslate(refs)
        report = self._reconcile(keys, full=False, considered=refs)
        return replace(report, kind="partial", services=len(refs), seconds=time.monotonic() - started)

    def resync(self, changed: Iterable[ServiceRef] = (), retranslate: bool = False) -> SyncReport:
        """Read the whole kernel and reconcile everything.

        ``changed``: Services whose input changed since the last sync; ``retranslate``: translate
        every Service again (first sync, new settings). Node addresses that changed imply it."""
        started = time.monotonic()
        present = {state.server.key: state.server for state in self.kernel.dump(reals=False)}
        self.bound = set(self.kernel.bound_addresses())
        self.local = set(self.kernel.node_addresses())
        node_ips = self.settings.node_ips or self._node_ips()
        refs = self.world.service_refs()
        refs.update(self.entries)
        refs.update(self._owned_by_ref)
        if retranslate or node_ips != self.node_ips:
            self.node_ips = node_ips
            fresh = self._retranslate(refs)[1]  # not ``_, fresh =``: that would hold the keys to the end
        else:
            fresh = self._retranslate(set(changed))[1]
        # Kept until a resync gets through: one that fails reading the kernel below has already
        # translated, and the retry would find no change and count the new input as drift.
        self._unsettled.update(fresh)
        if self._record_read:
            self._share_record()
        self.bound = {self._shared(a) for a in self.bound}
        keys = set(self.claims)
        keys.update(self.ledger.services)
        self._read_back(keys, present)
        del present
        report = self._reconcile(keys, full=True, considered=refs, fresh=self._unsettled)
        self._unsettled = set()
        return replace(report, kind="full", services=len(refs), seconds=time.monotonic() - started)

    def drain(self) -> SyncReport:
        """Re-plan virtual servers with draining real servers: delete the idle and the timed out."""
        started = time.monotonic()
        keys = {key for key, _ in self.ledger.draining}
        refs = {self._ref_of[k] for k in keys if k in self._ref_of}
        report = self._reconcile(keys, full=False, considered=refs)
        return replace(report, kind="drain", seconds=time.monotonic() - started)

    # --- what the loop asks ---

    @property
    def draining(self) -> bool:
        return bool(self.ledger.draining)

    def due_retries(self, now: float) -> set[ServiceRef]:
        return {ref for ref, r in self.retries.items() if r.due <= now}

    def next_retry(self) -> float | None:
        return min((r.due for r in self.retries.values()), default=None)

    def input_problems(self) -> list[Problem]:
        return [*self.world.problems(), *(p for ps in self.problems.values() for p in ps)]

    def owned_counts(self) -> tuple[int, int, int]:
        """Owned virtual servers, the real servers in them (as last read or since written), draining real servers."""
        return len(self.ledger.services), self._owned_reals, len(self.ledger.draining)

    def _count_reals(self, keys: Iterable[ServiceKey]) -> int:
        observed, owners = self.observed, self.ledger.services
        return sum(observed.count(k) for k in keys if k in owners)

    def _read_back(self, keys: set[ServiceKey], present: Mapping[ServiceKey, VirtualServer]) -> None:
        """Read the real servers of these virtual servers (those the kernel has) into a new cache
        (a full resync), one virtual server at a time, each kept at once, compactly. Where the
        kernel's summary is the one the last full resync read with, the entry is carried over
        without asking (but for one in ``DEEP_EVERY``, in turn); where its answer is the one the
        last full resync read (same digest), without decoding anything."""
        old = self.observed
        view = KernelView(self._winner)
        summaries = self.kernel.summaries() or {}
        self._resyncs += 1
        turn = self._resyncs % DEEP_EVERY
        for key in keys:  # ``keys``' own objects, not the dump's
            server = present.get(key)
            if server is None:
                continue
            summary = summaries.get(key)
            if summary is not None and summary == old.summary(key) and hash(key) % DEEP_EVERY != turn:
                view.carry(key, old, server, summary)
                continue
            digest, reals = self.kernel.real_servers(server, old.digest(key))
            if reals is None:  # a digest is only known along with its entry
                view.carry(key, old, server, summary)
            else:
                view.read(key, VirtualServerState(server, reals), digest, summary)
        self.observed = view

    # --- internals ---

    def _node_ips(self) -> tuple[IPAddress, ...]:
        from_source = self.world.node_ips
        return from_source if from_source is not None else tuple(sorted(self.local, key=str))

    def _retranslate(self, refs: set[ServiceRef]) -> tuple[set[ServiceKey], set[ServiceKey]]:
        """Translate these Services again. Return every virtual server key whose owner may change,
        and those whose wanted state did change (a full resync's operations on the others put
        drift right: translating again, as after a failed sync, is not itself a change)."""
        settings = replace(self.settings, node_ips=self.node_ips)
        keys: set[ServiceKey] = set()
        changed: set[ServiceKey] = set()
        for ref in refs:
            old = {entry.server.key: entry for entry in self.entries.pop(ref, ())}
            for key, entry in old.items():
                self._unclaim(key, entry)
            keys.update(old)  # in place: ``keys |= old.keys()`` would copy ``keys`` for every Service
            keys.update(self._owned_by_ref.get(ref))
            svc, slices, problems = self.world.inputs(ref)
            self.held.discard(ref)
            new: dict[ServiceKey, DesiredService] = {}
            if svc is None and self.checks is not None:
                self.checks.forget(ref)
            if svc is not None:
                try:
                    for entry in self._entries_of(ref, svc, slices, settings):
                        new.setdefault(entry.server.key, entry)
                except InputError as err:
                    if self.checks is not None:
                        self.checks.forget(ref)
                    problems.append(Problem(svc.origin, err.field, err.message))
                    self.held.add(ref)
                    log.error("service rejected", service=f"{ref[0]}/{ref[1]}", problem=str(problems[-1]))
            for key, entry in new.items():
                self.claims.add(key, entry)
                self._claimed_at.add(key.address, key)
            keys.update(new)
            changed.update(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            if new:
                self.entries[ref] = tuple(new.values())
            if problems:
                self.problems[ref] = problems
            else:
                self.problems.pop(ref, None)
        return keys, changed

    def _entries_of(
        self, ref: ServiceRef, svc: Service, slices: list[EndpointSlice], settings: Settings
    ) -> list[DesiredService]:
        """``service_entries``, with the health checker's verdicts when the Service has a check."""
        if self.checks is None:
            if self.warn_checks and ref not in self._warned_checks and svc.annotation(CHECK_ANNOTATION) is not None:
                self._warned_checks.add(ref)
                log.warning(
                    "health check ignored",
                    service=f"{ref[0]}/{ref[1]}",
                    reason="with --kubernetes, readiness is the kubelet's: use a readiness probe",
                )
            return service_entries(svc, slices, settings)
        spec = spec_of(svc, self.check_defaults)
        if spec is None:
            self.checks.forget(ref)
            return service_entries(svc, slices, settings)
        entries = service_entries(
            svc, slices, settings, health=partial(self.checks.verdict, ref), on_failure=spec.on_failure
        )
        self.checks.watch(ref, spec, targets_of(svc, slices))
        return entries

    def _unclaim(self, key: ServiceKey, entry: DesiredService) -> None:
        self.claims.discard(key, entry)
        if key not in self.claims:
            self._claimed_at.discard(key.address, key)

    def _winner(self, key: ServiceKey) -> DesiredService | None:
        """The claim that gets the virtual server: the first Service by (namespace, name)."""
        claimants = self.claims.get(key)
        if len(claimants) == 1:
            return next(iter(claimants))
        return min(claimants, key=_service_of, default=None)

    def _reconcile(
        self, keys: set[ServiceKey], full: bool, considered: set[ServiceRef], fresh: set[ServiceKey] | None = None
    ) -> SyncReport:
        """Plan and execute these virtual servers. ``fresh``: keys whose wanted state just changed
        (their operations are not drift repairs)."""
        if not keys:
            return SyncReport("", 0, 0)
        before = 0 if full else self._count_reals(keys)
        if not full:
            for key in keys:
                state = self.kernel.get(key)
                if state is None:
                    self.observed.pop(key, None)
                else:
                    self.observed[key] = state
        wanted = {key: w for key in keys if (w := self._winner(key)) is not None}
        clashes = [
            clash(key, e, w)
            for key, w in wanted.items()
            for e in sorted(self.claims.get(key), key=_service_of)
            if e is not w
        ]
        held = frozenset(self.held | self.world.problem_refs())
        desired = Desired(wanted, (), held, self.world.incomplete)
        # A partial plan binds or unbinds only its own keys' addresses: it needs to know only those.
        bound = self.bound if full else {k.address for k in keys} & self.bound
        # A full plan asks the cache only about these keys (it holds no others): it is handed the
        # cache itself, whose states are built one at a time as the planner reads them.
        view = self.observed if full else {k: self.observed[k] for k in keys if k in self.observed}
        observed = Observed(view, frozenset(bound), frozenset(self.local))
        sub = self.ledger.whole() if full else self.ledger.part(keys, lambda a: self._claimed_outside(a, keys))
        now = self.clock()
        p = plan(desired, observed, sub, adopt=self.settings.adopt, now=now, drain_timeout=self.settings.drain_timeout)
        if full:
            results, final = execute(p, self.kernel, sub, lambda _b, after: self.store.save(after), self.on_flush)
            if self.store.patches:
                self.store.save(final)  # fold the journal into the record
            self.ledger = Ledger(final)
            self._record_read = False
        else:
            results, final = execute(p, self.kernel, sub, self._patch, self.on_flush)
        self._index_owned(final.services, keys)
        advance(self.observed, p.ops, results)
        if full:
            self._owned_reals = self._count_reals(self.ledger.services)
        else:
            self._owned_reals += self._count_reals(keys) - before
        for op, res in zip(p.ops, results, strict=True):
            if res is None and isinstance(op, BindAddress):
                self.bound.add(op.address)
            elif res is None and isinstance(op, UnbindAddress):
                self.bound.discard(op.address)
        errors = tuple(r for r in results if r is not None)
        failed = self._track_failures(p, results, considered)
        for err in errors:
            key = service_of(err.op)
            if key is None and isinstance(err.op, BindAddress | UnbindAddress):  # the Service at that address
                at = (k for k in (*wanted, *sub.services) if k.address == err.op.address)
                key = min(at, key=ServiceKey.sort_key, default=None)
            owner = wanted[key].owner if key in wanted else self.ledger.services.get(key) if key else None
            if owner is None and key is not None:
                owner = sub.services.get(key)  # an unbind's Service, deleted in this sync
            log.error("kernel refused an operation", service=str(owner) if owner else None, error=err.message)
        repairs = self._count_repairs(p, sub, fresh or set()) if full else 0
        return SyncReport(
            "", 0, len(keys), p.ops, tuple(results), errors, tuple(sorted(failed)), (*p.conflicts, *clashes), repairs
        )

    def _claimed_outside(self, address: IPAddress, keys: set[ServiceKey]) -> bool:
        """Does a Service want a virtual server at this address other than these?"""
        return any(k not in keys for k in self._claimed_at.get(address))

    def _patch(self, before: Ownership, after: Ownership) -> None:
        """A partial sync's change of the record: a journal line, and the same patch in memory."""
        self.store.append(before, after)
        self.ledger.patch(before, after)

    def _share_record(self) -> None:
        """Hold the ownership record read from disk in the translation's own objects where they
        are equal (virtual server keys, owners, addresses): the first full sync would otherwise
        carry both copies, at 10,000 Services some 4 MB."""
        services: dict[ServiceKey, Owner] = {}
        for key, owner in self.ledger.services.items():
            wanted = self._winner(key)
            if wanted is None:
                services[key] = owner
            else:  # the equal key as translation made it, and its owner if the same
                services[wanted.server.key] = wanted.owner if wanted.owner == owner else owner
        addresses = frozenset(self._shared(a) for a in self.ledger.addresses)
        self.ledger = Ledger(Ownership(services, addresses, self.ledger.draining))
        self._ref_of.clear()
        self._owned_by_ref = Index()
        self._index_owned(self.ledger.services, ())
        self._record_read = False

    def _shared(self, address: IPAddress) -> IPAddress:
        """The translation's own object for an address read from the kernel or the record."""
        at = self._claimed_at.get(address)
        return next(iter(at)).address if at else address

    def _index_owned(self, services: Mapping[ServiceKey, Owner], keys: Iterable[ServiceKey]) -> None:
        """Keep the Service → owned keys index in step for the re-planned keys (all keys at start)."""
        for key in keys:
            ref = self._ref_of.pop(key, None)
            if ref is not None:
                self._owned_by_ref.discard(ref, key)
        for key in keys or services:
            owner = services.get(key)
            if owner is not None:
                ref = owner.service
                self._owned_by_ref.add(ref, key)
                self._ref_of[key] = ref

    def _track_failures(
        self, p: Plan, results: list[KernelError | None], considered: set[ServiceRef]
    ) -> set[ServiceRef]:
        """Services with a failed operation get a retry with exponential backoff; the rest are done."""
        failed: set[ServiceRef] = set()
        for op, res in zip(p.ops, results, strict=True):
            if res is not None and isinstance(op, BindAddress):  # retried as the Services at that address
                claimed = (self._winner(k) for k in self._claimed_at.get(op.address))
                failed.update(w.owner.service for w in claimed if w is not None)
            key = service_of(op)
            if res is None or key is None:
                continue
            winner = self._winner(key)
            ref = winner.owner.service if winner else self._ref_of.get(key)
            if ref is not None:
                failed.add(ref)
        for ref in considered - failed:
            self.retries.pop(ref, None)
        for ref in failed:
            r = self.retries.setdefault(ref, _Retry())
            r.attempts += 1
            r.due = time.monotonic() + min(RETRY_CAP, RETRY_BASE * 2 ** (r.attempts - 1))
        return failed

    def _count_repairs(self, p: Plan, sub: Ownership, fresh: set[ServiceKey]) -> int:
        """Operations of a full resync that put drift right (drain progress and new input are not drift)."""
        n = 0
        for op in p.ops:
            if service_of(op) in fresh or isinstance(op, BindAddress | UnbindAddress):
                continue
            if isinstance(op, DeleteReal) and (op.service, op.key) in sub.draining:
                continue
            if isinstance(op, EditReal) and op.server.weight == 0:
                continue  # a real server starting to drain
            n += 1
        return n
