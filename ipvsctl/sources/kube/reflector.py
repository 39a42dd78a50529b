"""Keeps one resource in step with the API server: list, then watch from the list's resourceVersion.

The loop, after client-go's reflector:

* list → ``on_list(items)``: a full replacement; objects not in it are gone. With ``convert``,
  ``items`` holds what ``convert`` made of each object, as its page arrived.
* watch from the last resourceVersion → ``on_event(type, object)`` for ADDED, MODIFIED, DELETED;
  a BOOKMARK only moves the resourceVersion on, so the next watch starts later.
* 410 Gone (an HTTP status or an ERROR event): the resourceVersion was compacted away: list again.
* any other failure, a dropped stream or a silent one (read timeout): watch again from the last
  resourceVersion after a backoff (exponential, with jitter, reset once a stream stays up).
* the server ending the watch (its timeoutSeconds): watch again at once.

``run`` returns when ``stop`` is set; a blocked request is aborted then, and so is a backoff sleep.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ipvsctl import logs
from ipvsctl.sources.kube.client import Cancel, Client, Gone

log = logs.get()

EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED")


@dataclass(frozen=True)
class Backoff:
    """Delays between failed attempts: ``initial * factor**(n-1)``, at most ``cap``, spread by ``jitter``."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.25  # a fraction of the delay, spread both ways
    healthy_after: float = 30.0  # a watch that stayed up this long resets the count of failures

    def delay(self, failures: int, rand: float) -> float:
        """The delay after the ``failures``-th failure in a row (1-based); ``rand`` in [0, 1)."""
        base = min(self.cap, self.initial * self.factor ** max(0, failures - 1))
        return min(self.cap, base * (1.0 + self.jitter * (2.0 * rand - 1.0)))


DEFAULT_BACKOFF = Backoff()


class _HandlerFailed(Exception):
    """on_list/on_event raised: a bug, or data it could not take. Listing again starts clean."""


class Reflector:
    """Lists and watches ``path``; calls ``on_list`` and ``on_event`` from the thread that runs it."""

    def __init__(
        self,
        client: Client,
        path: str,
        kind: str,
        on_list: Callable[[list[Any]], None],
        on_event: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
        *,
        params: Mapping[str, str] | None = None,
        convert: Callable[[dict[str, Any]], Any] | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        watch_timeout: int = 300,
        read_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.path = path
        self.kind = kind
        self.on_list = on_list
        self.on_event = on_event
        self.stop = stop
        self.params = dict(params or {})
        self.convert = convert
        self.backoff = backoff
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout
        self._clock = clock
        self._sleep = sleep if sleep is not None else stop.wait
        self._rand = rand
        self._cancel = Cancel()
        self._failures = 0
        self.resource_version = ""  # the last one seen; "" before the first list

    def run(self) -> None:
        """The loop; returns once ``stop`` is set."""
        waker = threading.Thread(target=self._wake_on_stop, name=f"kube-{self.kind}-stop", daemon=True)
        waker.start()
        try:
            self._loop()
        finally:
            if self.stop.is_set():
                waker.join()

    def _wake_on_stop(self) -> None:
        self.stop.wait()
        self._cancel.cancel()

    def _loop(self) -> None:
        listed = fresh = False
        while not self.stop.is_set():
            if not listed:
                if not self._list():
                    continue
                listed = True
                fresh = True  # this watch starts from a list just taken
            try:
                early = self._watch()
            except Gone as err:
                if self.stop.is_set():
                    break
                listed = False
                if fresh:  # gone straight after a list: the server is confused; do not spin
                    self._fail("watch expired straight after a list", err)
                else:
                    log.info("watch expired; listing again", resource=self.kind, error=str(err))
            except _HandlerFailed as err:
                listed = False
                self._fail("handling an event failed", err.__cause__ or err)
            except Exception as err:
                if self.stop.is_set():
                    break
                self._fail("watch failed", err)
            else:
                if early:
                    self._fail("watch ended early", None)
            fresh = False

    def _list(self) -> bool:
        try:
            items, rv = self.client.list(self.path, self.params, cancel=self._cancel, convert=self.convert)
        except Exception as err:
            if not self.stop.is_set():
                self._fail("list failed", err)
            return False
        try:
            self.on_list(items)
        except Exception as err:
            log.exception("handling a list failed", resource=self.kind)
            self._fail("handling a list failed", err)
            return False
        log.info("listed", resource=self.kind, count=len(items), resource_version=rv)
        self.resource_version = rv
        return True

    def _watch(self) -> bool:
        """One watch stream, to its end. True if it ended suspiciously early: no events, well before its timeout."""
        timeout = max(1, round(self.watch_timeout * (1.0 + 0.2 * self._rand())))
        started = self._clock()
        events = 0
        stream = self.client.watch(
            self.path,
            self.resource_version,
            timeout,
            self.params,
            read_timeout=self.read_timeout,
            cancel=self._cancel,
        )
        log.debug("watching", resource=self.kind, resource_version=self.resource_version)
        try:
            for event in stream:
                if self.stop.is_set():
                    return False
                if self._clock() - started >= self.backoff.healthy_after:
                    self._failures = 0
                self._handle(event)
                events += 1
        except Exception:
            if self._clock() - started >= self.backoff.healthy_after:
                self._failures = 0
            raise
        finally:
            stream.close()
        if events == 0 and self._clock() - started < timeout / 2 and not self.stop.is_set():
            return True
        self._failures = 0
        return False

    def _handle(self, event: dict[str, Any]) -> None:
        kind, obj = event["type"], event["object"]
        meta = obj.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if kind in EVENT_TYPES:
            try:
                self.on_event(kind, obj)
            except Exception as err:
                log.exception("handling an event failed", resource=self.kind, event_type=kind)
                raise _HandlerFailed(str(err)) from err
        elif kind != "BOOKMARK":
            log.warning("unknown watch event", resource=self.kind, event_type=str(kind))
        if isinstance(rv, str) and rv:
            self.resource_version = rv

    def _fail(self, what: str, err: BaseException | None) -> None:
        self._failures += 1
        delay = self.backoff.delay(self._failures, self._rand())
        log.warning(what, resource=self.kind, error=_describe(err), retry_in=round(delay, 3))
        self._sleep(delay)


def _describe(err: BaseException | None) -> str:
    if err is None:
        return "no events before the stream ended"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
