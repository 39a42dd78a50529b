"""The standalone agent's health checker: one asyncio loop on a thread of its own, one task per
checked real server, at most ``limit`` checks in flight.

The engine tells it, per Service, the check and the endpoints to check (``watch``; ``forget``
when the Service goes). Each task checks its endpoint every ``interval`` (``retry_delay`` after a
failure that has not yet taken it out), counts failures and successes in a row, and when a
server crosses ``failures`` or ``successes`` records the new state, logs one ``health changed``
event and calls ``on_change(service)`` (the agent: a partial sync of that Service). The engine
reads the states with ``verdict``. Checks never hold the engine: it only reads a dictionary.

With ``report``, the states are also written to that file for ``ipvsctl list`` (``report.py``),
at most every REPORT_DELAY seconds, by a thread of its own; the file goes when the checker closes.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ipvsctl import logs
from ipvsctl.checks import report
from ipvsctl.checks.probe import probe
from ipvsctl.checks.spec import CheckSpec
from ipvsctl.model.ipvs import IPAddress

log = logs.get()

ServiceRef = tuple[str, str]
Target = tuple[IPAddress, int]  # endpoint address and port
DEFAULT_LIMIT = 512
REPORT_DELAY = 0.2


@dataclass(frozen=True, slots=True)
class Result:
    """What the checker knows of one real server."""

    healthy: bool | None  # None: not yet decided (in rotation, as keepalived starts its servers)
    reason: str = ""
    since: float = 0.0  # wall clock of the last change
    seconds: float = 0.0  # the last check's duration


class Checker:
    def __init__(
        self,
        on_change: Callable[[ServiceRef], None],
        *,
        limit: int = DEFAULT_LIMIT,
        on_result: Callable[[ServiceRef, Target, str, bool, float], None] | None = None,
        on_state: Callable[[ServiceRef, Target, bool | None], None] | None = None,
        report_path: Path | None = None,
    ) -> None:
        self._on_change = on_change
        self._on_result = on_result  # every check: (service, target, kind, healthy, seconds), for metrics
        self._on_state = on_state  # every state change, and None when a target is forgotten
        self._limit = limit
        self._lock = threading.Lock()
        self._results: dict[tuple[ServiceRef, Target], Result] = {}
        self._watched: dict[ServiceRef, tuple[CheckSpec, frozenset[Target]]] = {}
        self._tasks: dict[tuple[ServiceRef, Target], asyncio.Task[None]] = {}
        self._loop = asyncio.new_event_loop()
        self._semaphore: asyncio.Semaphore | None = None
        self._report = report_path
        self._report_pending: asyncio.TimerHandle | None = None
        self._writer = ThreadPoolExecutor(1, "health-report") if report_path else None  # one: writes stay in order
        self._report_failed = False
        self._thread = threading.Thread(target=self._run, name="health-checks", daemon=True)
        self._thread.start()

    # --- called from the engine's thread ---

    def watch(self, service: ServiceRef, spec: CheckSpec, targets: Iterable[Target]) -> None:
        """Check these endpoints of the Service with this check (replacing what was watched)."""
        wanted = (spec, frozenset(targets))
        with self._lock:
            if self._watched.get(service) == wanted:
                return
            self._watched[service] = wanted
        self._loop.call_soon_threadsafe(self._reschedule, service)

    def forget(self, service: ServiceRef) -> None:
        with self._lock:
            if self._watched.pop(service, None) is None:
                return
        self._loop.call_soon_threadsafe(self._reschedule, service)

    def verdict(self, service: ServiceRef, address: IPAddress, port: int) -> bool | None:
        result = self._results.get((service, (address, port)))  # one dict read: safe without the lock
        return None if result is None else result.healthy

    def results(self) -> dict[tuple[ServiceRef, Target], Result]:
        with self._lock:
            return dict(self._results)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if self._writer is not None and self._report is not None:
            self._writer.shutdown(wait=True)
            report.remove(self._report)

    # --- on the checker's thread ---

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._semaphore = asyncio.Semaphore(self._limit)
        try:
            self._loop.run_forever()
        finally:
            for task in self._tasks.values():
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*self._tasks.values(), return_exceptions=True))
            self._loop.close()

    def _reschedule(self, service: ServiceRef) -> None:
        with self._lock:
            spec, targets = self._watched.get(service, (None, frozenset()))
        for key in [k for k in self._tasks if k[0] == service]:
            task_spec = getattr(self._tasks[key], "spec", None)
            if key[1] not in targets or task_spec != spec:
                self._tasks.pop(key).cancel()
                with self._lock:
                    self._results.pop(key, None)
                if self._on_state:
                    self._on_state(service, key[1], None)
        self._report_soon()
        if spec is None:
            return
        for target in targets:
            key = (service, target)
            if key not in self._tasks:
                task = self._loop.create_task(self._check_forever(service, target, spec))
                task.spec = spec  # type: ignore[attr-defined]
                self._tasks[key] = task

    async def _check_forever(self, service: ServiceRef, target: Target, spec: CheckSpec) -> None:
        address, endpoint_port = target
        port = spec.port or endpoint_port
        name = f"{service[0]}/{service[1]}"
        # spread the first checks of many servers over one interval: 10,000 servers on 5 s are then
        # 2,000 checks a second, not 10,000 at once every 5 s (scripts/bench-checks)
        await asyncio.sleep(spec.warmup + random.uniform(0, spec.interval))
        failures = successes = 0
        state: bool | None = None
        assert self._semaphore is not None
        while True:
            async with self._semaphore:
                started = time.monotonic()
                healthy, reason = await probe(spec, address, port, name)
                took = time.monotonic() - started
            if self._on_result:
                self._on_result(service, target, spec.kind, healthy, took)
            if healthy:
                successes, failures = successes + 1, 0
            else:
                failures, successes = failures + 1, 0
            new = state
            if healthy and state is not True and successes >= (spec.successes if state is False else 1):
                new = True
            elif not healthy and state is not False and failures >= spec.failures:
                new = False
            with self._lock:
                self._results[(service, target)] = Result(
                    new, reason, time.time() if new != state else self._since(service, target), took
                )
            if new != state:
                self._changed(service, target, spec, state, new, reason)
                state = new
            pending_failure = not healthy and state is not False
            await asyncio.sleep(spec.retry_delay if pending_failure else spec.interval)

    def _since(self, service: ServiceRef, target: Target) -> float:
        old = self._results.get((service, target))
        return old.since if old else 0.0

    def _changed(
        self, service: ServiceRef, target: Target, spec: CheckSpec, old: bool | None, new: bool | None, reason: str
    ) -> None:
        address, port = target
        check_port = spec.port or port
        server = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
        log.info(
            "health changed",
            service=f"{service[0]}/{service[1]}",
            server=server,
            check=f"{spec.kind} port {check_port}",
            state="up" if new else "down",
            was="unknown" if old is None else ("up" if old else "down"),
            reason=reason,
        )
        if self._on_state:
            self._on_state(service, target, new)
        self._report_soon()
        if old is not None or new is False:  # unknown → up changes nothing in the kernel
            self._on_change(service)

    def _report_soon(self) -> None:
        if self._writer is None or self._report_pending is not None:
            return
        self._report_pending = self._loop.call_later(REPORT_DELAY, self._write_report)

    def _write_report(self) -> None:
        self._report_pending = None
        servers: dict[report.HealthKey, report.Health] = {}
        with self._lock:
            for service, (spec, targets) in self._watched.items():
                for address, port in targets:
                    result = self._results.get((service, (address, port)))
                    state = (
                        "unknown" if result is None or result.healthy is None else ("up" if result.healthy else "down")
                    )
                    servers[(service[0], service[1], address, port)] = report.Health(
                        spec.kind, spec.port or port, state, result.reason if result else "",
                        result.since if result and result.healthy is not None else 0.0,
                    )  # fmt: skip
        assert self._writer is not None
        self._writer.submit(self._write, servers)

    def _write(self, servers: dict[report.HealthKey, report.Health]) -> None:
        assert self._report is not None
        try:
            report.write(self._report, servers)
        except OSError as err:
            if not self._report_failed:
                self._report_failed = True
                log.warning("health report not written", path=str(self._report), reason=err.strerror or str(err))
