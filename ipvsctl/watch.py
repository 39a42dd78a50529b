"""`ipvsctl list --watch`: rates measured between two reads of the counters, and the refresh loop.

We measure rates ourselves rather than show the kernel's: its estimator refreshes every 2 s and
smooths over several periods, so it lags a change by seconds and cannot follow a 1 s refresh.
The difference of two 64-bit counter reads over the time between them is exact for that interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ipvsctl.model.ipvs import RealKey, ServiceKey, Stats, VirtualServerState

Dump = Sequence[VirtualServerState]
RateKey = tuple[ServiceKey, RealKey | None]  # a virtual server (None) or one of its real servers
CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen: what watch(1) does before each redraw


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates over one interval: new connections, packets and bytes in and out."""

    cps: float = 0.0
    inpps: float = 0.0
    outpps: float = 0.0
    inbps: float = 0.0
    outbps: float = 0.0


def _counters(s: Stats) -> tuple[int, int, int, int, int]:
    return (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes)


def _per_second(before: Stats | None, after: Stats, elapsed: float) -> Rates:
    now = _counters(after)
    then = _counters(before) if before is not None else (0,) * 5
    if any(b < a for a, b in zip(then, now, strict=True)):
        then = (0,) * 5  # a counter went back: deleted and made again in between, so it counts from zero
    return Rates(*((b - a) / elapsed for a, b in zip(then, now, strict=True)))


def _index(dump: Dump) -> dict[RateKey, Stats]:
    out: dict[RateKey, Stats] = {}
    for vs in dump:
        out[(vs.server.key, None)] = vs.stats
        for rs in vs.real_servers:
            out[(vs.server.key, rs.server.key)] = rs.stats
    return out


def rates(previous: Dump, current: Dump, elapsed: float) -> dict[RateKey, Rates]:
    """Rates of every virtual and real server in ``current`` over the ``elapsed`` seconds since
    ``previous`` was read.

    One that ``previous`` lacks, or whose counters went back (deleted and made again in between),
    counts from zero: its traffic happened within the interval."""
    if elapsed <= 0:
        raise ValueError(f"elapsed time must be positive, not {elapsed}")
    before = _index(previous)
    return {key: _per_second(before.get(key), stats, elapsed) for key, stats in _index(current).items()}


def loop(
    read: Callable[[], Dump],
    show: Callable[[Dump, Mapping[RateKey, Rates]], None],
    *,
    interval: float,
    count: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Read and show every ``interval`` seconds, ``count`` times (None: until interrupted); return
    how many frames were shown.

    The first frame has no rates yet (an empty mapping); each later one has the rates since the
    read before it. Reads keep a fixed beat (start + n * interval), so time spent reading and
    drawing does not push later frames back; a beat missed altogether is skipped, not made up."""
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    shown = 0
    previous: tuple[float, Dump] | None = None
    due = clock()
    while count is None or shown < count:
        if shown:
            due += interval
            now = clock()
            if due > now:
                sleep(due - now)
            else:
                due = now
        at = clock()
        dump = read()
        measured = rates(previous[1], dump, at - previous[0]) if previous and at > previous[0] else {}
        show(dump, measured)
        previous = (at, dump)
        shown += 1
    return shown


def frame(body: str, *, interval: float, when: float, first: bool, clear: bool) -> str:
    """One screenful: a header saying how often and when, then ``body``.

    ``clear`` (a terminal): erase the screen first, as watch(1) does. Otherwise frames follow one
    another, a blank line between them, so a log of them reads top to bottom."""
    from datetime import datetime

    stamp = datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")
    header = f"Every {interval:g}s: ipvsctl list    {stamp}"
    if clear:
        return f"{CLEAR}{header}\n\n{body}"
    gap = "" if first else "\n"
    return f"{gap}{header}\n{body}"
