"""Is the agent alive and keeping IPVS in step? A pure function of its sync status and the time.

``health`` answers the liveness question (/healthz); readiness (/readyz) is "the sources have
delivered their first complete view, and ``health`` says yes". Both come with a reason a person
can read, for the 200 as well as the 503.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncStatus:
    """What the reconcile loop reports about itself. Times are epoch seconds.

    ``last_success`` is the end of the last successful full or partial sync (a drain check does
    not count: it runs whether or not the input or the kernel can be read). ``last_error`` is
    the error of the last failed sync, kept after later successes for the reason text.
    ``ready_since``, if the loop records it, is when ``ready`` became true; it only sharpens the
    grace given to the first sync and defaults to ``started``.
    """

    started: float
    ready: bool  # every source has delivered its first complete view
    last_success: float | None = None
    last_error: str | None = None
    ready_since: float | None = None


def health(status: SyncStatus, now: float, sync_period: float) -> tuple[bool, str]:
    """Return (healthy, reason). The limit is 2 x ``sync_period``; ages exactly at it still pass.

    The rule, first match wins:

    1. A sync has succeeded: healthy while ``now - last_success <= 2 * sync_period``, unhealthy
       after ("last successful sync 75.0s ago, limit 60s: <last_error>").
    2. Still waiting for the sources' first complete view: healthy, however long it takes
       ("waiting for the first complete list from the sources"). A liveness probe must not kill
       an agent whose apiserver is down: a restart cannot bring the apiserver back, and meanwhile
       the kernel goes on forwarding with the IPVS state it has. Readiness says "not ready" here,
       because ``ready`` is false.
    3. The sources are ready but no sync has succeeded yet: healthy for a grace of
       2 x ``sync_period`` from ``ready_since`` (or ``started``), so the first sync may run and
       retry; then unhealthy ("no successful sync yet: <last_error>").

    A clock that stepped backwards makes ages negative; they count as fresh.
    """
    limit = 2 * sync_period
    if status.last_success is not None:
        age = now - status.last_success
        if age <= limit:
            return True, f"ok: last sync {max(age, 0.0):.1f}s ago"
        reason = f"last successful sync {age:.1f}s ago, limit {limit:g}s"
        return False, f"{reason}: {status.last_error}" if status.last_error else reason
    if not status.ready:
        up = max(now - status.started, 0.0)
        return True, f"waiting for the first complete list from the sources ({up:.1f}s since start)"
    since = status.ready_since if status.ready_since is not None else status.started
    waited = now - since
    reason = "no successful sync yet" + (f": {status.last_error}" if status.last_error else "")
    if waited <= limit:
        return True, f"{reason} (first sync, {max(waited, 0.0):.1f}s of {limit:g}s grace)"
    return False, reason
