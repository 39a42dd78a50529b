"""The health rule: boundaries around 2 x sync period, start-up, errors."""

from __future__ import annotations

import pytest

from ipvsctl.agent.health import SyncStatus, health

PERIOD = 30.0
START = 1_000.0


def test_fresh_sync_is_healthy() -> None:
    ok, reason = health(SyncStatus(START, ready=True, last_success=START + 100), START + 103.1, PERIOD)
    assert ok
    assert reason == "ok: last sync 3.1s ago"


@pytest.mark.parametrize(
    ("age", "healthy"),
    [(0.0, True), (59.999, True), (60.0, True), (60.001, False), (3600.0, False)],
)
def test_boundary_at_twice_the_period(age: float, healthy: bool) -> None:
    status = SyncStatus(START, ready=True, last_success=START + 10)
    ok, reason = health(status, START + 10 + age, PERIOD)
    assert ok is healthy
    if not healthy:
        assert reason.startswith("last successful sync ")
        assert "limit 60s" in reason


def test_stale_sync_names_the_last_error() -> None:
    status = SyncStatus(START, ready=True, last_success=START, last_error="EPERM: need CAP_NET_ADMIN")
    ok, reason = health(status, START + 61, PERIOD)
    assert not ok
    assert reason == "last successful sync 61.0s ago, limit 60s: EPERM: need CAP_NET_ADMIN"


def test_clock_stepping_back_counts_as_fresh() -> None:
    ok, reason = health(SyncStatus(START, ready=True, last_success=START + 50), START + 40, PERIOD)
    assert ok
    assert reason == "ok: last sync 0.0s ago"


@pytest.mark.parametrize("waited", [0.0, 61.0, 3600.0])
def test_waiting_for_sources_stays_alive(waited: float) -> None:
    # An apiserver that is down must not get the agent killed by its liveness probe.
    ok, reason = health(SyncStatus(START, ready=False, last_error="connection refused"), START + waited, PERIOD)
    assert ok
    assert reason.startswith("waiting for the first complete list from the sources")


def test_first_sync_has_a_grace_after_the_sources_are_ready() -> None:
    status = SyncStatus(START, ready=True)
    ok, reason = health(status, START + 60, PERIOD)
    assert ok
    assert reason.startswith("no successful sync yet (first sync")
    ok, reason = health(status, START + 60.5, PERIOD)
    assert not ok
    assert reason == "no successful sync yet"


def test_first_sync_failing_past_the_grace() -> None:
    status = SyncStatus(START, ready=True, last_error="kernel has no IPVS")
    ok, reason = health(status, START + 10, PERIOD)
    assert ok
    assert reason.startswith("no successful sync yet: kernel has no IPVS (first sync")
    ok, reason = health(status, START + 61, PERIOD)
    assert not ok
    assert reason == "no successful sync yet: kernel has no IPVS"


def test_grace_counts_from_ready_since_when_known() -> None:
    # Sources came up late (apiserver was down): the first sync still gets its grace.
    status = SyncStatus(START, ready=True, last_error="boom", ready_since=START + 300)
    assert health(status, START + 330, PERIOD)[0]
    assert health(status, START + 360, PERIOD)[0]
    assert not health(status, START + 361, PERIOD)[0]
    # Without ready_since, the grace counts from start.
    assert not health(SyncStatus(START, ready=True, last_error="boom"), START + 330, PERIOD)[0]
