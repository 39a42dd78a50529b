"""When the agent syncs (pure next_step with a fake clock), and the whole agent on a watched
directory with the in-memory kernel: coalescing, reaction to file changes, bad files, stop."""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ipvsctl.agent.engine import Engine
from ipvsctl.agent.loop import Agent, Clocks, Timing, next_step
from ipvsctl.agent.metrics import Metrics
from ipvsctl.agent.world import World
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import Protocol, ServiceKey
from ipvsctl.settings import Settings
from ipvsctl.sources.directory import SOURCE, DirectorySource
from ipvsctl.state import Store
from tests.conftest import ip, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T = Timing(min_sync_period=1.0, sync_period=30.0, drain_check=2.0)


def test_first_step_is_a_full_resync() -> None:
    assert next_step(T, Clocks(), 0.0, pending=False, draining=False, retry_due=None) == ("full", 0.0)


def test_changes_are_coalesced_to_one_sync_per_min_sync_period() -> None:
    clocks = Clocks(last_sync=10.0, last_full=10.0)
    # changes at 10.1, 10.4, 10.9: nothing runs before 11.0, and the loop is told to wake then
    for now in (10.1, 10.4, 10.9):
        assert next_step(T, clocks, now, pending=True, draining=False, retry_due=None) == (None, 11.0)
    assert next_step(T, clocks, 11.0, pending=True, draining=False, retry_due=None) == ("partial", 11.0)


def test_idle_agent_sleeps_until_the_next_full_resync() -> None:
    clocks = Clocks(last_sync=10.0, last_full=10.0)
    assert next_step(T, clocks, 12.0, pending=False, draining=False, retry_due=None) == (None, 40.0)
    assert next_step(T, clocks, 40.0, pending=False, draining=False, retry_due=None) == ("full", 40.0)


def test_draining_is_checked_every_drain_check() -> None:
    clocks = Clocks(last_sync=10.0, last_full=10.0, last_drain=-math.inf)
    assert next_step(T, clocks, 10.5, pending=False, draining=True, retry_due=None) == (None, 11.0)
    assert next_step(T, clocks, 11.0, pending=False, draining=True, retry_due=None) == ("drain", 11.0)
    clocks = Clocks(last_sync=11.0, last_full=10.0, last_drain=11.0)
    assert next_step(T, clocks, 12.0, pending=False, draining=True, retry_due=None) == (None, 13.0)


def test_retries_wait_for_their_backoff() -> None:
    clocks = Clocks(last_sync=10.0, last_full=10.0)
    assert next_step(T, clocks, 11.0, pending=False, draining=False, retry_due=14.0) == (None, 14.0)
    assert next_step(T, clocks, 14.0, pending=False, draining=False, retry_due=14.0) == ("partial", 14.0)


# --- the whole agent, threaded, on a watched directory and the in-memory kernel ---


class Running:
    def __init__(self, directory: Path, state: Path, min_sync: float = 0.05) -> None:
        self.kernel = MemoryKernel(node_addresses=[ip("192.0.2.10")])
        self.world = World([SOURCE])
        self.stop = threading.Event()
        self.source = DirectorySource([str(directory)], self.world, self.stop, rescan=0.5)
        self.engine = Engine(self.kernel, Store(state), Settings(node_name="node-a"), self.world)
        self.agent = Agent(self.engine, self.world, Metrics(), Timing(min_sync, 30.0, 0.2), self.stop)
        self.syncs: list[str] = []
        run = self.agent._run

        def counting(kind: str, step: Callable[[], object]) -> bool:
            self.syncs.append(kind)
            return run(kind, step)  # type: ignore[arg-type]

        self.agent._run = counting  # type: ignore[method-assign]
        self.source.start()
        self.thread = threading.Thread(target=self.agent.run)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.source.join()
        assert not self.thread.is_alive()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    directory = tmp_path / "manifests"
    directory.mkdir()
    r = Running(directory, tmp_path / "state")
    yield r, directory
    r.close()


WEB = ServiceKey(Protocol.TCP, ip("198.51.100.10"), 80)


def reals(k: MemoryKernel, key: ServiceKey) -> set[str]:
    state = k.get(key)
    return {str(r.server.key.address) for r in state.real_servers if r.server.weight} if state else set()


def test_added_changed_and_removed_files_reach_the_kernel(running: tuple[Running, Path]) -> None:
    r, d = running
    wait_for(lambda: "full" in r.syncs, 10)
    shutil.copy(EXAMPLES / "web.yaml", d / "web.yaml")
    wait_for(lambda: reals(r.kernel, WEB) == {"203.0.113.11", "203.0.113.12"}, 10)
    text = (d / "web.yaml").read_text().replace("203.0.113.12", "203.0.113.13")
    (d / "web.yaml").write_text(text)
    wait_for(lambda: reals(r.kernel, WEB) == {"203.0.113.11", "203.0.113.13"}, 10)
    (d / "web.yaml").unlink()
    wait_for(lambda: r.kernel.get(WEB) is None, 10)


def test_a_malformed_file_keeps_its_last_good_content(running: tuple[Running, Path]) -> None:
    r, d = running
    shutil.copy(EXAMPLES / "web.yaml", d / "web.yaml")
    shutil.copy(EXAMPLES / "dns-udp.yaml", d / "dns.yaml")
    wait_for(lambda: reals(r.kernel, WEB) == {"203.0.113.11", "203.0.113.12"}, 10)
    (d / "web.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web\n")  # broken YAML
    wait_for(lambda: any("invalid YAML" in str(p) for p in r.world.problems()), 10)
    (d / "dns.yaml").unlink()  # other files still work
    wait_for(lambda: not any(s.server.key.protocol == Protocol.UDP for s in r.kernel.dump()), 10)
    assert reals(r.kernel, WEB) == {"203.0.113.11", "203.0.113.12"}
    shutil.copy(EXAMPLES / "web.yaml", d / "web.yaml")
    wait_for(lambda: not r.world.problems(), 10)
    assert reals(r.kernel, WEB) == {"203.0.113.11", "203.0.113.12"}


def test_a_burst_of_writes_is_coalesced(tmp_path: Path) -> None:
    """Ten writes within a fraction of the coalescing window cause at most two partial syncs."""
    d = tmp_path / "m"
    d.mkdir()
    r = Running(d, tmp_path / "state", min_sync=2.0)
    try:
        wait_for(lambda: "full" in r.syncs, 10)
        time.sleep(0.1)
        before = len(r.syncs)
        base = (EXAMPLES / "web.yaml").read_text()
        for n in range(10):
            (d / "web.yaml").write_text(base.replace("203.0.113.12", f"203.0.113.{20 + n}"))
            time.sleep(0.02)
        wait_for(lambda: reals(r.kernel, WEB) == {"203.0.113.11", "203.0.113.29"}, 10)
        assert 1 <= r.syncs[before:].count("partial") <= 2
    finally:
        r.close()


def test_stop_ends_the_agent_quickly(running: tuple[Running, Path]) -> None:
    r, _ = running
    wait_for(lambda: "full" in r.syncs, 10)
    started = time.monotonic()
    r.close()
    assert time.monotonic() - started < 5
