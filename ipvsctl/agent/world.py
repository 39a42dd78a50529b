"""The agent's view of its input: every Service and endpoint slice its sources have told it about.

Sources (the manifest directory, the Kubernetes API) run in their own threads and call
``put``/``remove``/``replace_kind``/``report``; the reconcile loop calls ``take`` to learn which
Services changed since it last looked. All methods are thread-safe.

An object is known by an ObjectKey ``(source, kind, namespace, name)``; one object may carry
several values (a v1 Endpoints object becomes one slice per subset). A source that cannot parse
an object does not ``put`` it: the last good value stays in force, and ``report`` records why.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ipvsctl.errors import Problem
from ipvsctl.model.ipvs import IPAddress
from ipvsctl.model.k8s import EndpointSlice, Service

from .index import Index

ObjectKey = tuple[str, str, str, str]  # (source, kind, namespace, name)
ServiceRef = tuple[str, str]  # (namespace, name)
Value = Service | EndpointSlice


def service_ref(value: Value) -> ServiceRef:
    if isinstance(value, Service):
        return (value.namespace, value.name)
    return (value.namespace, value.service_name)


@dataclass(frozen=True)
class Changes:
    """What ``take`` hands the reconcile loop."""

    services: frozenset[ServiceRef] = frozenset()  # Services whose input changed
    everything: bool = False  # node addresses changed: every Service must be translated again
    ready: bool = False  # every source has delivered its first complete view

    @property
    def empty(self) -> bool:
        return not self.services and not self.everything


@dataclass
class _Index:
    objects: dict[ObjectKey, tuple[Value, ...]] = field(default_factory=dict)
    by_service: Index[ServiceRef, ObjectKey] = field(default_factory=Index)


class World:
    def __init__(self, sources: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._index = _Index()
        self._problems: dict[ObjectKey, tuple[Problem, ...]] = {}
        # keys by source (an object's key starts with it), so that one file's or one list's
        # replacement costs its own objects, not every object's (10,000 files: 10,000 replacements)
        self._by_source: dict[str, set[ObjectKey]] = {}
        self._problems_by_source: dict[str, set[ObjectKey]] = {}
        self._dirty: set[ServiceRef] = set()
        self._everything = False
        self._waiting = set(sources)  # sources whose first complete view has not arrived
        self._node_ips: tuple[IPAddress, ...] | None = None
        self._incomplete: set[str] = set()
        self.generation = 0  # bumped on every change; lets waiters tell news from old state

    # --- written by sources ---

    def put(self, key: ObjectKey, values: Sequence[Value]) -> None:
        with self._lock:
            self._put(key, tuple(values))
            self._notify()

    def remove(self, key: ObjectKey) -> None:
        with self._lock:
            self._put(key, ())
            self._drop_problem(key)
            self._notify()

    def replace_kind(
        self,
        source: str,
        kind: str | None,
        objects: Mapping[ObjectKey, Sequence[Value]],
        problems: Mapping[ObjectKey, Sequence[Problem]] | None = None,
    ) -> None:
        """A full list of one kind (None: every kind) from one source: objects not in it are gone.

        ``problems``, when given, replaces every problem recorded for that source (and kind)."""
        with self._lock:
            mine = [k for k in self._by_source.get(source, ()) if kind is None or k[1] == kind]
            for key in mine:
                if key not in objects:
                    self._put(key, ())
                    self._drop_problem(key)
            for key, values in objects.items():
                self._put(key, tuple(values))
            if problems is not None:
                for key in [k for k in self._problems_by_source.get(source, ()) if kind is None or k[1] == kind]:
                    self._drop_problem(key)
                for key, found in problems.items():
                    if found:
                        self._set_problem(key, tuple(found))
            self._notify()

    def values(self, key: ObjectKey) -> tuple[Value, ...]:
        """What the World holds for one object (empty if nothing)."""
        with self._lock:
            return self._index.objects.get(key, ())

    def keys(self, source: str) -> set[ObjectKey]:
        with self._lock:
            return set(self._by_source.get(source, ()))

    def report(self, key: ObjectKey, problems: Sequence[Problem]) -> None:
        """Problems with an object's latest version (empty: it is fine now)."""
        with self._lock:
            if problems:
                self._set_problem(key, tuple(problems))
            else:
                self._drop_problem(key)
            self._notify()

    def set_node_ips(self, ips: Sequence[IPAddress]) -> None:
        with self._lock:
            new = tuple(ips)
            if new != self._node_ips:
                self._node_ips = new
                self._everything = True
                self._notify()

    def expect(self, source: str) -> None:
        """Do not count as ready until ``source`` calls mark_ready."""
        with self._lock:
            self._waiting.add(source)

    def set_incomplete(self, source: str, incomplete: bool) -> None:
        """A source could not read part of its input and has no earlier version of it: while
        this holds, nothing may be deleted, since that part may have asked for it."""
        with self._lock:
            if incomplete:
                self._incomplete.add(source)
            else:
                self._incomplete.discard(source)

    def mark_ready(self, source: str) -> None:
        with self._lock:
            if source in self._waiting:
                self._waiting.discard(source)
                self._notify()

    def touch(self, services: Iterable[ServiceRef] = (), everything: bool = False) -> None:
        """Ask for these Services (or all) to be reconciled again, though their input did not change."""
        with self._lock:
            self._dirty.update(services)
            self._everything |= everything
            self._notify()

    # --- read by the reconcile loop ---

    def take(self) -> Changes:
        with self._lock:
            out = Changes(frozenset(self._dirty), self._everything, not self._waiting)
            self._dirty = set()
            self._everything = False
            return out

    def has_changes(self) -> bool:
        with self._lock:
            return bool(self._dirty) or self._everything

    def wait(self, generation: int, timeout: float) -> int:
        """Block until something changes after ``generation`` or ``timeout`` passes; return the generation."""
        with self._changed:
            if self.generation == generation and timeout > 0:
                self._changed.wait(timeout)
            return self.generation

    @property
    def ready(self) -> bool:
        with self._lock:
            return not self._waiting

    @property
    def incomplete(self) -> bool:
        with self._lock:
            return bool(self._incomplete)

    @property
    def node_ips(self) -> tuple[IPAddress, ...] | None:
        """Node addresses a source told us (None: no source knows; use the host's own)."""
        with self._lock:
            return self._node_ips

    def service_refs(self) -> set[ServiceRef]:
        with self._lock:
            return set(self._index.by_service)

    def inputs(self, ref: ServiceRef) -> tuple[Service | None, list[EndpointSlice], list[Problem]]:
        """The Service (first by object key when sources disagree), its slices, and duplicate warnings."""
        with self._lock:
            keys = sorted(self._index.by_service.get(ref))
            services: list[tuple[ObjectKey, Service]] = []
            slices: list[EndpointSlice] = []
            for key in keys:
                for value in self._index.objects[key]:
                    if isinstance(value, Service):
                        if service_ref(value) == ref:
                            services.append((key, value))
                    elif service_ref(value) == ref:
                        slices.append(value)
        problems = [
            Problem(svc.origin, "metadata.name", f"duplicate Service: {services[0][1].origin} is used")
            for _, svc in services[1:]
        ]
        return (services[0][1] if services else None), slices, problems

    def problems(self) -> list[Problem]:
        with self._lock:
            return [p for key in sorted(self._problems) for p in self._problems[key]]

    def problem_refs(self) -> set[ServiceRef]:
        """Services with a rejected object: their virtual servers are held as they are."""
        with self._lock:
            return {(k[2], k[3]) for k in self._problems if k[1] == "Service"}

    # --- internals (lock held) ---

    def _set_problem(self, key: ObjectKey, problems: tuple[Problem, ...]) -> None:
        self._problems[key] = problems
        self._problems_by_source.setdefault(key[0], set()).add(key)

    def _drop_problem(self, key: ObjectKey) -> None:
        if self._problems.pop(key, None) is not None:
            _discard(self._problems_by_source, key)

    def _put(self, key: ObjectKey, values: tuple[Value, ...]) -> None:
        old = self._index.objects.get(key, ())
        if old == values:
            return
        before = {service_ref(v) for v in old}
        after = {service_ref(v) for v in values}
        if values:
            self._index.objects[key] = values
            self._by_source.setdefault(key[0], set()).add(key)
        else:
            self._index.objects.pop(key, None)
            _discard(self._by_source, key)
        for ref in before - after:
            self._index.by_service.discard(ref, key)
        for ref in after:
            self._index.by_service.add(ref, key)
        self._dirty |= before | after

    def _notify(self) -> None:
        self.generation += 1
        self._changed.notify_all()


def _discard(by_source: dict[str, set[ObjectKey]], key: ObjectKey) -> None:
    keys = by_source.get(key[0])
    if keys is not None:
        keys.discard(key)
        if not keys:
            del by_source[key[0]]
