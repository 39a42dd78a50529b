"""The Kubernetes source against the fake API server: the World follows the API through every fault."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from ipvsctl.agent.world import World
from ipvsctl.sources.kube.client import Client
from ipvsctl.sources.kube.config import ClusterConfig
from ipvsctl.sources.kube.reflector import Backoff, Reflector
from ipvsctl.sources.kube.source import SOURCE, KubeSource
from tests.conftest import wait_for
from tests.fakeapi import ENDPOINT_SLICES, NODES, SERVICES, FakeApi, endpoint_slice, node, service

FAST = Backoff(initial=0.01, cap=0.05, jitter=0.0)


@pytest.fixture(autouse=True)
def logged() -> Iterator[list[dict[str, Any]]]:
    """Capture structlog events (from every thread), whatever an earlier test configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as events:
            yield events
    finally:
        structlog.configure(**saved)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as server:
        yield server


@pytest.fixture
def world() -> World:
    return World([SOURCE])


@contextmanager
def running(api: FakeApi, world: World, node_name: str | None = "n1", **options: Any) -> Iterator[KubeSource]:
    """A KubeSource for the test's duration; it must stop within a second when asked."""
    options = {"backoff": FAST, "watch_timeout": 30, "read_timeout": 5.0, **options}
    stop = threading.Event()
    source = KubeSource(Client(ClusterConfig(api.url)), world, node_name, stop, **options)
    source.start()
    try:
        yield source
    finally:
        stop.set()
        source.join(timeout=1.0)
        assert not source.alive, "the source threads did not stop"


def service_of(world: World, name: str, namespace: str = "default") -> Any:
    return world.inputs((namespace, name))[0]


def ports(world: World, name: str) -> list[int]:
    svc = service_of(world, name)
    return [p.port for p in svc.ports] if svc else []


def backends(world: World, name: str) -> list[str]:
    _, slices, _ = world.inputs(("default", name))
    return sorted(str(a) for s in slices for e in s.endpoints for a in e.addresses)


def problems(world: World) -> list[str]:
    return [str(p) for p in world.problems()]


def watches(api: FakeApi, path: str = SERVICES) -> list[str | None]:
    return [r.resource_version for r in api.requests_for(path, watch=True)]


def lists(api: FakeApi, path: str = SERVICES) -> int:
    return len([r for r in api.requests_for(path, watch=False) if not r.params.get("continue")])


def settle(api: FakeApi, world: World, watching: int = 3) -> None:
    """Ready, and every reflector's watch open: a fault injected now hits a live stream."""
    wait_for(lambda: world.ready and api.open_watches == watching, what="ready and watching")


def seed(api: FakeApi) -> None:
    api.apply(SERVICES, service("web", ip="10.96.0.10"))
    api.apply(ENDPOINT_SLICES, endpoint_slice("web-abc", "web", ["10.0.0.1", "10.0.0.2"]))
    api.apply(NODES, node("n1", "192.0.2.1", "198.51.100.1"))
    api.apply(NODES, node("n2", "192.0.2.2"))


# --- first lists and readiness ---


def test_first_lists_fill_the_world(api: FakeApi, world: World) -> None:
    seed(api)
    with running(api, world):
        wait_for(lambda: world.ready, what="ready")
        assert ports(world, "web") == [80]
        assert backends(world, "web") == ["10.0.0.1", "10.0.0.2"]
        assert world.node_ips == (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("198.51.100.1"))
        svc = service_of(world, "web")
        assert svc.origin.file == "kubernetes" and str(svc.origin) == "kubernetes: Service default/web"
        assert world.keys(SOURCE) == {
            (SOURCE, "Service", "default", "web"),
            (SOURCE, "EndpointSlice", "default", "web-abc"),
        }
    assert api.requests_for(NODES)[0].params["fieldSelector"] == "metadata.name=n1"


@pytest.mark.parametrize("held", [SERVICES, ENDPOINT_SLICES, NODES])
def test_not_ready_until_every_first_list(api: FakeApi, world: World, held: str) -> None:
    seed(api)
    api.hold(held)
    with running(api, world):
        others = [p for p in (SERVICES, ENDPOINT_SLICES, NODES) if p != held]
        wait_for(lambda: all(api.requests_for(p, watch=True) for p in others), what="the other kinds watching")
        wait_for(lambda: api.requests_for(held), what="the held list to be asked for")
        assert not world.ready
        api.release(held)
        wait_for(lambda: world.ready, what="ready")


def test_without_a_node_name_there_is_no_node_watch(api: FakeApi, world: World) -> None:
    seed(api)
    with running(api, world, node_name=None):
        wait_for(lambda: world.ready, what="ready")
    assert api.requests_for(NODES) == []
    assert world.node_ips is None


def test_a_missing_node_still_makes_the_source_ready(api: FakeApi, world: World) -> None:
    with running(api, world, node_name="elsewhere"):
        wait_for(lambda: world.ready, what="ready")
        assert world.node_ips is None
        api.apply(NODES, node("elsewhere", "192.0.2.9"))
        wait_for(lambda: world.node_ips == (ipaddress.ip_address("192.0.2.9"),), what="node address")


# --- events ---


def test_events_reach_the_world(api: FakeApi, world: World) -> None:
    with running(api, world):
        wait_for(lambda: world.ready, what="ready")
        api.apply(SERVICES, service("web"))
        wait_for(lambda: ports(world, "web") == [80], what="service added")
        api.apply(SERVICES, service("web", port=8443))
        wait_for(lambda: ports(world, "web") == [8443], what="service modified")
        api.apply(ENDPOINT_SLICES, endpoint_slice("web-1", "web", ["10.0.0.1"]))
        api.apply(ENDPOINT_SLICES, endpoint_slice("web-2", "web", ["10.0.0.2"]))
        wait_for(lambda: backends(world, "web") == ["10.0.0.1", "10.0.0.2"], what="slices added")
        api.delete(ENDPOINT_SLICES, "web-1")
        wait_for(lambda: backends(world, "web") == ["10.0.0.2"], what="slice deleted")
        api.delete(SERVICES, "web")
        wait_for(lambda: service_of(world, "web") is None, what="service deleted")
        api.apply(NODES, node("n1", "192.0.2.7"))
        wait_for(lambda: world.node_ips == (ipaddress.ip_address("192.0.2.7"),), what="node address")
        api.apply(NODES, node("n2", "192.0.2.8"))  # another node: not ours
        api.apply(NODES, node("n1", "192.0.2.7", "198.51.100.7"))
        wait_for(lambda: len(world.node_ips or ()) == 2, what="external address")


def test_a_bad_update_keeps_the_last_good_value(api: FakeApi, world: World) -> None:
    with running(api, world):
        api.apply(SERVICES, service("web"))
        wait_for(lambda: ports(world, "web") == [80], what="service")
        api.apply(SERVICES, service("web", port=70000))
        wait_for(lambda: problems(world), what="a problem")
        assert problems(world) == [
            "kubernetes: Service default/web: spec.ports[0].port: must be between 1 and 65535, got 70000"
        ]
        assert ports(world, "web") == [80]  # still in force
        assert world.problem_refs() == {("default", "web")}
        api.apply(SERVICES, service("web", port=81))
        wait_for(lambda: ports(world, "web") == [81] and not problems(world), what="fixed")


def test_a_never_good_object_is_reported_and_forgotten_when_deleted(api: FakeApi, world: World) -> None:
    with running(api, world):
        api.apply(SERVICES, service("bad", ip="not-an-ip"))
        wait_for(lambda: problems(world), what="a problem")
        assert service_of(world, "bad") is None
        api.delete(SERVICES, "bad")
        wait_for(lambda: not problems(world), what="problem cleared")


def test_bad_endpoints_are_reported_and_the_rest_of_the_slice_kept(api: FakeApi, world: World) -> None:
    with running(api, world):
        api.apply(SERVICES, service("web"))
        api.apply(ENDPOINT_SLICES, endpoint_slice("web-1", "web", ["10.0.0.1", "10.0.0.300"]))
        wait_for(lambda: backends(world, "web") == ["10.0.0.1"], what="the good endpoint")
        wait_for(lambda: problems(world), what="a problem")
        assert (
            "endpoints[1].addresses[0]: '10.0.0.300' is not an IPv4 or IPv6 address (endpoint ignored)"
            in (problems(world)[0])
        )
        api.apply(ENDPOINT_SLICES, endpoint_slice("web-1", "web", ["10.0.0.1", "10.0.0.3"]))
        wait_for(lambda: backends(world, "web") == ["10.0.0.1", "10.0.0.3"] and not problems(world), what="fixed")


def test_objects_without_a_name_are_skipped(world: World, logged: list[dict[str, Any]]) -> None:
    source = KubeSource(Client(ClusterConfig("http://127.0.0.1:9")), world, None, threading.Event())
    services = source.reflectors[0]
    assert services.convert is not None
    services.on_list([services.convert({"metadata": {}}), services.convert({"spec": {}})])
    services.on_event("ADDED", {"metadata": {"namespace": "default"}})
    assert world.keys(SOURCE) == set() and world.problems() == []
    assert [e["event"] for e in logged] == ["object without a name"] * 3


# --- resourceVersion, bookmarks, relists ---


def test_a_bookmark_moves_the_next_watch_on(api: FakeApi, world: World) -> None:
    with running(api, world) as source:
        settle(api, world)
        services = source.reflectors[0]
        api.apply(ENDPOINT_SLICES, endpoint_slice("other", "other", ["10.0.0.9"]))  # no Service event
        mark = api.bookmark(SERVICES)
        assert int(watches(api)[0] or 0) < mark
        wait_for(lambda: services.resource_version == str(mark), what="the bookmark")
        api.drop_watches()
        wait_for(lambda: len(watches(api)) == 2, what="a new watch")
        assert watches(api)[1] == str(mark)
        assert lists(api) == 1


@pytest.mark.parametrize("as_http", [False, True], ids=["error-event", "http-410"])
def test_gone_lists_again_and_the_world_converges(api: FakeApi, world: World, as_http: bool) -> None:
    api.gone_as_http = as_http
    api.apply(SERVICES, service("stays"))
    api.apply(SERVICES, service("goes"))
    api.apply(SERVICES, service("changes"))
    with running(api, world):
        settle(api, world)
        with api.paused():  # all at once: the open watches see none of it
            api.drop_watches()
            api.delete(SERVICES, "goes")
            api.apply(SERVICES, service("changes", port=99))
            api.apply(SERVICES, service("new"))
            api.compact()
        wait_for(lambda: service_of(world, "new"), what="the new service")
        assert service_of(world, "goes") is None
        assert ports(world, "changes") == [99]
        assert service_of(world, "stays") is not None
        assert lists(api) == 2
        wait_for(lambda: len(watches(api)) == 3, what="a watch after the relist")
        assert watches(api)[2] == str(api.rv)


def test_relist_keeps_the_last_good_value_of_a_rejected_object(api: FakeApi, world: World) -> None:
    api.apply(SERVICES, service("web"))
    api.apply(SERVICES, service("junk", ip="junk"))
    with running(api, world):
        settle(api, world)
        assert len(problems(world)) == 1
        with api.paused():
            api.drop_watches()
            api.apply(SERVICES, service("web", port=0))  # now rejected
            api.delete(SERVICES, "junk")  # rejected, and gone
            api.compact()
        wait_for(lambda: lists(api) == 2, what="relist")
        bad_web = "kubernetes: Service default/web: spec.ports[0].port: must be between 1 and 65535, got 0"
        wait_for(lambda: problems(world) == [bad_web], what="only web's problem")
        assert ports(world, "web") == [80]


def test_a_dropped_stream_resumes_from_the_last_resource_version(api: FakeApi, world: World) -> None:
    with running(api, world):
        settle(api, world)
        api.apply(SERVICES, service("a"))
        wait_for(lambda: service_of(world, "a"), what="service a")
        last = str(api.rv)
        with api.paused():
            api.drop_watches()
            api.apply(SERVICES, service("b"))
        wait_for(lambda: service_of(world, "b"), what="service b")
        assert watches(api)[1] == last
        assert lists(api) == 1


def test_a_silent_stream_times_out_and_resumes(api: FakeApi, world: World, logged: list[dict[str, Any]]) -> None:
    with running(api, world, read_timeout=0.3):
        settle(api, world)
        with api.paused():
            api.stall_watches()
            api.apply(SERVICES, service("late"))
        wait_for(lambda: service_of(world, "late"), what="the service after the stall")
        assert lists(api) == 1
        assert watches(api)[1] == watches(api)[0]  # resumed where it was: nothing came before the stall
    assert any(e["event"] == "watch failed" and e["error"] == "TimeoutError: timed out" for e in logged)


# --- the reflector's loop on its own ---


class Recorder:
    """on_list/on_event for a bare Reflector, and a sleep that records its delays."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.lists: list[list[str]] = []
        self.events: list[tuple[str, str]] = []
        self.sleeps: list[float] = []

    def on_list(self, items: list[dict[str, Any]]) -> None:
        self.lists.append([i["metadata"]["name"] for i in items])

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.events.append((kind, obj["metadata"]["name"]))

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.stop.wait(seconds)


@contextmanager
def reflecting(api: FakeApi, **options: Any) -> Iterator[tuple[Reflector, Recorder]]:
    stop = threading.Event()
    rec = Recorder(stop)
    options = {"backoff": FAST, "watch_timeout": 30, "read_timeout": 5.0, "rand": lambda: 0.5, **options}
    reflector = Reflector(
        Client(ClusterConfig(api.url)),
        SERVICES,
        "Service",
        options.pop("on_list", rec.on_list),
        options.pop("on_event", rec.on_event),
        stop,
        sleep=rec.sleep,
        **options,
    )
    thread = threading.Thread(target=reflector.run)
    thread.start()
    try:
        yield reflector, rec
    finally:
        stop.set()
        thread.join(1.0)
        assert not thread.is_alive(), "the reflector did not stop"


def test_server_errors_back_off_exponentially_then_succeed(api: FakeApi) -> None:
    now = [0.0]
    api.apply(SERVICES, service("web"))
    api.fail_next(3, status=500, path=SERVICES)
    with reflecting(
        api, backoff=Backoff(initial=0.01, cap=0.03, jitter=0.0, healthy_after=30.0), clock=lambda: now[0]
    ) as (_, rec):
        wait_for(lambda: rec.lists and api.open_watches == 1, what="a list and a watch")
        assert rec.lists == [["web"]]
        assert rec.sleeps == [0.01, 0.02, 0.03]  # doubling, up to the cap
        now[0] += 31  # the watch has been up long enough to count as healthy: the count starts again
        api.fail_next(2, status=500, path=SERVICES)
        api.drop_watches()  # the re-watch fails twice, then works
        api.apply(SERVICES, service("again"))
        wait_for(lambda: rec.events == [("ADDED", "again")], what="the event")
        assert rec.sleeps[3:] == [0.01, 0.02, 0.03]
        assert lists(api) == 4  # three failed lists and one good one; the watch failures did not relist


def test_a_normal_end_rewatches_at_once(api: FakeApi) -> None:
    with reflecting(api) as (reflector, rec):
        wait_for(lambda: api.open_watches == 1, what="watching")
        api.apply(SERVICES, service("a"))
        wait_for(lambda: rec.events, what="the event")
        api.end_watches()
        wait_for(lambda: len(watches(api)) == 2, what="the next watch")
        assert watches(api)[1] == reflector.resource_version == str(api.rv)
        assert rec.sleeps == [] and lists(api) == 1


def test_an_early_end_without_events_backs_off(api: FakeApi) -> None:
    with reflecting(api) as (_, rec):
        wait_for(lambda: api.open_watches == 1, what="watching")
        api.end_watches()
        wait_for(lambda: len(watches(api)) == 2, what="the next watch")
        assert rec.sleeps == [0.01]


def test_gone_straight_after_a_list_backs_off_before_listing_again(api: FakeApi) -> None:
    api.fail_next(1, status=410, path=SERVICES, after=1)  # the list works, its watch is told 410
    with reflecting(api) as (_, rec):
        wait_for(lambda: len(rec.lists) == 2 and api.open_watches == 1, what="a second list and a watch")
        assert rec.sleeps == [0.01]


def test_a_failing_handler_lists_again(api: FakeApi) -> None:
    api.apply(SERVICES, service("a"))
    seen: list[str] = []

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        if len(seen) == 1:
            raise RuntimeError("bug")

    with reflecting(api, on_event=on_event) as (_, rec):
        wait_for(lambda: rec.lists, what="a list")
        api.apply(SERVICES, service("b"))
        wait_for(lambda: len(rec.lists) == 2, what="a relist")
        assert rec.lists[1] == ["a", "b"]
        assert len(rec.sleeps) == 1


def test_backoff_delays() -> None:
    policy = Backoff(initial=0.5, cap=30.0, factor=2.0, jitter=0.25)
    assert [policy.delay(n, 0.5) for n in (1, 2, 3, 7, 8, 20)] == [0.5, 1.0, 2.0, 30.0, 30.0, 30.0]
    assert policy.delay(1, 0.0) == 0.375 and policy.delay(1, 0.999999) == pytest.approx(0.625)
    assert policy.delay(10, 0.999999) == 30.0  # jitter never goes past the cap


# --- stopping ---


@pytest.mark.parametrize("state", ["watching", "backing-off", "listing"])
def test_stop_ends_the_threads_quickly(api: FakeApi, world: World, state: str) -> None:
    """Even with a long read timeout or a long backoff pending, setting stop ends every thread at once."""
    options: dict[str, Any] = {"read_timeout": None, "watch_timeout": 300}
    if state == "backing-off":
        api.fail_next(1000, status=500)
        options["backoff"] = Backoff(initial=60.0)
    if state == "listing":
        api.hold(SERVICES)
    with running(api, world, **options):
        if state == "watching":
            wait_for(lambda: api.open_watches == 3, what="all watches open")
        else:
            wait_for(lambda: len(api.requests) >= 3, what="requests")
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
