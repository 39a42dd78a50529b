"""The agent's first scan of --manifests: every file parsed up front (``prime``, on every CPU), the
scan taking those results only for files that did not change in between, and the collector paused
until the first full sync."""

from __future__ import annotations

import gc
import shutil
import threading
from pathlib import Path

import pytest

from ipvsctl.agent.engine import Engine
from ipvsctl.agent.loop import Agent, Timing
from ipvsctl.agent.metrics import Metrics
from ipvsctl.agent.world import World
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.settings import Settings
from ipvsctl.sources import fork
from ipvsctl.sources.directory import SOURCE, DirectorySource
from ipvsctl.state import Store
from tests.conftest import ip, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def snapshot(world: World) -> dict[object, object]:
    """Every object the World holds, by key (with its source: the file)."""
    return {k: world.values(k) for k in sorted(world._index.objects)}


def scanned(directory: Path, prime: bool) -> World:
    world = World([SOURCE])
    source = DirectorySource([str(directory)], world, threading.Event())
    if prime:
        source.prime()
    source.scan()
    return world


def test_prime_then_scan_gives_what_scan_alone_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "m")
    (tmp_path / "m" / "broken.yaml").write_text("kind: [unclosed\n")
    monkeypatch.setattr(fork, "usable", lambda count: count >= 2)  # children read parts, as with 10,000 files
    primed, plain = scanned(tmp_path / "m", True), scanned(tmp_path / "m", False)
    assert snapshot(primed) == snapshot(plain) and snapshot(plain)
    assert [str(p) for p in primed.problems()] == [str(p) for p in plain.problems()]
    assert any("broken.yaml" in str(p) for p in plain.problems())


def test_a_file_changed_after_prime_is_read_again(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "m")
    world = World([SOURCE])
    source = DirectorySource([str(tmp_path / "m")], world, threading.Event())
    source.prime()
    web = tmp_path / "m" / "web.yaml"
    web.write_text(web.read_text().replace("name: web\n", "name: web2\n", 1))
    source.scan()
    names = {k[3] for k in world._index.objects if k[1] == "Service"}
    assert "web2" in names and "web" not in names
    assert source._primed == {}  # dropped after the first scan


def test_the_collector_is_paused_until_the_first_full_sync(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "m")
    world = World([SOURCE])
    stop = threading.Event()
    source = DirectorySource([str(tmp_path / "m")], world, stop)
    engine = Engine(MemoryKernel(node_addresses=[ip("192.0.2.10")]), Store(tmp_path / "s"), Settings(), world)
    agent = Agent(engine, world, Metrics(), Timing(0.0, 30.0, 1.0), stop, collector_paused=True)
    was = gc.isenabled()
    gc.disable()
    try:
        source.start()
        thread = threading.Thread(target=agent.run)
        thread.start()
        wait_for(lambda: gc.isenabled(), 10)
        assert agent.status.last_success is not None and not agent.collector_paused
        stop.set()
        thread.join(10)
        source.join()
    finally:
        gc.enable() if was else gc.disable()
        gc.unfreeze()


def test_prime_uses_and_fills_the_parse_cache(tmp_path: Path) -> None:
    from ipvsctl.cache import ParseCache

    shutil.copytree(EXAMPLES, tmp_path / "m")
    first = DirectorySource([str(tmp_path / "m")], World([SOURCE]), threading.Event(), cache=ParseCache(tmp_path / "c"))
    assert first.prime() == len(list((tmp_path / "m").glob("*.yaml")))  # all parsed
    first.scan()  # saves the cache
    world = World([SOURCE])
    again = DirectorySource([str(tmp_path / "m")], world, threading.Event(), cache=ParseCache(tmp_path / "c"))
    assert again.prime() == 0  # every file from the cache
    again.scan()
    assert snapshot(world) == snapshot(scanned(tmp_path / "m", False))
