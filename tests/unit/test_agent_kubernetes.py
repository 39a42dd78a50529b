"""The whole agent against the fake API server: it waits for the first complete lists, then
converges after each fault (dropped stream, 410 Gone with a gap, stalled stream, 500s)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ipvsctl.agent.engine import Engine
from ipvsctl.agent.loop import Agent, Timing
from ipvsctl.agent.metrics import Metrics
from ipvsctl.agent.world import World
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import Protocol, ServiceKey
from ipvsctl.settings import Settings
from ipvsctl.sources.kube.client import Client
from ipvsctl.sources.kube.config import ClusterConfig
from ipvsctl.sources.kube.reflector import Backoff
from ipvsctl.sources.kube.source import SOURCE, KubeSource
from ipvsctl.state import Store
from tests.conftest import ip, wait_for
from tests.fakeapi import ENDPOINT_SLICES, NODES, SERVICES, FakeApi, endpoint_slice, node, service

FAST = Backoff(initial=0.01, cap=0.05, jitter=0.0)
WEB = ServiceKey(Protocol.TCP, ip("10.96.0.10"), 80)


@contextmanager
def agent(api: FakeApi, kernel: MemoryKernel, state: Path, read_timeout: float = 5.0) -> Iterator[Agent]:
    world = World([SOURCE])
    stop = threading.Event()
    source = KubeSource(
        Client(ClusterConfig(api.url)), world, "n1", stop, backoff=FAST, watch_timeout=30, read_timeout=read_timeout
    )
    engine = Engine(kernel, Store(state), Settings(node_name="n1"), world)
    a = Agent(engine, world, Metrics(), Timing(0.05, 30.0, 0.2), stop)
    thread = threading.Thread(target=a.run)
    source.start()
    thread.start()
    try:
        yield a
    finally:
        stop.set()
        thread.join(5)
        source.join(timeout=2)
        assert not thread.is_alive()


def backends(kernel: MemoryKernel, key: ServiceKey = WEB) -> set[str]:
    state = kernel.get(key)
    return {str(r.server.key.address) for r in state.real_servers if r.server.weight} if state else set()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as server:
        server.apply(NODES, node("n1", "192.0.2.10"))
        web = service("web", type="NodePort")
        web["spec"]["ports"][0]["nodePort"] = 30080
        server.apply(SERVICES, web)
        server.apply(ENDPOINT_SLICES, endpoint_slice("web-1", "web", ["203.0.113.1", "203.0.113.2"]))
        yield server


def test_no_sync_before_every_first_list_is_complete(api: FakeApi, tmp_path: Path) -> None:
    """An agent that starts while the slices cannot be listed programs nothing, not an empty world."""
    kernel = MemoryKernel()
    api.hold(ENDPOINT_SLICES)
    with agent(api, kernel, tmp_path / "state") as a:
        wait_for(lambda: api.requests_for(SERVICES, watch=True), what="the services watch")
        assert kernel.writes == 0
        assert not a.status.ready
        api.release(ENDPOINT_SLICES)
        wait_for(lambda: backends(kernel) == {"203.0.113.1", "203.0.113.2"}, timeout=10, what="first sync")
        # NodePort on the Node's InternalIP from the API, not this host's addresses
        nodeport = [s for s in kernel.dump() if s.server.key.address == ip("192.0.2.10")]
        assert len(nodeport) == 1


def test_the_agent_converges_after_each_fault(api: FakeApi, tmp_path: Path) -> None:
    kernel = MemoryKernel()
    with agent(api, kernel, tmp_path / "state", read_timeout=0.5):
        wait_for(lambda: backends(kernel) == {"203.0.113.1", "203.0.113.2"}, timeout=10, what="first sync")

        # a connection dropped mid-stream, with a change made while it was down
        api.drop_watches()
        api.apply(ENDPOINT_SLICES, endpoint_slice("web-1", "web", ["203.0.113.1"]))
        wait_for(lambda: backends(kernel) == {"203.0.113.1"}, timeout=10, what="after a dropped stream")

        # 410 Gone: changes (including a deletion) happen while the watch is away and history is compacted
        with api.paused():
            api.drop_watches()
            api.apply(SERVICES, service("api", ip="10.96.0.20"))
            api.apply(ENDPOINT_SLICES, endpoint_slice("api-1", "api", ["203.0.113.5"]))
            api.delete(ENDPOINT_SLICES, "web-1")
            api.compact()
        api_key = ServiceKey(Protocol.TCP, ip("10.96.0.20"), 80)
        wait_for(lambda: backends(kernel, api_key) == {"203.0.113.5"}, timeout=10, what="after 410")
        wait_for(lambda: backends(kernel) == set(), timeout=10, what="web's slice deleted in the gap")

        # a stalled stream: noticed by the read timeout, resumed
        api.stall_watches()
        api.apply(ENDPOINT_SLICES, endpoint_slice("web-1", "web", ["203.0.113.3"]))
        wait_for(lambda: backends(kernel) == {"203.0.113.3"}, timeout=10, what="after a stalled stream")

        # the API answers 500 a few times, then recovers
        api.fail_next(3, 500)
        api.drop_watches()
        api.delete(SERVICES, "api")
        wait_for(lambda: kernel.get(api_key) is None, timeout=10, what="after 500s")
