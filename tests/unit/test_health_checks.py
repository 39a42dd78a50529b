"""Active health checks (standalone agent): the annotations, the checker's state machine with real
probes (a TCP listener and an HTTP server this test starts on loopback, and exec checks), and the
engine putting the verdicts into the kernel (in-memory kernel)."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsctl.checks.probe import probe
from ipvsctl.checks.runner import Checker
from ipvsctl.checks.spec import CheckSpec, spec_of
from ipvsctl.checks.targets import targets_of
from ipvsctl.errors import InputError
from ipvsctl.model.k8s import Service
from tests.conftest import ip
from tests.unit.test_agent_engine import Harness, endpoints, service, tcp, weights

LOOPBACK = ip("127.0.0.1")


def svc(**annotations: str) -> Service:
    return Service("ns", "web", annotations=tuple(sorted(annotations.items())))


def key(knob: str = "") -> str:
    return f"ipvsctl.io/health-check-{knob}" if knob else "ipvsctl.io/health-check"


# --- annotations ------------------------------------------------------------------------------


def test_no_annotation_no_check() -> None:
    assert spec_of(svc()) is None


def test_every_knob() -> None:
    spec = spec_of(
        svc(**{
            key(): "HTTPS", key("interval"): "10s", key("timeout"): "1.5", key("failures"): "2",
            key("successes"): "3", key("retry-delay"): "0.5", key("warmup"): "4", key("port"): "8443",
            key("path"): "/healthz?full=1", key("status-codes"): "200, 300-399", key("host"): "web.example",
            key("insecure"): "true", key("on-failure"): "remove",
        })
    )  # fmt: skip
    assert spec == CheckSpec(
        kind="https", interval=10.0, timeout=1.5, failures=2, successes=3, retry_delay=0.5, warmup=4.0, port=8443,
        path="/healthz?full=1", status_codes=((200, 200), (300, 399)), host="web.example", insecure=True,
        on_failure="remove",
    )  # fmt: skip
    assert spec.accepts(301) and not spec.accepts(204)


@pytest.mark.parametrize(
    ("annotations", "field", "message"),
    [
        ({key(): "ping"}, key(), "unknown check 'ping'"),
        ({key("interval"): "5"}, key("interval"), "has no effect without"),
        ({key(): "tcp", key("intervall"): "5"}, key("intervall"), "unknown health-check setting"),
        ({key(): "tcp", key("interval"): "soon"}, key("interval"), "must be seconds"),
        ({key(): "tcp", key("interval"): "0"}, key("interval"), "must be seconds"),
        ({key(): "tcp", key("failures"): "0"}, key("failures"), "whole number 1…100"),
        ({key(): "tcp", key("port"): "70000"}, key("port"), "whole number 1…65535"),
        ({key(): "http", key("path"): "healthz"}, key("path"), "must start with /"),
        ({key(): "http", key("status-codes"): "2xx"}, key("status-codes"), "is not a status code"),
        ({key(): "http", key("insecure"): "yes"}, key("insecure"), "must be true or false"),
        ({key(): "tcp", key("path"): "/"}, key("path"), "only for http and https"),
        ({key(): "exec"}, key("command"), "needs a command"),
        ({key(): "tcp", key("command"): "true"}, key("command"), "only for exec"),
        ({key(): "tcp", key("on-failure"): "panic"}, key("on-failure"), "must be drain or remove"),
        ({key(): "tcp", key("interval"): "1", key("timeout"): "2"}, key("timeout"), "longer than the interval"),
    ],
)
def test_bad_annotations_name_the_field(annotations: dict[str, str], field: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        spec_of(svc(**annotations))
    assert caught.value.field == f"metadata.annotations.{field}"
    assert message in caught.value.message


# --- probes against servers this test starts on loopback --------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Status(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_tcp_probe(listener: socket.socket) -> None:
    spec = CheckSpec("tcp", timeout=1.0)
    assert run(probe(spec, LOOPBACK, listener.getsockname()[1])) == (True, "connected")
    healthy, reason = run(probe(spec, LOOPBACK, free_port()))
    assert not healthy and "refused" in reason


def test_http_probe_status_codes() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert run(probe(CheckSpec("http", path="/ok"), LOOPBACK, port)) == (True, "status 200")
        assert run(probe(CheckSpec("http", path="/bad"), LOOPBACK, port)) == (False, "status 500")
        assert run(probe(CheckSpec("http", path="/bad", status_codes=((500, 500),)), LOOPBACK, port))[0]
    finally:
        server.shutdown()
        server.server_close()


def test_a_hung_server_is_caught_by_the_timeout(listener: socket.socket) -> None:
    # accepts (the kernel's backlog) but never answers the GET
    started = time.monotonic()
    healthy, reason = run(probe(CheckSpec("http", timeout=0.3), LOOPBACK, listener.getsockname()[1]))
    assert not healthy and reason == "timed out after 0.3 s"
    assert time.monotonic() - started < 2


def test_exec_probe_gets_the_server_and_is_killed_at_its_timeout(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    spec = CheckSpec("exec", command=f'echo "$IPVSCTL_CHECK_ADDRESS $IPVSCTL_CHECK_PORT" > {out}; exit 3')
    assert run(probe(spec, ip("10.1.0.1"), 8080)) == (False, "exit status 3")
    assert out.read_text() == "10.1.0.1 8080\n"
    started = time.monotonic()
    child = tmp_path / "child-lived"
    slow = CheckSpec("exec", timeout=0.3, command=f"sleep 2; touch {child}")
    assert run(probe(slow, ip("10.1.0.1"), 8080)) == (False, "timed out after 0.3 s")
    assert time.monotonic() - started < 1.5
    time.sleep(2.2)
    assert not child.exists()  # the whole process group was killed


# --- the checker's state machine (exec checks on a flag file) ---------------------------------


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_failures_take_a_server_out_and_successes_bring_it_back(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    flag.touch()
    changes: list[tuple[str, str]] = []
    states: list[bool | None] = []
    checker = Checker(lambda ref: changes.append(ref), on_state=lambda _r, _t, healthy: states.append(healthy))
    spec = CheckSpec("exec", command=f"test -e {flag}", interval=0.1, timeout=0.1, failures=3, successes=2,
                     retry_delay=0.05)  # fmt: skip
    ref, target = ("ns", "web"), (ip("10.1.0.1"), 8080)
    try:
        checker.watch(ref, spec, [target])
        assert checker.verdict(ref, *target) is None  # not decided yet: in rotation
        wait_for(lambda: checker.verdict(ref, *target) is True)
        assert changes == []  # unknown → up changes nothing in the kernel
        flag.unlink()
        wait_for(lambda: checker.verdict(ref, *target) is False)
        assert changes == [ref] and states == [True, False]
        assert checker.results()[(ref, target)].reason == "exit status 1"
        flag.touch()
        wait_for(lambda: checker.verdict(ref, *target) is True)
        assert changes == [ref, ref] and states == [True, False, True]
        checker.forget(ref)
        wait_for(lambda: checker.verdict(ref, *target) is None)
        assert states[-1] is None
    finally:
        checker.close()


def test_targets_are_the_endpoints_kube_proxy_would_use(manifests) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.test_translate import PORT, eps
    from tests.unit.test_translate import svc as text

    snapshot = manifests(
        text(f"  clusterIP: 10.96.0.1\n{PORT}")
        + eps('[{addresses: ["10.1.0.1"]}, {addresses: ["10.1.0.2"], conditions: {ready: false}}]')
    )
    (found,) = snapshot.services
    assert targets_of(found, snapshot.slices) == {(ip("10.1.0.1"), 8080)}


# --- the engine -------------------------------------------------------------------------------


class Verdicts:
    """In place of the Checker: verdicts set by the test, and what the engine asked to watch."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.watched: dict[tuple[str, str], tuple[CheckSpec, frozenset[object]]] = {}

    def verdict(self, ref: tuple[str, str], address: object, port: int) -> bool | None:
        return False if str(address) in self.down else None

    def watch(self, ref: tuple[str, str], spec: CheckSpec, targets: frozenset[object]) -> None:
        self.watched[ref] = (spec, frozenset(targets))

    def forget(self, ref: tuple[str, str]) -> None:
        self.watched.pop(ref, None)


def checked(h: Harness, annotations: str, ready: dict[str, bool]) -> Verdicts:
    verdicts = Verdicts()
    h.engine.checks = verdicts  # type: ignore[assignment]
    h.put(service("a", "10.0.0.1", annotations=annotations) + "---" + endpoints("a", ready))
    return verdicts


def test_the_engine_drains_a_failed_server_and_restores_it(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    v = checked(h, "ipvsctl.io/health-check: tcp", {"203.0.113.1": True, "203.0.113.2": True, "203.0.113.3": False})
    h.engine.resync(h.world.take().services, retranslate=True)
    spec, targets = v.watched[("demo", "a")]
    assert spec.kind == "tcp" and targets == {(ip("203.0.113.1"), 8080), (ip("203.0.113.2"), 8080)}
    v.down.add("203.0.113.1")
    h.world.touch([("demo", "a")])  # what the checker's on_change does
    assert h.sync().ok  # type: ignore[attr-defined]
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 0, "203.0.113.2": 1}
    v.down.clear()
    h.world.touch([("demo", "a")])
    h.sync()
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1, "203.0.113.2": 1}


def test_the_engine_uses_the_sorry_server_when_every_check_fails(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    annotations = (
        "ipvsctl.io/health-check: tcp, ipvsctl.io/health-check-on-failure: remove, "
        "ipvsctl.io/sorry-server: '198.51.100.9:80'"
    )
    v = checked(h, annotations, {"203.0.113.1": True})
    h.engine.resync(h.world.take().services, retranslate=True)
    v.down.add("203.0.113.1")
    h.world.touch([("demo", "a")])
    h.sync()
    assert weights(h.kernel, tcp("10.0.0.1")) == {"198.51.100.9": 1}  # 203.0.113.1 had no connections: deleted


def test_a_bad_check_annotation_holds_that_service_and_stops_its_checks(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    v = checked(h, "ipvsctl.io/health-check: tcp", {"203.0.113.1": True})
    h.engine.resync(h.world.take().services, retranslate=True)
    assert ("demo", "a") in v.watched
    h.put(service("a", "10.0.0.1", annotations="ipvsctl.io/health-check: ping"))
    h.sync()
    assert ("demo", "a") not in v.watched
    assert ("demo", "a") in h.engine.held
    (problem,) = h.engine.problems[("demo", "a")]
    assert problem.field == "metadata.annotations.ipvsctl.io/health-check" and "ping" in problem.message
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1}  # held as it was


def test_without_a_checker_the_annotations_are_ignored(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.engine.warn_checks = True
    h.put(service("a", "10.0.0.1", annotations="ipvsctl.io/health-check: ping") + "---"
          + endpoints("a", {"203.0.113.1": True}))  # fmt: skip
    assert h.engine.resync(h.world.take().services, retranslate=True).ok
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1}
    assert h.engine._warned_checks == {("demo", "a")}


def test_the_engine_checks_with_the_config_defaults(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.engine.check_defaults = {"interval": "7", "failures": "4", "path": "/healthz"}
    v = checked(h, "ipvsctl.io/health-check: http, ipvsctl.io/health-check-failures: '2'", {"203.0.113.1": True})
    h.engine.resync(h.world.take().services, retranslate=True)
    spec, _ = v.watched[("demo", "a")]
    assert (spec.interval, spec.failures, spec.path) == (7.0, 2, "/healthz")  # the Service's own wins
