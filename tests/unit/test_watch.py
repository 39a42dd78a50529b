"""`list --watch` without a terminal or a clock: rates from two reads, the refresh loop's beat, frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from ipvsctl.model.ipvs import (
    Protocol,
    RealKey,
    RealServer,
    RealServerState,
    ServiceKey,
    Stats,
    VirtualServer,
    VirtualServerState,
)
from ipvsctl.watch import CLEAR, RateKey, Rates, frame, loop, rates
from tests.conftest import ip

WEB = ServiceKey(Protocol.TCP, ip("198.51.100.10"), 80)
DNS = ServiceKey(Protocol.UDP, ip("198.51.100.15"), 53)
A = RealKey(ip("203.0.113.11"), 8080)


def counters(n: int) -> Stats:
    """Counters after n units of traffic: 1 connection, 10 packets each way, 1000 and 5000 bytes."""
    return Stats(conns=n, inpkts=10 * n, outpkts=10 * n, inbytes=1000 * n, outbytes=5000 * n, cps=7, inbps=7)


def dump(key: ServiceKey, n: int, real_n: int | None = None) -> list[VirtualServerState]:
    reals = () if real_n is None else (RealServerState(RealServer(A), stats=counters(real_n)),)
    return [VirtualServerState(VirtualServer(key), reals, counters(n))]


def test_rates_are_counter_deltas_over_elapsed_time() -> None:
    """Each virtual and real server's rate is (current - previous counter) / elapsed, ignoring the kernel's estimate."""
    got = rates(dump(WEB, 10, 4), dump(WEB, 30, 5), 2.0)
    assert got == {
        (WEB, None): Rates(cps=10, inpps=100, outpps=100, inbps=10_000, outbps=50_000),
        (WEB, A): Rates(cps=0.5, inpps=5, outpps=5, inbps=500, outbps=2500),
    }


def test_new_server_counts_from_zero() -> None:
    """A virtual server absent from the previous read has all its traffic inside the interval."""
    got = rates(dump(WEB, 1), [*dump(WEB, 1), *dump(DNS, 4)], 4.0)
    assert got[(DNS, None)] == Rates(cps=1, inpps=10, outpps=10, inbps=1000, outbps=5000)
    assert got[(WEB, None)] == Rates()


def test_counters_going_back_mean_recreated() -> None:
    """If any counter went back (deleted and made again between reads), all count from zero, never negative."""
    before = dump(WEB, 100)
    after = [VirtualServerState(VirtualServer(WEB), (), Stats(conns=2, inpkts=5000, inbytes=100))]
    assert rates(before, after, 1.0)[(WEB, None)] == Rates(cps=2, inpps=5000, inbps=100)


def test_rates_need_time_to_have_passed() -> None:
    """Zero or negative elapsed time is refused rather than divided by."""
    with pytest.raises(ValueError, match="positive"):
        rates(dump(WEB, 1), dump(WEB, 2), 0)


class FakeTime:
    """A clock that only moves when slept, or when a read takes time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_loop_shows_count_frames_first_without_rates() -> None:
    """The loop shows exactly count frames; the first has no rates, later ones the rates since the read before."""
    t = FakeTime()
    reads = iter([dump(WEB, 0), dump(WEB, 6), dump(WEB, 18)])
    frames: list[tuple[Sequence[VirtualServerState], Mapping[RateKey, Rates]]] = []
    shown = loop(
        lambda: next(reads), lambda d, r: frames.append((d, r)), interval=2, count=3, clock=t.clock, sleep=t.sleep
    )
    assert shown == 3 and len(frames) == 3
    assert frames[0][1] == {}
    assert [f[1][(WEB, None)].cps for f in frames[1:]] == [3.0, 6.0]
    assert t.sleeps == [2, 2]


def test_loop_keeps_a_fixed_beat_and_skips_missed_ones() -> None:
    """Time spent reading shortens the next sleep; a read longer than the interval is followed by no sleep at all."""
    t = FakeTime()
    durations = iter([0.5, 3.0, 0.25, 0.0])

    def read() -> list[VirtualServerState]:
        t.now += next(durations)
        return dump(WEB, 0)

    loop(read, lambda d, r: None, interval=2, count=4, clock=t.clock, sleep=t.sleep)
    assert t.sleeps == [1.5, 2 - 0.25]


def test_loop_stops_on_keyboard_interrupt_by_raising_it() -> None:
    """Without a count the loop runs until interrupted; Ctrl-C reaches the caller (the CLI turns it into exit 0)."""
    t = FakeTime()
    calls = 0

    def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        t.sleep(seconds)

    with pytest.raises(KeyboardInterrupt):
        loop(lambda: dump(WEB, 0), lambda d, r: None, interval=1, clock=t.clock, sleep=sleep)
    assert calls == 5


def test_loop_refuses_non_positive_interval() -> None:
    """An interval of zero would spin; it is refused."""
    with pytest.raises(ValueError, match="positive"):
        loop(lambda: [], lambda d, r: None, interval=0, count=1)


def test_frame_clears_a_terminal_and_separates_a_log() -> None:
    """On a terminal a frame starts by clearing the screen; otherwise frames after the first start with a blank line."""
    tty = frame("BODY", interval=2, when=0, first=False, clear=True)
    assert tty.startswith(CLEAR + "Every 2s: ipvsctl list") and tty.endswith("\n\nBODY")
    first = frame("BODY", interval=0.5, when=0, first=True, clear=False)
    later = frame("BODY", interval=0.5, when=0, first=False, clear=False)
    assert first.startswith("Every 0.5s: ipvsctl list    19") and first.endswith("\nBODY")
    assert later == "\n" + first and CLEAR not in later
