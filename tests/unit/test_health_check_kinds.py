"""The DNS and UDP checks, HTTP body matching, HTTPS against a CA file, and the agent config's
check defaults: each probe against a server this test starts on loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsctl.checks.probe import dns_query, probe
from ipvsctl.checks.spec import KINDS, KNOBS, CheckSpec, check_defaults, spec_of
from ipvsctl.errors import InputError
from ipvsctl.model.k8s import Service
from tests.conftest import ip

LOOPBACK = ip("127.0.0.1")


def svc(**annotations: str) -> Service:
    return Service("ns", "web", annotations=tuple(sorted(annotations.items())))


def key(knob: str = "") -> str:
    return f"ipvsctl.io/health-check-{knob}" if knob else "ipvsctl.io/health-check"


def run(spec: CheckSpec, port: int) -> tuple[bool, str]:
    return asyncio.run(probe(spec, LOOPBACK, port))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def udp_server() -> Iterator[tuple[int, list[bytes], list[bytes | None]]]:
    """A UDP server on loopback: answers each datagram with the next of ``replies`` (None: no
    answer; a DNS reply is built from the query when the item is b"dns:RCODE"); records what came."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)  # so the thread sees ``stop``: a close does not wake a blocked recvfrom
    seen: list[bytes] = []
    replies: list[bytes | None] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            seen.append(data)
            reply = replies.pop(0) if replies else data
            if reply is None:
                continue
            if reply.startswith(b"dns:"):
                rcode, ident = int(reply[4:]), data[:2]
                reply = ident + struct.pack("!HHHHH", 0x8180 | rcode, 1, 0, 0, 0) + data[12:]
            sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], seen, replies
    stop.set()
    thread.join()
    sock.close()


# --- DNS ---------------------------------------------------------------------------------------


def test_dns_query_is_well_formed() -> None:
    packet = dns_query(0x1234, "example.org.", "A")
    assert packet[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert packet[12:] == b"\x07example\x03org\x00" + struct.pack("!HH", 1, 1)
    assert dns_query(1, ".", "SOA")[12:] == b"\x00" + struct.pack("!HH", 6, 1)  # the root


def test_dns_check(udp_server: tuple[int, list[bytes], list[bytes | None]]) -> None:
    port, seen, replies = udp_server
    spec = CheckSpec("dns", query="example.org", query_type="AAAA", timeout=0.5)
    replies.append(b"dns:0")
    assert run(spec, port) == (True, "rcode NOERROR")
    assert seen[-1][12:] == b"\x07example\x03org\x00" + struct.pack("!HH", 28, 1)
    replies.append(b"dns:2")
    assert run(spec, port) == (False, "rcode SERVFAIL")
    replies.append(b"\x00\x01not dns at all")  # an echo is not an answer
    assert run(spec, port) == (False, "an answer that is not a reply to the query")
    replies.append(b"abc")
    assert run(spec, port) == (False, "an answer too short to be DNS")
    replies.append(None)
    assert run(spec, port) == (False, "timed out after 0.5 s")


def test_dns_check_of_a_closed_port_is_refused() -> None:
    healthy, reason = run(CheckSpec("dns", timeout=1.0), free_udp_port())
    assert not healthy and reason == "connection refused"  # ICMP port unreachable, at once


# --- UDP ---------------------------------------------------------------------------------------


def test_udp_check_needs_an_answer(udp_server: tuple[int, list[bytes], list[bytes | None]]) -> None:
    port, seen, replies = udp_server
    assert run(CheckSpec("udp", payload="ping", timeout=0.5), port) == (True, "answered")
    assert seen[-1] == b"ping"
    replies.append(b"pong!")
    assert run(CheckSpec("udp", payload="ping", body="pong", timeout=0.5), port) == (True, "answered")
    replies.append(b"nope")
    assert run(CheckSpec("udp", payload="ping", body="pong", timeout=0.5), port) == (False, "an answer without 'pong'")
    replies.append(None)
    assert run(CheckSpec("udp", timeout=0.3), port) == (False, "timed out after 0.3 s")


# --- HTTP body, HTTPS with a CA file ----------------------------------------------------------


@contextmanager
def http_server(answer: bytes, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A one-answer-per-connection HTTP server on loopback, answering every request ``answer``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)  # so the thread sees ``stop``: a close does not wake a blocked accept
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                conn.recv(4096)
                conn.sendall(answer)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_http_body_must_hold_the_text() -> None:
    body = b"x" * 70000 + b"status: green"
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with http_server(answer) as port:
        assert run(CheckSpec("http", body="status: green"), port) == (True, "status 200")
        assert run(CheckSpec("http", body="status: red"), port) == (
            False,
            "status 200 without 'status: red' in the body",
        )
        assert run(CheckSpec("http", body="Content-Length"), port)[0] is False  # headers are not the body


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, which Debian's ca-certificates pulls in)."""
    where = tmp_path_factory.mktemp("tls")
    cert, key_file = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key_file), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key_file


def test_https_verifies_against_the_ca_file(certificate: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key_file = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key_file)
    with http_server(b"HTTP/1.1 204 No Content\r\n\r\n", server) as port:
        assert run(CheckSpec("https", ca_file=str(cert), timeout=2.0), port) == (True, "status 204")
        healthy, reason = run(CheckSpec("https", timeout=2.0), port)  # the system's CAs do not know it
        assert not healthy and reason.startswith("TLS: ") and "CERTIFICATE_VERIFY_FAILED" in reason
        assert run(CheckSpec("https", insecure=True, timeout=2.0), port) == (True, "status 204")
        missing = tmp_path / "nothing.pem"
        assert run(CheckSpec("https", ca_file=str(missing), timeout=2.0), port) == (
            False,
            f"CA file {missing}: no such file or directory",
        )
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        healthy, reason = run(CheckSpec("https", ca_file=str(junk), timeout=2.0), port)
        assert not healthy and reason.startswith(f"CA file {junk}: ")


# --- annotations and defaults -------------------------------------------------------------------


def test_dns_and_udp_annotations() -> None:
    assert spec_of(svc(**{key(): "dns", key("query"): "example.org", key("query-type"): "aaaa"})) == CheckSpec(
        "dns", query="example.org", query_type="AAAA"
    )
    assert spec_of(svc(**{key(): "dns"})) == CheckSpec("dns", query=".", query_type="SOA")  # keepalived's
    assert spec_of(svc(**{key(): "udp", key("payload"): "ping", key("body"): "pong"})) == CheckSpec(
        "udp", payload="ping", body="pong"
    )


@pytest.mark.parametrize(
    ("annotations", "field", "message"),
    [
        ({key(): "dns", key("query-type"): "ANY"}, key("query-type"), "choose one of A,"),
        ({key(): "dns", key("query"): "a..b"}, key("query"), "is not a DNS name"),
        ({key(): "dns", key("query"): "x" * 64 + ".org"}, key("query"), "is not a DNS name"),
        ({key(): "tcp", key("query"): "example.org"}, key("query"), "only for dns checks"),
        ({key(): "dns", key("payload"): "x"}, key("payload"), "only for udp checks"),
        ({key(): "tcp", key("body"): "ok"}, key("body"), "only for http and https and udp checks"),
        ({key(): "http", key("body"): ""}, key("body"), "bytes of text"),
        ({key(): "https", key("ca-file"): "ca.pem"}, key("ca-file"), "absolute path"),
        ({key(): "http", key("ca-file"): "/ca.pem"}, key("ca-file"), "only for https checks"),
        ({key(): "https", key("ca-file"): "/ca.pem", key("insecure"): "true"}, key("ca-file"), "has no effect"),
    ],
)
def test_bad_annotations_name_the_field(annotations: dict[str, str], field: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        spec_of(svc(**annotations))
    assert caught.value.field == f"metadata.annotations.{field}"
    assert message in caught.value.message


def test_config_defaults_fill_in_what_a_service_does_not_set() -> None:
    defaults = {"interval": "10", "failures": "5", "path": "/healthz", "ca-file": "/etc/ssl/ours.pem"}
    check_defaults(defaults)
    assert spec_of(svc(**{key(): "tcp"}), defaults) == CheckSpec("tcp", interval=10.0, failures=5)  # no path
    assert spec_of(svc(**{key(): "http", key("failures"): "2"}), defaults) == CheckSpec(
        "http", interval=10.0, failures=2, path="/healthz"
    )
    assert spec_of(svc(**{key(): "https"}), defaults) == CheckSpec(
        "https", interval=10.0, failures=5, path="/healthz", ca_file="/etc/ssl/ours.pem"
    )
    # a Service that turns verification off does not inherit the config's CA file
    assert spec_of(svc(**{key(): "https", key("insecure"): "true"}), defaults) == CheckSpec(
        "https", interval=10.0, failures=5, path="/healthz", insecure=True
    )
    assert spec_of(svc(), defaults) is None  # defaults never add a check


@pytest.mark.parametrize(
    ("defaults", "field"),
    [({"interval": "soon"}, "interval"), ({"colour": "red"}, "colour"), ({"query-type": "ANY"}, "query-type")],
)
def test_bad_defaults_are_refused(defaults: dict[str, str], field: str) -> None:
    with pytest.raises(InputError) as caught:
        check_defaults(defaults)
    assert caught.value.field.endswith(f"health-check-{field}")


def test_a_timeout_check_is_bounded() -> None:
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # receives, never answers
        assert run(CheckSpec("udp", timeout=0.2), silent.getsockname()[1]) == (False, "timed out after 0.2 s")
    assert time.monotonic() - started < 2


def test_validate_and_apply_catch_a_check_mistake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks run only in the agent, but `validate` and `apply` report a wrong check annotation
    (the Service is held, as the agent would hold it) and apply the rest."""
    from ipvsctl import cli
    from ipvsctl.kernel.memory import MemoryKernel
    from tests.unit.test_cli import run as cli_run

    kernel = MemoryKernel(node_addresses=[ip("192.0.2.10")])
    monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: kernel)
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(tmp_path / "state"))
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: demo, annotations: "
        "{ipvsctl.io/health-check: http, ipvsctl.io/health-check-path: healthz}}\n"
        "spec: {clusterIP: 198.51.100.98, ports: [{port: 80}]}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: good, namespace: demo, annotations: "
        "{ipvsctl.io/health-check: tcp}}\nspec: {clusterIP: 198.51.100.99, ports: [{port: 80}]}\n"
    )
    want = (
        "bad.yaml: document 1: Service demo/bad: metadata.annotations.ipvsctl.io/health-check-path: "
        "'healthz' must start with /"
    )
    code, _, err = cli_run("validate", "-f", str(manifests))
    assert code != 0 and want in err and "Traceback" not in err
    code, _, err = cli_run("apply", "-f", str(manifests), "--node-ip", "192.0.2.10")
    assert code == 3 and want in err
    assert [vs.server.key.address for vs in kernel.dump()] == [ip("198.51.100.99")]


# --- hostile annotations ---------------------------------------------------------------------

KNOB_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["5", "0", "-1", "1e309", "nan", "inf", "0.1s", "3600", "3601", "65536", "/", "/x y",
                     "200-100", "99", "600", ",", "true", "TRUE", "drain", "remove", "A", "soa", ".", "..",
                     "a" * 300, "\x00", "\u2028", "\uff11\uff12"]),
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(
    kind=st.one_of(
        st.sampled_from(["tcp", "http", "https", "dns", "udp", "exec", "TCP", " http "]), st.text(max_size=8)
    ),
    knobs=st.dictionaries(st.one_of(st.sampled_from(KNOBS), st.text(max_size=12)), KNOB_VALUES, max_size=6),
    defaults=st.dictionaries(st.sampled_from(KNOBS), KNOB_VALUES, max_size=3),
)
def test_any_annotations_give_a_check_or_an_error_naming_one(
    kind: str, knobs: dict[str, str], defaults: dict[str, str]
) -> None:
    annotations = {key(): kind, **{key(k): v for k, v in knobs.items()}}
    try:
        spec = spec_of(svc(**annotations), defaults)
    except InputError as err:
        assert err.field.startswith("metadata.annotations.ipvsctl.io/health-check")
        assert err.message
        return
    assert spec is not None and spec.kind in KINDS
    assert 0.1 <= spec.timeout <= spec.interval <= 3600
    assert 1 <= spec.failures <= 100 and 1 <= spec.successes <= 100
    assert spec.port is None or 1 <= spec.port <= 65535
    dns_query(1, spec.query, spec.query_type)  # any name that passes can be asked for
