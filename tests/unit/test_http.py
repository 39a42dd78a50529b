"""The agent's HTTP endpoint on a real loopback socket: routes, status codes, addresses, shutdown."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
from collections.abc import Iterator

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from ipvsctl.agent.health import SyncStatus
from ipvsctl.agent.http import Server, parse_address, serve
from ipvsctl.agent.metrics import Metrics

PERIOD = 30.0
NOW = 10_000.0


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")


class Holder:
    """The status the server reads, changed by the tests."""

    def __init__(self, status: SyncStatus) -> None:
        self.status = status

    def __call__(self) -> SyncStatus:
        return self.status


HEALTHY = SyncStatus(started=NOW - 100, ready=True, last_success=NOW - 3.1)


@contextlib.contextmanager
def running(status: SyncStatus = HEALTHY, address: str = "127.0.0.1:0") -> Iterator[tuple[Server, Holder, Metrics]]:
    holder = Holder(status)
    metrics = Metrics()
    server = serve(address, metrics, holder, PERIOD, clock=lambda: NOW)
    try:
        yield server, holder, metrics
    finally:
        server.close()


def get(port: int, path: str, host: str = "127.0.0.1", method: str = "GET") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path)
        with conn.getresponse() as response:
            return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


# --- parse_address -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9842", ("127.0.0.1", 9842)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9842", ("::1", 9842)),
        ("[fd00::5]:0", ("fd00::5", 0)),
        ("[::]:9842", ("::", 9842)),
        (":9842", ("", 9842)),
        (":0", ("", 0)),
        ("localhost:9842", ("localhost", 9842)),
        ("node-1.example.org:65535", ("node-1.example.org", 65535)),
        (" 127.0.0.1:9842 ", ("127.0.0.1", 9842)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no port"),
        ("9842", "no port"),
        ("127.0.0.1", "no port"),
        ("127.0.0.1:", "port '' is not a number"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("127.0.0.1:-1", "port '-1' is not a number"),
        ("127.0.0.1:65536", "port 65536 is out of range"),
        ("::1:9842", "put an IPv6 address in brackets"),
        ("[::1:9842", "missing ']'"),
        ("[::1]9842", "missing ':PORT'"),
        ("[127.0.0.1]:9842", "is not an IPv6 address"),
        ("[nope]:9842", "is not an IPv6 address"),
        ("999.1.1.1:80", "is not an IP address or host name"),
        ("bad_host:80", "is not an IP address or host name"),
    ],
)
def test_parse_address_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="listen address") as info:
        parse_address(text)
    assert message in str(info.value)


def test_serve_rejects_a_bad_address() -> None:
    with pytest.raises(ValueError, match="no port"):
        serve("9842", Metrics(), Holder(HEALTHY), PERIOD, clock=lambda: NOW)


# --- routes --------------------------------------------------------------------------------------


def test_metrics_endpoint() -> None:
    with running() as (server, _, metrics):
        metrics.count_repairs(7)
        metrics.observe_sync("full", 0.02, ok=True, now=NOW)
        code, content_type, body = get(server.port, "/metrics")
    assert code == 200
    assert content_type.startswith("text/plain")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    assert values[("ipvsctl_drift_repairs_total", ())] == 7
    assert values[("ipvsctl_syncs_total", (("kind", "full"), ("result", "ok")))] == 1
    assert values[("ipvsctl_last_successful_sync_timestamp_seconds", ())] == NOW


def test_metrics_with_query_string_and_head() -> None:
    with running() as (server, _, _):
        code, _, body = get(server.port, "/metrics?name[]=x")
        assert code == 200
        assert b"ipvsctl_syncs_total" in body
        code, _, body = get(server.port, "/metrics", method="HEAD")
        assert code == 200
        assert body == b""


def test_healthz_and_readyz_when_healthy() -> None:
    with running() as (server, _, _):
        assert get(server.port, "/healthz") == (200, "text/plain; charset=utf-8", b"ok: last sync 3.1s ago\n")
        assert get(server.port, "/readyz") == (200, "text/plain; charset=utf-8", b"ok: last sync 3.1s ago\n")


def test_healthz_503_when_sync_is_stale() -> None:
    with running() as (server, holder, _):
        holder.status = SyncStatus(NOW - 500, ready=True, last_success=NOW - 60.5, last_error="EPERM")
        code, _, body = get(server.port, "/healthz")
        assert code == 503
        assert body == b"last successful sync 60.5s ago, limit 60s: EPERM\n"
        code, _, body = get(server.port, "/readyz")
        assert code == 503
        assert body.startswith(b"last successful sync")


def test_waiting_for_sources_is_alive_but_not_ready() -> None:
    with running(SyncStatus(NOW - 90, ready=False)) as (server, _, _):
        code, _, body = get(server.port, "/healthz")
        assert code == 200
        assert body.startswith(b"waiting for the first complete list from the sources")
        code, _, body = get(server.port, "/readyz")
        assert code == 503
        assert body.startswith(b"not ready: waiting for the first complete list from the sources")


@pytest.mark.parametrize("path", ["/", "/metricsx", "/healthz/x", "/favicon.ico"])
def test_unknown_paths_are_404(path: str) -> None:
    with running() as (server, _, _):
        code, _, body = get(server.port, path)
    assert code == 404
    assert body.startswith(b"not found")


def test_a_failing_status_callback_is_a_500_and_logged() -> None:
    def broken() -> SyncStatus:
        raise RuntimeError("loop state unreadable")

    server = serve("127.0.0.1:0", Metrics(), broken, PERIOD)
    try:
        with capture_logs() as logged:
            code, _, body = get(server.port, "/healthz")
    finally:
        server.close()
    assert code == 500
    assert b"loop state unreadable" in body
    assert any(e["log_level"] == "error" for e in logged)


@pytest.fixture
def debug_logs() -> Iterator[list[dict[str, object]]]:
    """Capture structlog events down to debug, whatever level an earlier test configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logged:
            yield logged
    finally:
        structlog.configure(**saved)


def test_requests_are_logged_to_structlog_not_stderr(
    capfd: pytest.CaptureFixture[str], debug_logs: list[dict[str, object]]
) -> None:
    with running() as (server, _, _):
        get(server.port, "/healthz")
        get(server.port, "/nope")
    assert capfd.readouterr().err == ""
    lines = [e for e in debug_logs if e["event"] == "http"]
    assert len(lines) == 2
    assert all(e["log_level"] == "debug" for e in lines)
    assert "/nope" in str(lines[1]["message"])


# --- addresses and shutdown ----------------------------------------------------------------------


@needs_ipv6
def test_ipv6_address() -> None:
    with running(address="[::1]:0") as (server, _, _):
        assert server.host == "::1"
        assert get(server.port, "/healthz", host="::1")[0] == 200


def test_all_addresses() -> None:
    with running(address=":0") as (server, _, _):
        assert get(server.port, "/healthz", host="127.0.0.1")[0] == 200
        if ipv6_loopback():
            assert get(server.port, "/healthz", host="::1")[0] == 200


def test_close_frees_the_port() -> None:
    server = serve("127.0.0.1:0", Metrics(), Holder(HEALTHY), PERIOD, clock=lambda: NOW)
    port = server.port
    assert port > 0
    assert get(port, "/healthz")[0] == 200
    with pytest.raises(OSError):
        serve(f"127.0.0.1:{port}", Metrics(), Holder(HEALTHY), PERIOD, clock=lambda: NOW).close()
    server.close()
    server.close()  # twice is fine
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    again = serve(f"127.0.0.1:{port}", Metrics(), Holder(HEALTHY), PERIOD, clock=lambda: NOW)
    try:
        assert again.port == port
        assert get(port, "/healthz")[0] == 200
    finally:
        again.close()
