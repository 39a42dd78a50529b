"""Pure: keepalived's checkers → one Service's ``ipvsctl.io/health-check*`` annotations.

keepalived checks each real server with its own checkers; ipvsctl checks every endpoint of a
Service with the Service's one check. So each real server's first checker is turned into the
annotations it would need (with keepalived's defaults and the virtual server → real server →
checker cascade of its settings), and the real servers must agree: one that does not is a note,
and the first real server's check is used.

Mapping (keepalived → ipvsctl): ``TCP_CHECK`` → ``tcp``, ``HTTP_GET`` → ``http``, ``SSL_GET`` →
``https`` with ``insecure`` (keepalived does not verify certificates), ``MISC_CHECK`` → ``exec``;
``delay_loop`` (default 60) → interval; ``connect_timeout`` (default 5; ``misc_timeout`` for
MISC_CHECK, default ``delay_loop``) → timeout; ``retry``/``nb_get_retry`` (default 1, MISC_CHECK
0; the checks *after* the first failed one) → failures = retry + 1; ``delay_before_retry``
(default 3 for HTTP_GET and SSL_GET, 1 otherwise) → retry-delay; ``warmup`` → warmup;
``connect_port`` → port; ``url { path, status_code }`` (default 200-299) → path, status-codes;
``virtualhost`` → host; ``inhibit_on_failure`` → on-failure ``drain``, else ``remove``. In a
MISC_CHECK's command, the real server's own address becomes ``$IPVSCTL_CHECK_ADDRESS``, so that
one command serves every endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ipvsctl.checks.spec import MAX_COUNT, MAX_SECONDS
from ipvsctl.importing.model import Note

if TYPE_CHECKING:
    from ipvsctl.importing.keepalived import Checker, RealServer, VirtualServer

KINDS = {"TCP_CHECK": "tcp", "HTTP_GET": "http", "SSL_GET": "https", "MISC_CHECK": "exec"}
DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_STATUS_CODES = "200-299"
MIN_SECONDS = 0.1

Pairs = tuple[tuple[str, str], ...]


def _seconds(value: float) -> str:
    return f"{value:g}"


def checker_pairs(vs: VirtualServer, rs: RealServer, checker: Checker) -> tuple[Pairs, list[Note]]:
    """The annotations (knob, value) one real server's checker needs, and notes on what bent."""
    notes: list[Note] = []
    d = vs.defaults.then(rs.defaults).then(checker.defaults)
    kind = KINDS[checker.kind]
    interval = d.delay_loop if d.delay_loop is not None else DEFAULT_DELAY_LOOP
    if not MIN_SECONDS <= interval <= MAX_SECONDS:
        clamped = min(max(interval, MIN_SECONDS), MAX_SECONDS)
        notes.append(Note(checker.where, f"delay_loop {interval:g}: ipvsctl's interval is "
                                         f"{MIN_SECONDS:g}…{MAX_SECONDS:g} s; {clamped:g} is used"))  # fmt: skip
        interval = clamped
    if kind == "exec":
        timeout = checker.misc_timeout if checker.misc_timeout is not None else interval
        retry = d.retry if d.retry is not None else 0
    else:
        timeout = d.connect_timeout if d.connect_timeout is not None else DEFAULT_CONNECT_TIMEOUT
        retry = d.retry if d.retry is not None else 1
    if timeout > interval or timeout < MIN_SECONDS:
        clamped = min(max(timeout, MIN_SECONDS), interval)
        notes.append(Note(checker.where, f"timeout {timeout:g}: ipvsctl's timeout is {MIN_SECONDS:g} s up to the "
                                         f"interval ({interval:g} s); {clamped:g} is used"))  # fmt: skip
        timeout = clamped
    failures = retry + 1
    if failures > MAX_COUNT:
        notes.append(Note(checker.where, f"retry {retry}: ipvsctl counts at most {MAX_COUNT} failures"))
        failures = MAX_COUNT
    retry_delay = d.delay_before_retry
    if retry_delay is None:
        retry_delay = 3.0 if kind in ("http", "https") else 1.0
    retry_delay = min(retry_delay, MAX_SECONDS)
    pairs: list[tuple[str, str]] = [
        ("", kind),
        ("interval", _seconds(interval)),
        ("timeout", _seconds(timeout)),
        ("failures", str(failures)),
        ("retry-delay", _seconds(retry_delay)),
    ]
    if d.warmup is not None:
        pairs.append(("warmup", _seconds(min(d.warmup, MAX_SECONDS))))
    if checker.connect_port is not None:
        pairs.append(("port", str(checker.connect_port)))
    if kind in ("http", "https"):
        url = checker.urls[0] if checker.urls else None
        if len(checker.urls) > 1:
            notes.append(Note(checker.urls[1].where, "a second url: ipvsctl checks one path; the first is used"))
        pairs.append(("path", url.path if url is not None and url.path is not None else "/"))
        codes = url.status_codes if url is not None and url.status_codes else (DEFAULT_STATUS_CODES,)
        pairs.append(("status-codes", ",".join(codes)))
        host = url.virtualhost if url is not None and url.virtualhost is not None else d.virtualhost
        if host is not None:
            pairs.append(("host", host))
        if kind == "https":
            pairs.append(("insecure", "true"))
    if kind == "exec":
        if not checker.misc_path:
            notes.append(Note(checker.where, "MISC_CHECK without misc_path checks nothing; left out"))
            return (), notes
        own = re.compile(rf"(?<![\w.:]){re.escape(str(rs.address))}(?![\w.:])")
        pairs.append(("command", own.sub("$IPVSCTL_CHECK_ADDRESS", checker.misc_path)))
    pairs.append(("on-failure", "drain" if d.inhibit_on_failure else "remove"))
    return tuple(pairs), notes


def _describe(pairs: Pairs) -> str:
    if not pairs:
        return "no check"
    return ", ".join(f"{k}={v}" if k else v for k, v in pairs)


def service_check(vs: VirtualServer, reals: Sequence[RealServer]) -> tuple[Pairs, list[Note]]:
    """The Service's check: the first real server's, with notes where others differ."""
    notes: list[Note] = []
    chosen: Pairs | None = None
    first = None
    for rs in reals:
        if len(rs.checkers) > 1:
            notes.append(Note(rs.checkers[1].where, "a second checker: ipvsctl runs one check per Service; "
                                                    "the first is used"))  # fmt: skip
        pairs: Pairs = ()
        if rs.checkers:
            pairs, found = checker_pairs(vs, rs, rs.checkers[0])
            notes.extend(found)
        if chosen is None:
            chosen, first = pairs, rs
        elif pairs != chosen:
            assert first is not None
            notes.append(Note(rs.where, f"its check ({_describe(pairs)}) differs from that of {first.address} "
                                        f"({_describe(chosen)}) at {first.where}; ipvsctl checks every real server "
                                        "of a Service alike, with the latter"))  # fmt: skip
    return chosen or (), notes
