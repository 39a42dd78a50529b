"""The agent's HTTP endpoint: /metrics for Prometheus, /healthz and /readyz for the kubelet.

``serve`` starts a small threaded HTTP server in a daemon thread and returns a ``Server`` to
close it with. Requests are logged through structlog at debug level, never to stderr.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ipvsctl import logs
from ipvsctl.agent.health import SyncStatus, health
from ipvsctl.agent.metrics import Metrics

TEXT = "text/plain; charset=utf-8"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
# How often the serving thread looks for a shutdown request: what ``Server.close`` waits at most.
POLL_INTERVAL = 0.1
_FORMS = "expected HOST:PORT, [IPV6]:PORT or :PORT (e.g. 127.0.0.1:9842, [::1]:9842, :9842)"


def parse_address(text: str) -> tuple[str, int]:
    """Split a listen address into (host, port). An empty host means every address of the node.

    Accepted: "127.0.0.1:9842", "localhost:9842", "[::1]:9842", ":9842"; port 0 picks a free one.
    Raises ValueError saying what is wrong.
    """
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"listen address {text!r}: missing ']' after the IPv6 address; {_FORMS}")
        host, rest = text[1:close], text[close + 1 :]
        if not rest.startswith(":"):
            raise ValueError(f"listen address {text!r}: missing ':PORT' after ']'; {_FORMS}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"listen address {text!r}: {host!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"listen address {text!r}: no port; {_FORMS}")
        if ":" in host:
            raise ValueError(f"listen address {text!r}: put an IPv6 address in brackets, as in [::1]:9842")
        if host:
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
                    raise ValueError(f"listen address {text!r}: {host!r} is not an IP address or host name") from None
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"listen address {text!r}: port {port_text!r} is not a number; {_FORMS}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"listen address {text!r}: port {port} is out of range (0-65535)")
    return host, port


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        sockaddr: tuple[Any, ...],
        family: int,
        dual_stack: bool,
        metrics: Metrics,
        status: Callable[[], SyncStatus],
        sync_period: float,
        clock: Callable[[], float],
    ) -> None:
        self.address_family = family
        self.dual_stack = dual_stack
        self.metrics = metrics
        self.status = status
        self.sync_period = sync_period
        self.clock = clock
        super().__init__(sockaddr, _Handler)

    def server_bind(self) -> None:
        if self.dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind would look up our own name in DNS (getfqdn); nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        logs.get().warning("http request failed", client=str(client_address[0]), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "ipvsctl"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = urlsplit(self.path).path
        srv = self.server
        try:
            if path == "/metrics":
                payload, content_type = srv.metrics.render()
                self._send(HTTPStatus.OK, payload, content_type, body)
                return
            if path in ("/healthz", "/readyz"):
                status = srv.status()
                healthy, reason = health(status, srv.clock(), srv.sync_period)
                ok = healthy and (status.ready or path == "/healthz")
                if path == "/readyz" and healthy and not status.ready:
                    reason = f"not ready: {reason}"
                code = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(code, f"{reason}\n".encode(), TEXT, body)
                return
            self._send(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz or /readyz\n", TEXT, body)
        except Exception as exc:
            logs.get().error("http handler failed", path=path, error=repr(exc))
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc}\n".encode(), TEXT, body)

    def _send(self, code: HTTPStatus, payload: bytes, content_type: str, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logs.get().debug("http", client=self.address_string(), message=format % args)


class Server:
    """A running HTTP endpoint. ``close`` stops it and frees its port; calling it twice is fine."""

    def __init__(self, httpd: _HTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self._closed = False
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve(host: str, port: int) -> tuple[int, tuple[Any, ...], bool]:
    """(family, socket address, dual stack) to bind for a parsed host; "" is every address."""
    if not host:
        if socket.has_ipv6:
            with contextlib.suppress(OSError), socket.socket(socket.AF_INET6, socket.SOCK_STREAM):
                return socket.AF_INET6, ("::", port, 0, 0), True
        return socket.AF_INET, ("0.0.0.0", port), False
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr, False


def serve(
    address: str,
    metrics: Metrics,
    status: Callable[[], SyncStatus],
    sync_period: float,
    clock: Callable[[], float] = time.time,
) -> Server:
    """Listen on ``address`` (see ``parse_address``) and answer in a daemon thread.

    GET /metrics: the exposition of ``metrics``. GET /healthz: 200 or 503 from ``health`` with
    its reason. GET /readyz: 200 only when ``status().ready`` and healthy. Anything else: 404.
    Raises ValueError for a bad address and OSError when it cannot be bound (port in use).
    """
    host, port = parse_address(address)
    family, sockaddr, dual_stack = _resolve(host, port)
    httpd = _HTTPServer(sockaddr, family, dual_stack, metrics, status, sync_period, clock)
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": POLL_INTERVAL},
        name="ipvsctl-http",
        daemon=True,
    )
    thread.start()
    logs.get().debug("http listening", address=address, port=int(httpd.server_address[1]))
    return Server(httpd, thread)
