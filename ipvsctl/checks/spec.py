"""Pure: a Service's health-check annotations → a ``CheckSpec``, with errors naming the annotation.

Knobs and keepalived's names for them: ``interval`` (``delay_loop``), ``timeout``
(``connect_timeout``), ``failures`` (``retry``: failed checks in a row before a server is taken
out), ``successes`` (checks in a row before it is put back), ``retry-delay`` (``delay_before_retry``:
the wait after a failed check before the next), ``warmup`` (``warmup``: the wait before the first
check), ``port`` (``connect_port``), and for HTTP ``path``, ``status-codes`` (``status_code``),
``host`` (``virtualhost``) and ``insecure`` (keepalived's ``SSL_GET`` does not verify; here TLS is
verified unless this says ``"true"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ipvsctl.errors import InputError
from ipvsctl.model.k8s import Service
from ipvsctl.rotation import DRAIN, REMOVE

PREFIX = "ipvsctl.io/health-check"
KINDS = ("tcp", "http", "https", "exec")
KNOBS = (
    "interval", "timeout", "failures", "successes", "retry-delay", "warmup", "port", "path", "status-codes",
    "host", "insecure", "command", "on-failure",
)  # fmt: skip
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
    insecure: bool = False
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


def spec_of(svc: Service) -> CheckSpec | None:
    """The Service's check, or None without ``ipvsctl.io/health-check``. Raises InputError."""
    knobs = {k.removeprefix(PREFIX + "-"): v for k, v in svc.annotations if k.startswith(PREFIX + "-")}
    kind_raw = svc.annotation(PREFIX)
    if kind_raw is None:
        if knobs:
            knob = sorted(knobs)[0]
            raise InputError(_field(knob), f"has no effect without {PREFIX} (one of {', '.join(KINDS)})")
        return None
    kind = kind_raw.strip().lower()
    if kind not in KINDS:
        raise InputError(_field(), f"unknown check {kind_raw!r}; choose one of {', '.join(KINDS)}")
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise InputError(_field(unknown[0]), f"unknown health-check setting; known: {', '.join(KNOBS)}")
    values: dict[str, object] = {"kind": kind}
    for knob, raw in knobs.items():
        if knob in ("interval", "timeout"):
            values[knob] = _seconds(knob, raw, 0.1)
        elif knob in ("retry-delay", "warmup"):
            values[knob.replace("-", "_")] = _seconds(knob, raw, 0.0)
        elif knob in ("failures", "successes"):
            values[knob] = _count(knob, raw, 1, MAX_COUNT)
        elif knob == "port":
            values["port"] = _count(knob, raw, 1, 65535)
        elif knob == "path":
            if not raw.startswith("/") or any(c.isspace() or ord(c) < 32 for c in raw):
                raise InputError(_field(knob), f"{raw!r} must start with / and hold no spaces or control characters")
            values["path"] = raw
        elif knob == "status-codes":
            values["status_codes"] = _status_codes(raw)
        elif knob == "host":
            if not raw.strip() or any(c.isspace() or ord(c) < 32 for c in raw.strip()):
                raise InputError(_field(knob), f"{raw!r} is not a host name")
            values["host"] = raw.strip()
        elif knob == "insecure":
            if raw.strip().lower() not in ("true", "false"):
                raise InputError(_field(knob), f"{raw!r} must be true or false")
            values["insecure"] = raw.strip().lower() == "true"
        elif knob == "command":
            if not raw.strip():
                raise InputError(_field(knob), "is empty")
            values["command"] = raw.strip()
        elif knob == "on-failure":
            if raw.strip().lower() not in (DRAIN, REMOVE):
                raise InputError(_field(knob), f"{raw!r} must be {DRAIN} or {REMOVE}")
            values["on_failure"] = raw.strip().lower()
    spec = CheckSpec(**values)  # type: ignore[arg-type]
    if spec.kind == "exec" and not spec.command:
        raise InputError(_field("command"), "an exec check needs a command")
    if spec.kind != "exec" and spec.command:
        raise InputError(_field("command"), f"is only for exec checks, not {spec.kind}")
    if spec.kind not in ("http", "https") and {"path", "status-codes", "host", "insecure"} & set(knobs):
        knob = sorted({"path", "status-codes", "host", "insecure"} & set(knobs))[0]
        raise InputError(_field(knob), f"is only for http and https checks, not {spec.kind}")
    if spec.timeout > spec.interval:
        raise InputError(_field("timeout"), f"{spec.timeout:g} s is longer than the interval, {spec.interval:g} s")
    return spec
