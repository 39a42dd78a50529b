"""When to reconcile: the agent's level-triggered loop.

Like kube-proxy's bounded-frequency runner: input changes are coalesced and applied no more
often than every ``min_sync_period``; a full resync (reading the whole kernel, repairing drift)
runs every ``sync_period``; while real servers drain, they are checked every ``drain_check``
seconds; Services whose kernel operations failed are retried with backoff. The decision is the
pure function ``next_step``; ``Agent.run`` only waits and calls the engine.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ipvsctl import logs
from ipvsctl.kernel.base import KernelUnavailable
from ipvsctl.settings import Settings

from .engine import Engine, SyncReport
from .health import SyncStatus
from .metrics import Metrics
from .world import World

log = logs.get()


@dataclass(frozen=True)
class Timing:
    min_sync_period: float = 1.0
    sync_period: float = 30.0
    drain_check: float = 2.0


@dataclass
class Clocks:
    """When each kind of sync last started (monotonic seconds)."""

    last_sync: float = -math.inf
    last_full: float = -math.inf
    last_drain: float = -math.inf


def next_step(
    timing: Timing, clocks: Clocks, now: float, pending: bool, draining: bool, retry_due: float | None
) -> tuple[str | None, float]:
    """What to do now ("full", "partial", "drain" or None) and, if nothing, when to look again."""
    if now >= clocks.last_full + timing.sync_period:
        return "full", now
    earliest = clocks.last_sync + timing.min_sync_period
    wants_partial = pending or (retry_due is not None and retry_due <= now)
    drain_at = clocks.last_drain + timing.drain_check
    if wants_partial and now >= earliest:
        return "partial", now
    if draining and now >= max(earliest, drain_at):
        return "drain", now
    wake = [clocks.last_full + timing.sync_period]
    if pending:
        wake.append(earliest)
    if retry_due is not None:
        wake.append(max(earliest, retry_due))
    if draining:
        wake.append(max(earliest, drain_at))
    return None, min(wake)


COLLECTOR_PAUSE = 60.0


@dataclass
class Agent:
    engine: Engine
    world: World
    metrics: Metrics
    timing: Timing = field(default_factory=Timing)
    stop: threading.Event = field(default_factory=threading.Event)
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    clocks: Clocks = field(default_factory=Clocks)
    # The cycle collector was turned off for the start (command.py): the first scan or LIST and
    # the first full sync allocate millions of objects that all live on, which its passes would
    # walk again and again. Turned back on after the first full sync, or after COLLECTOR_PAUSE
    # seconds of waiting for the sources, whichever comes first.
    collector_paused: bool = False
    status: SyncStatus = field(init=False)
    _reload: Settings | None = field(init=False, default=None)
    _reload_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _reported: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.status = SyncStatus(started=self.wall(), ready=False, last_success=None, last_error=None)

    def reload(self, settings: Settings, timing: Timing) -> None:
        """Take new settings at the next step (SIGHUP): every Service is translated again.

        Called from the signal thread while the loop runs: the new settings change hands under a lock."""
        with self._reload_lock:
            self._reload = settings
            self.timing = timing
        self.world.touch(everything=True)

    def run(self) -> None:
        """Wait for the sources' first complete view, then reconcile until ``stop`` is set."""
        generation = 0
        waited = self.monotonic()
        while not self.world.ready and not self.stop.is_set():
            generation = self.world.wait(generation, 0.2)
            if self.collector_paused and self.monotonic() - waited > COLLECTOR_PAUSE:
                self._resume_collector()
        if self.stop.is_set():
            self._resume_collector()
            return
        self._set_status(ready=True, ready_since=self.wall())
        retranslate = True
        while not self.stop.is_set():
            now = self.monotonic()
            changes_pending = self.world.has_changes()
            action, wake = next_step(
                self.timing, self.clocks, now, changes_pending, self.engine.draining, self.engine.next_retry()
            )
            if action is None:
                generation = self.world.wait(generation, min(max(wake - now, 0.0), 0.5))
                continue
            changes = self.world.take()
            with self._reload_lock:
                reloaded, self._reload = self._reload, None
            if reloaded is not None:
                self.engine.settings = reloaded
                retranslate = True
            if changes.everything:
                retranslate = True
            self.clocks.last_sync = now
            if action == "full" or retranslate:
                self.clocks.last_full = now
                ok = self._run("full", lambda c=changes, r=retranslate: self.engine.resync(c.services, retranslate=r))
                retranslate = not ok
                self._resume_collector()
            elif action == "partial":
                refs = set(changes.services) | self.engine.due_retries(now)
                ok = self._run("partial", lambda refs=refs: self.engine.sync(refs))
            else:
                self.clocks.last_drain = now
                ok = self._run("drain", self.engine.drain)
            if not ok:
                self.world.touch(changes.services)  # not lost: the next step takes them again

    def _resume_collector(self) -> None:
        if self.collector_paused:
            self.collector_paused = False
            gc.freeze()  # what the start built stays: out of the collector's sight
            gc.enable()

    def _run(self, kind: str, step: Callable[[], SyncReport]) -> bool:
        started = self.monotonic()
        try:
            report = step()
        except KernelUnavailable as err:
            self._failed(kind, started, f"IPVS unavailable: {err}")
            return False
        except Exception as err:  # a bug must not kill the agent; it is logged and retried next period
            log.exception("sync failed", kind=kind, error=str(err))
            self._failed(kind, started, f"{type(err).__name__}: {err}")
            return False
        if kind == "full":
            # What a full sync leaves is held until the next one: move it out of the cyclic
            # collector's sight, so collections during partial syncs stay small (at 10,000
            # Services a full collection would land in a partial sync now and then).
            gc.freeze()
        self.metrics.observe_sync(kind, report.seconds, True, self.wall())
        self.metrics.count_operations(report.ops, list(report.results))
        if report.repairs:
            self.metrics.count_repairs(report.repairs)
        self.metrics.set_owned(*self.engine.owned_counts())
        problems = self.engine.input_problems()
        self.metrics.set_input_problems(len(problems))
        if kind != "drain":  # a drain check alone does not prove input reaches the kernel
            self._set_status(last_success=self.wall(), last_error=None)
        for conflict in report.conflicts:
            text = str(conflict)
            if text not in self._reported:
                self._reported.add(text)
                log.error("conflict", service=f"{conflict.origin.namespace}/{conflict.origin.name}", problem=text)
        if report.ops or kind == "full":
            log.info(
                "sync",
                kind=kind,
                services=report.services,
                virtual_servers=report.virtual_servers,
                operations=len(report.ops),
                errors=len(report.errors),
                failed_services=len(report.failed),
                conflicts=len(report.conflicts),
                repairs=report.repairs,
                seconds=round(report.seconds, 4),
            )
        return True

    def _failed(self, kind: str, started: float, reason: str) -> None:
        self.metrics.observe_sync(kind, self.monotonic() - started, False, self.wall())
        self._set_status(last_error=reason)
        log.error("sync failed", kind=kind, error=reason)

    def _set_status(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)  # type: ignore[arg-type]
