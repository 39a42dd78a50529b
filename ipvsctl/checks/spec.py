"""Pure: a Service's health-check annotations → a ``CheckSpec``, with errors naming the annotation.

Knobs and keepalived's names for them: ``interval`` (``delay_loop``), ``timeout``
(``connect_timeout``), ``failures`` (``retry``: failed checks in a row before a server is taken
out), ``successes`` (checks in a row before it is put back), ``retry-delay`` (``delay_before_retry``:
the wait after a failed check before the next), ``warmup`` (``warmup``: the wait before the first
check), ``port`` (``connect_port``), and for HTTP ``path``, ``status-codes`` (``status_code``),
``host`` (``virtualhost``), ``body`` (a text the answer must contain), ``ca-file`` (the CA
bundle TLS is verified against instead of the system's) and ``insecure`` (keepalived's ``SSL_GET``
does not verify; here TLS is verified unless this says ``"true"``); for DNS ``query`` and
``query-type`` (``name`` and ``type`` of keepalived's ``DNS_CHECK``); for UDP ``payload``
(``UDP_CHECK``'s ``payload``, and ``require_reply`` always: a server that does not answer is down).

Defaults for every knob may come from the agent's config (``health-check-defaults``); a
Service's own annotation wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ipvsctl.errors import InputError
from ipvsctl.model.k8s import Service
from ipvsctl.rotation import DRAIN, REMOVE

PREFIX = "ipvsctl.io/health-check"
KINDS = ("tcp", "http", "https", "dns", "udp", "exec")
KNOBS = (
    "interval", "timeout", "failures", "successes", "retry-delay", "warmup", "port", "path", "status-codes",
    "host", "body", "ca-file", "insecure", "query", "query-type", "payload", "command", "on-failure",
)  # fmt: skip
HTTP_ONLY = ("path", "status-codes", "host", "insecure")
ONLY = {
    **dict.fromkeys(HTTP_ONLY, ("http", "https")),
    "ca-file": ("https",),
    "body": ("http", "https", "udp"),
    "query": ("dns",),
    "query-type": ("dns",),
    "payload": ("udp",),
    "command": ("exec",),
}
QUERY_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}
MAX_BODY = 65536
MAX_SECONDS = 3600.0
MAX_COUNT = 100


@dataclass(frozen=True, slots=True)
class CheckSpec:
    kind: str  # one of KINDS
    interval: float = 5.0
    timeout: float = 2.0
    failures: int = 3
    successes: int = 1
    retry_delay: float = 1.0
    warmup: float = 0.0
    port: int | None = None  # None: the endpoint's port
    path: str = "/"
    status_codes: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive ranges
    host: str = ""
    body: str = ""  # a text the answer must contain ("": any answer)
    ca_file: str = ""  # "": the system's CA bundle
    insecure: bool = False
    query: str = "."
    query_type: str = "SOA"
    payload: str = ""
    command: str = ""
    on_failure: str = DRAIN

    def accepts(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.status_codes)


def _field(knob: str = "") -> str:
    return f"metadata.annotations.{PREFIX}-{knob}" if knob else f"metadata.annotations.{PREFIX}"


def _seconds(knob: str, raw: str, minimum: float) -> float:
    text = raw.strip().removesuffix("s")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (minimum <= value <= MAX_SECONDS):
        raise InputError(_field(knob), f"{raw!r} must be seconds, {minimum:g}…{MAX_SECONDS:g} (e.g. 5 or 2.5s)")
    return value


def _count(knob: str, raw: str, low: int, high: int) -> int:
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise InputError(_field(knob), f"{raw!r} must be a whole number {low}…{high}")
    return int(text)


def _status_codes(raw: str) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        low_text, _, high_text = item.partition("-")
        try:
            low, high = int(low_text), int(high_text or low_text)
        except ValueError:
            low = high = 0
        if not (100 <= low <= high <= 599):
            raise InputError(_field("status-codes"), f"{item!r} is not a status code 100…599 or a range like 200-299")
        ranges.append((low, high))
    if not ranges:
        raise InputError(_field("status-codes"), "is empty")
    return tuple(ranges)


def _name(raw: str) -> str:
    name = raw.strip()
    labels = name.rstrip(".").split(".") if name not in (".", "") else []
    if not name or len(name) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        raise InputError(_field("query"), f"{raw!r} is not a DNS name")
    if not name.isascii() or any(c.isspace() or ord(c) < 32 for c in name):
        raise InputError(_field("query"), f"{raw!r} is not a DNS name")
    return name


def _value(knob: str, raw: str) -> tuple[str, object]:
    """One knob's text → (CheckSpec field, value); InputError names the annotation."""
    if knob in ("interval", "timeout"):
        return knob, _seconds(knob, raw, 0.1)
    if knob in ("retry-delay", "warmup"):
        return knob.replace("-", "_"), _seconds(knob, raw, 0.0)
    if knob in ("failures", "successes"):
        return knob, _count(knob, raw, 1, MAX_COUNT)
    if knob == "port":
        return knob, _count(knob, raw, 1, 65535)
    if knob == "path":
        if not raw.startswith("/") or any(c.isspace() or ord(c) < 32 for c in raw):
            raise InputError(_field(knob), f"{raw!r} must start with / and hold no spaces or control characters")
        return knob, raw
    if knob == "status-codes":
        return "status_codes", _status_codes(raw)
    if knob == "host":
        if not raw.strip() or any(c.isspace() or ord(c) < 32 for c in raw.strip()):
            raise InputError(_field(knob), f"{raw!r} is not a host name")
        return knob, raw.strip()
    if knob in ("body", "payload"):
        if not raw or len(raw.encode()) > MAX_BODY or "\0" in raw:
            raise InputError(_field(knob), f"must be 1…{MAX_BODY} bytes of text")
        return knob, raw
    if knob == "ca-file":
        if not raw.strip().startswith("/"):
            raise InputError(_field(knob), f"{raw!r} must be an absolute path to a PEM file")
        return "ca_file", raw.strip()
    if knob == "insecure":
        if raw.strip().lower() not in ("true", "false"):
            raise InputError(_field(knob), f"{raw!r} must be true or false")
        return knob, raw.strip().lower() == "true"
    if knob == "query":
        return knob, _name(raw)
    if knob == "query-type":
        if raw.strip().upper() not in QUERY_TYPES:
            raise InputError(_field(knob), f"{raw!r}: choose one of {', '.join(QUERY_TYPES)}")
        return "query_type", raw.strip().upper()
    if knob == "command":
        if not raw.strip():
            raise InputError(_field(knob), "is empty")
        return knob, raw.strip()
    if raw.strip().lower() not in (DRAIN, REMOVE):  # on-failure
        raise InputError(_field(knob), f"{raw!r} must be {DRAIN} or {REMOVE}")
    return "on_failure", raw.strip().lower()


def check_defaults(defaults: Mapping[str, str]) -> None:
    """Raises InputError for a default that no Service could use (the agent's config)."""
    for knob, raw in defaults.items():
        if knob not in KNOBS:
            raise InputError(_field(knob), f"unknown health-check setting; known: {', '.join(KNOBS)}")
        _value(knob, raw)


def spec_of(svc: Service, defaults: Mapping[str, str] | None = None) -> CheckSpec | None:
    """The Service's check, or None without ``ipvsctl.io/health-check``. Raises InputError.

    ``defaults`` (knob → text, from the agent's config) fill in the knobs the Service does not
    set, those its kind uses only: a default ``path`` does not make a TCP check an error."""
    own = {k.removeprefix(PREFIX + "-"): v for k, v in svc.annotations if k.startswith(PREFIX + "-")}
    kind_raw = svc.annotation(PREFIX)
    if kind_raw is None:
        if own:
            knob = sorted(own)[0]
            raise InputError(_field(knob), f"has no effect without {PREFIX} (one of {', '.join(KINDS)})")
        return None
    kind = kind_raw.strip().lower()
    if kind not in KINDS:
        raise InputError(_field(), f"unknown check {kind_raw!r}; choose one of {', '.join(KINDS)}")
    unknown = sorted(set(own) - set(KNOBS))
    if unknown:
        raise InputError(_field(unknown[0]), f"unknown health-check setting; known: {', '.join(KNOBS)}")
    misplaced = sorted(k for k in own if kind not in ONLY.get(k, (kind,)))
    if misplaced:
        knob = misplaced[0]
        raise InputError(_field(knob), f"is only for {' and '.join(ONLY[knob])} checks, not {kind}")
    knobs = {k: v for k, v in (defaults or {}).items() if kind in ONLY.get(k, (kind,))} | own
    values: dict[str, object] = {"kind": kind}
    for knob, raw in knobs.items():
        name, value = _value(knob, raw)
        values[name] = value
    spec = CheckSpec(**values)  # type: ignore[arg-type]
    if spec.kind == "exec" and not spec.command:
        raise InputError(_field("command"), "an exec check needs a command")
    if spec.ca_file and spec.insecure:
        if "ca-file" in own:
            raise InputError(_field("ca-file"), "has no effect with insecure: true (nothing is verified)")
        spec = replace(spec, ca_file="")  # the config's default CA, for a Service that verifies nothing
    if spec.timeout > spec.interval:
        raise InputError(_field("timeout"), f"{spec.timeout:g} s is longer than the interval, {spec.interval:g} s")
    return spec
