"""A small Kubernetes API client: paginated lists and watch streams, as raw dicts, on http.client.

One connection per list (its pages share it) and one per watch; nothing is pooled, so a client
is safe to share between threads. A request can be aborted from another thread through a
Cancel, which shuts its socket down and so wakes a reader blocked on it.

Errors: an HTTP error status is an ApiError (410 Gone is ``Gone``, also when a watch stream
reports it in an ERROR event); a broken or malformed connection is an OSError, usually
ConnectionLost; a read that waits longer than the read timeout is a TimeoutError.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from ipvsctl.sources.kube.config import ClusterConfig

PAGE_SIZE = 500
MAX_LINE = 64 * 1024 * 1024  # one watch event; etcd caps objects at 1.5 MiB by default
MAX_ERROR_BODY = 64 * 1024
READ_SIZE = 64 * 1024
USER_AGENT = "ipvsctl"


class ApiError(Exception):
    """The server answered with an error status (or a watch stream sent an ERROR event)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class Gone(ApiError):
    """410: the resourceVersion is too old (compacted); list again."""


class ConnectionLost(ConnectionError):
    """The connection broke, was cancelled, or carried something that is not the Kubernetes API."""


class Cancel:
    """Aborts the requests attached to it, from any thread; once cancelled, new requests fail at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._socks: set[socket.socket] = set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            if self._cancelled:
                raise ConnectionLost("request cancelled")
            self._socks.add(sock)

    def detach(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)


def _shutdown(sock: socket.socket) -> None:
    # The plain-socket shutdown, also for an SSLSocket: it leaves the TLS object to the reader thread.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalive: a peer that vanished (no FIN, no RST) is noticed in about a minute, even on a
    quiet watch whose read timeout is minutes long."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class _Request:
    """One HTTP connection (its pages share it) with its socket attached to the Cancel."""

    def __init__(self, client: Client, read_timeout: float, cancel: Cancel | None) -> None:
        self._cancel = cancel
        self._read_timeout = read_timeout
        self.conn = client._connection()
        self.sock: socket.socket | None = None
        self._open()

    def _open(self) -> None:
        """Connect; from now on the socket waits at most the read timeout, and a Cancel can abort it."""
        try:
            self.conn.connect()
            sock = self.conn.sock
            if sock is None:
                raise ConnectionLost("no socket after connecting")
            sock.settimeout(self._read_timeout)
            _keepalive(sock)
            if self._cancel is not None:
                self._cancel.attach(sock)
            self.sock = sock
        except BaseException:
            self.close()
            raise

    def get(self, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        if self.conn.sock is None:  # the server closed the connection after the last page
            self._detach()
            self._open()
        try:
            self.conn.request("GET", url, headers=headers)
            return self.conn.getresponse()
        except http.client.HTTPException as err:
            raise ConnectionLost(f"bad HTTP response: {err!r}") from None

    def _detach(self) -> None:
        if self._cancel is not None and self.sock is not None:
            self._cancel.detach(self.sock)
        self.sock = None

    def close(self) -> None:
        self._detach()
        self.conn.close()


class Client:
    """Lists and watches one API server described by a ClusterConfig."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        page_size: int = PAGE_SIZE,
        connect_timeout: float = 10.0,
        request_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(config.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {config.server!r}")
        self.config = config
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.page_size = page_size
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._exec_lock = threading.Lock()
        self._exec_token: tuple[str, float | None] | None = None

    # --- requests ---

    def list(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        cancel: Cancel | None = None,
        convert: Callable[[dict[str, Any]], Any] | None = None,
    ) -> tuple[list[Any], str]:
        """All objects at ``path`` (page by page) and the list's resourceVersion.

        ``convert``, if given, is applied to each object as its page arrives, and what it returns
        is kept instead: a page's decoded JSON is let go before the next is asked for, so a list of
        10,000 EndpointSlices never holds them all as dicts at once."""
        base = dict(params or {})
        request = _Request(self, self.request_timeout, cancel)
        try:
            items: list[Any] = []
            token = ""
            while True:
                query = dict(base, limit=str(self.page_size))
                if token:
                    query["continue"] = token
                try:
                    page = self._get_json(request, path, query)
                except Gone:
                    if not token:
                        raise
                    # The continue token expired mid-list: take the whole list in one answer instead.
                    request.close()
                    request = _Request(self, self.request_timeout, cancel)
                    page = self._get_json(request, path, base)
                    items = []
                meta = page.get("metadata") if isinstance(page.get("metadata"), dict) else {}
                page_items = page.get("items") or []
                if not isinstance(page_items, list):
                    raise ConnectionLost(f"GET {path}: the answer has no list of items")
                for item in page_items:
                    if isinstance(item, dict):
                        _slim(item)
                        items.append(item if convert is None else convert(item))
                del page, page_items
                token = meta.get("continue") or ""
                if not token:
                    return items, str(meta.get("resourceVersion") or "")
        finally:
            request.close()

    def watch(
        self,
        path: str,
        resource_version: str,
        timeout_seconds: int,
        params: Mapping[str, str] | None = None,
        *,
        read_timeout: float | None = None,
        cancel: Cancel | None = None,
    ) -> WatchStream:
        """Events after ``resource_version``; the server ends the stream after ``timeout_seconds``.

        ``read_timeout`` (default: ``timeout_seconds`` + 30 s) bounds the silence between two
        reads: a stream quieter than that is dead and raises TimeoutError.
        """
        query = dict(params or {})
        query.update(
            watch="1",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(int(timeout_seconds)),
        )
        request = _Request(self, read_timeout if read_timeout is not None else timeout_seconds + 30.0, cancel)
        try:
            response = self._send(request, path, query)
            if response.status != 200:
                try:
                    raise _error(response, path)
                finally:
                    response.close()
        except BaseException:
            request.close()
            raise
        return WatchStream(request, response, path)

    # --- internals ---

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.connect_timeout, context=self.config.ssl_context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _token(self) -> str | None:
        config = self.config
        if config.token_file is not None:
            return config.read_token_file()
        if config.exec_plugin is not None:
            with self._exec_lock:
                cached = self._exec_token
                if cached is None or (cached[1] is not None and cached[1] - 10 < time.time()):
                    cached = self._exec_token = config.exec_plugin.run()
                return cached[0]
        return config.token

    def _send(self, request: _Request, path: str, query: Mapping[str, str]) -> http.client.HTTPResponse:
        url = f"{self._prefix}{path}?{urlencode(query)}" if query else f"{self._prefix}{path}"
        response = request.get(url, self._headers())
        if response.status == 401:
            with self._exec_lock:
                self._exec_token = None  # an exec token the server no longer takes: run the plugin again
        return response

    def _get_json(self, request: _Request, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        response = self._send(request, path, query)
        try:
            if response.status != 200:
                raise _error(response, path)
            body = json.load(response)
        except http.client.HTTPException as err:
            raise ConnectionLost(f"GET {path}: answer cut short: {err!r}") from None
        except ValueError:
            raise ConnectionLost(f"GET {path}: the answer is not JSON") from None
        finally:
            response.close()
        if not isinstance(body, dict):
            raise ConnectionLost(f"GET {path}: the answer is not a JSON object")
        return body


def _slim(obj: dict[str, Any]) -> None:
    """Drop managedFields: often the largest part of an object, and never read here."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)


def _status_error(status: int, body: Any, fallback: str) -> ApiError:
    reason, message = fallback, ""
    if isinstance(body, dict):
        reason = str(body.get("reason") or fallback)
        message = str(body.get("message") or "")
    return (Gone if status == 410 else ApiError)(status, reason, message)


def _error(response: http.client.HTTPResponse, path: str) -> ApiError:
    try:
        raw = response.read(MAX_ERROR_BODY)
    except (http.client.HTTPException, OSError):
        raw = b""
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = None
    error = _status_error(response.status, body, response.reason or "Error")
    if not error.message:
        error.message = f"GET {path}"
        error.args = (f"{error.status} {error.reason}: GET {path}",)
    return error


class WatchStream:
    """An open watch: iterate for events ({"type": ..., "object": {...}}); ``close`` when done.

    Yields ADDED, MODIFIED, DELETED and BOOKMARK events; an ERROR event is raised as ApiError
    (Gone for 410). The iteration ends when the server ends the stream normally.
    """

    def __init__(self, request: _Request, response: http.client.HTTPResponse, path: str) -> None:
        self._request = request
        self._response = response
        self._path = path
        self._closed = False
        self._buffer = bytearray()
        self._scanned = 0  # the buffer holds no newline before this

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        while True:
            if self._closed:
                raise StopIteration
            try:
                line = self._readline()
            except http.client.HTTPException as err:
                self.close()
                raise ConnectionLost(f"watch {self._path}: stream broke: {err!r}") from None
            except BaseException:
                self.close()
                raise
            if line is None:
                self.close()
                raise StopIteration
            if line.strip():
                return self._event(line)

    def _readline(self) -> bytes | None:
        """The next line, without its newline; None at the proper end of the stream.

        read1, not readline: HTTPResponse.readline takes a chunked stream cut between two chunks
        for its end, and this must tell a server timeout from a broken connection.
        """
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                self._scanned = 0
                return line
            if len(buffer) > MAX_LINE:
                raise ConnectionLost(f"watch {self._path}: an event is larger than {MAX_LINE} bytes")
            self._scanned = len(buffer)
            data = self._response.read1(READ_SIZE)
            if not data:
                if buffer.strip():
                    raise ConnectionLost(f"watch {self._path}: the stream ended inside an event")
                return None
            buffer += data

    def _event(self, line: bytes) -> dict[str, Any]:
        try:
            event = json.loads(line)
        except ValueError:
            self.close()
            raise ConnectionLost(f"watch {self._path}: an event is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict) or not event.get("type"):
            self.close()
            raise ConnectionLost(f"watch {self._path}: an event has no type or object")
        if event["type"] == "ERROR":
            self.close()
            obj = event["object"]
            code = obj.get("code")
            raise _status_error(code if isinstance(code, int) else 500, obj, "Error")
        _slim(event["object"])
        return event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._response.close()
            self._request.close()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
