"""A fake kube-apiserver for tests: list and watch as the real one does them, plus fault knobs.

One global resourceVersion counts every change. Each resource path has a store of objects and
shares one event log; a watch replays the log after its resourceVersion, then follows it live.
``compact()`` forgets the log, so watching from an older resourceVersion is answered 410 (an ERROR
event in a 200 stream, or an HTTP 410 with ``gone_as_http``). Faults: ``drop_watches`` cuts the
open streams mid-way, ``stall_watches`` makes them go silent, ``end_watches`` ends them as a
server timeout does, ``fail_next`` answers the next requests with an error status, and ``hold``
keeps requests to a path waiting. Every request is recorded in ``requests``.
"""

from __future__ import annotations

import copy
import itertools
import json
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SERVICES = "/api/v1/services"
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
NODES = "/api/v1/nodes"
RESOURCES = {  # path: (kind, apiVersion, namespaced)
    SERVICES: ("Service", "v1", True),
    ENDPOINT_SLICES: ("EndpointSlice", "discovery.k8s.io/v1", True),
    NODES: ("Node", "v1", False),
}
REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 410: "Expired", 429: "TooManyRequests"}
TICK = 0.02  # how often a waiting handler looks at the knobs


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    peer: int = 0  # the client's port: one per connection

    @property
    def watch(self) -> bool:
        return self.params.get("watch") in ("1", "true")

    @property
    def resource_version(self) -> str | None:
        return self.params.get("resourceVersion")


@dataclass
class _Entry:
    seq: int
    rv: int
    path: str
    type: str
    obj: dict[str, Any]


@dataclass
class _Watch:
    stalled: bool = False
    dropped: bool = False
    ended: bool = False


@dataclass
class _Failure:
    status: int
    path: str | None
    count: int
    after: int


@dataclass
class FakeApi:
    """Start with ``with FakeApi() as api:``; ``api.url`` is the server to give the client."""

    tls: ssl.SSLContext | None = None
    token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
    gone_as_http: bool = False  # answer a too-old watch with HTTP 410 instead of an ERROR event
    close_after_list: bool = False  # "Connection: close" on list answers: the client must reconnect per page
    rv: int = 100
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {path: {} for path in RESOURCES}
        self.log: list[_Entry] = []
        self.compacted = 0
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._watches: list[_Watch] = []
        self._failures: list[_Failure] = []
        self._holds: dict[str, threading.Event] = {}
        self._continues: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self.closing = False
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.api = self
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02})
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def close(self) -> None:
        with self.cond:
            self.closing = True
            for event in self._holds.values():
                event.set()
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()  # joins the handler threads
        self._thread.join()

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the objects ---

    def apply(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update ``obj``; returns the stored copy (with its resourceVersion)."""
        kind, api_version, namespaced = RESOURCES[path]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if namespaced:
            meta.setdefault("namespace", "default")
        key = (meta.get("namespace", ""), meta["name"])
        with self.cond:
            old = self.store[path].get(key)
            self.rv += 1
            obj.update(kind=kind, apiVersion=api_version)
            meta["resourceVersion"] = str(self.rv)
            meta["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
            meta["managedFields"] = [{"manager": "test", "operation": "Update"}]
            self.store[path][key] = obj
            self._append(path, "MODIFIED" if old else "ADDED", obj)
            return copy.deepcopy(obj)

    def delete(self, path: str, name: str, namespace: str = "default") -> None:
        _, _, namespaced = RESOURCES[path]
        with self.cond:
            obj = self.store[path].pop((namespace if namespaced else "", name))
            self.rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._append(path, "DELETED", obj)

    def bookmark(self, path: str) -> int:
        """Send a BOOKMARK at the current resourceVersion to the watches of ``path``; returns it."""
        kind, api_version, _ = RESOURCES[path]
        with self.cond:
            obj = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(self.rv)}}
            self._append(path, "BOOKMARK", obj)
            return self.rv

    def _append(self, path: str, kind: str, obj: dict[str, Any]) -> None:
        seq = next(self._seq)
        self._last_seq = seq
        self.log.append(_Entry(seq, self.rv, path, kind, copy.deepcopy(obj)))
        self.cond.notify_all()

    # --- faults ---

    def compact(self) -> int:
        """Forget history: watches from before the current resourceVersion get 410. Returns it."""
        with self.cond:
            self.compacted = self.rv
            self.log.clear()
            self._continues.clear()
            return self.rv

    def drop_watches(self) -> None:
        """Cut every open watch stream without ending it properly."""
        self._mark("dropped")

    def end_watches(self) -> None:
        """End every open watch stream properly, as when its timeoutSeconds passes."""
        self._mark("ended")

    def stall_watches(self) -> None:
        """Open watch streams stop sending anything (they stay open until the client gives up)."""
        self._mark("stalled")

    def _mark(self, what: str) -> None:
        with self.cond:
            for watch in self._watches:
                setattr(watch, what, True)
            self.cond.notify_all()

    @property
    def open_watches(self) -> int:
        with self.lock:
            return sum(1 for w in self._watches if not (w.stalled or w.dropped or w.ended))

    def fail_next(self, count: int, status: int = 500, path: str | None = None, after: int = 0) -> None:
        """Answer ``count`` requests (to ``path``, or any) with ``status``, once ``after`` more have passed."""
        with self.lock:
            self._failures.append(_Failure(status, path, count, after))

    def hold(self, path: str) -> None:
        """Requests to ``path`` wait until ``release(path)``."""
        with self.lock:
            self._holds[path] = threading.Event()

    def release(self, path: str) -> None:
        with self.lock:
            event = self._holds.pop(path, None)
        if event is not None:
            event.set()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Changes made inside happen at once as far as the handlers can tell."""
        with self.cond:
            yield

    # --- what the client did ---

    def requests_for(self, path: str, watch: bool | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path and (watch is None or r.watch == watch)]

    # --- serving (called from handler threads) ---

    def _admit(self, request: Request) -> tuple[int, str, str] | None:
        """Record a request; an error (status, reason, message) if a knob or the token refuses it."""
        with self.lock:
            self.requests.append(request)
            event = self._holds.get(request.path)
        while event is not None and not event.wait(TICK):
            if self.closing:
                return 503, "ServiceUnavailable", "shutting down"
        with self.lock:
            if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
                return 401, "Unauthorized", "Unauthorized"
            for failure in self._failures:
                if failure.path in (None, request.path):
                    if failure.after > 0:
                        failure.after -= 1
                        continue
                    failure.count -= 1
                    if failure.count <= 0:
                        self._failures.remove(failure)
                    reason = REASONS.get(failure.status, "InternalError")
                    return failure.status, reason, f"injected failure {failure.status}"
            if request.path not in RESOURCES:
                return 404, "NotFound", f"the server could not find the requested resource {request.path}"
        return None

    def _list(self, request: Request) -> tuple[int, dict[str, Any]]:
        kind, api_version, _ = RESOURCES[request.path]
        limit = int(request.params.get("limit") or 0)
        token = request.params.get("continue")
        selector = _selector(request.params.get("fieldSelector", ""))
        with self.lock:
            if token:
                if token not in self._continues:
                    return 410, _status(410, "Expired", "The provided continue parameter is too old")
                rv, objs = self._continues.pop(token)
            else:
                rv = self.rv
                objs = [copy.deepcopy(o) for _, o in sorted(self.store[request.path].items()) if selector(o)]
            page, rest = (objs[:limit], objs[limit:]) if limit else (objs, [])
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if rest:
                token = uuid.uuid4().hex
                self._continues[token] = (rv, rest)
                meta.update({"continue": token, "remainingItemCount": len(rest)})
        for obj in page:  # list items carry no kind or apiVersion, as from the real server
            obj.pop("kind", None)
            obj.pop("apiVersion", None)
        return 200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta, "items": page}

    def _watch(self, handler: _Handler, request: Request) -> None:
        params = request.params
        selector = _selector(params.get("fieldSelector", ""))
        bookmarks = params.get("allowWatchBookmarks") == "true"
        deadline = time.monotonic() + float(params.get("timeoutSeconds") or 1800)
        since = params.get("resourceVersion") or ""
        watch = _Watch()
        with self.cond:
            too_old = since not in ("", "0") and int(since) < self.compacted
            gone = _status(410, "Expired", f"too old resource version: {since} ({self.compacted})")
            if too_old:
                first: list[_Entry] = []
            elif since in ("", "0"):
                first = [
                    _Entry(0, self.rv, request.path, "ADDED", copy.deepcopy(o))
                    for _, o in sorted(self.store[request.path].items())
                ]
            else:
                first = [e for e in self.log if e.path == request.path and e.rv > int(since)]
            seen = self._last_seq
            if not too_old:
                self._watches.append(watch)
        if too_old:
            if self.gone_as_http:
                handler.send_json(410, gone)
            else:
                handler.start_stream()
                handler.send_chunk({"type": "ERROR", "object": gone})
                handler.end_stream()
            return
        try:
            handler.start_stream()
            self._send(handler, first, selector, bookmarks)
            while True:
                with self.cond:
                    while True:
                        if self.closing or watch.dropped:
                            handler.close_connection = True
                            return  # no final chunk: the client sees a broken stream
                        if watch.ended or time.monotonic() >= deadline:
                            handler.end_stream()
                            return
                        if not watch.stalled and self._last_seq > seen:
                            batch = [e for e in self.log if e.seq > seen and e.path == request.path]
                            seen = self._last_seq
                            break
                        self.cond.wait(min(TICK * 10, max(0.0, deadline - time.monotonic())))
                self._send(handler, batch, selector, bookmarks)
        finally:
            with self.lock:
                self._watches.remove(watch)

    @staticmethod
    def _send(
        handler: _Handler, entries: list[_Entry], selector: Callable[[dict[str, Any]], bool], bookmarks: bool
    ) -> None:
        for entry in entries:
            if entry.type == "BOOKMARK" and not bookmarks:
                continue
            if entry.type != "BOOKMARK" and not selector(entry.obj):
                continue
            handler.send_chunk({"type": entry.type, "object": entry.obj})


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _selector(text: str) -> Callable[[dict[str, Any]], bool]:
    """metadata.name / metadata.namespace field selectors, as the API server has them for every kind."""
    wanted: list[tuple[str, str]] = []
    for term in filter(None, text.split(",")):
        name, _, value = term.partition("==") if "==" in term else term.partition("=")
        if name not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f"field label not supported: {name}")
        wanted.append((name.split(".")[1], value))
    return lambda obj: all(obj.get("metadata", {}).get(k, "") == v for k, v in wanted)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins the handlers: no thread or socket outlives a test
    block_on_close = True
    api: FakeApi


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request("GET", url.path, dict(parse_qsl(url.query)), headers, self.client_address[1])
        try:
            refused = api._admit(request)
            if refused is not None:
                status, reason, message = refused
                self.send_json(status, _status(status, reason, message))
            elif request.watch:
                api._watch(self, request)
            else:
                self.send_json(*api._list(request))
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True  # the client went away

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.server.api.close_after_list:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


# --- objects for tests ---


def service(
    name: str, ip: str = "10.96.0.10", namespace: str = "default", port: int = 80, **spec: Any
) -> dict[str, Any]:
    body = {"clusterIP": ip, "ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}]}
    body.update(spec)
    return {"metadata": {"name": name, "namespace": namespace}, "spec": body}


def endpoint_slice(
    name: str, service_name: str, addresses: list[str], namespace: str = "default", port: int = 8080
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


def node(name: str, internal: str, external: str | None = None) -> dict[str, Any]:
    addresses = [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": internal}]
    if external:
        addresses.append({"type": "ExternalIP", "address": external})
    return {"metadata": {"name": name}, "status": {"addresses": addresses}}


# --- TLS material for tests (needs the openssl command) ---


@dataclass(frozen=True)
class Certs:
    """A self-signed server certificate for 127.0.0.1 and a self-signed client certificate (PEM files)."""

    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def server_context(self, client_auth: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        if client_auth:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.client_cert)
        return context


def make_certs(directory: str) -> Certs:
    def pair(name: str, subject: str, extra: list[str]) -> tuple[str, str]:
        cert, key = f"{directory}/{name}.crt", f"{directory}/{name}.key"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                subject,
                "-keyout",
                key,
                "-out",
                cert,
                *extra,
            ],
            check=True,
            capture_output=True,
        )
        return cert, key

    server = pair("server", "/CN=127.0.0.1", ["-addext", "subjectAltName=IP:127.0.0.1"])
    client = pair("client", "/CN=ipvsctl-test", [])
    return Certs(*server, *client)
