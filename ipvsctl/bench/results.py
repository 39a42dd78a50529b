"""The benchmark's results as values, and their JSON form (written in the guest, read on the host)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA = 2
# Schema 1 (before issue 15's rows): the same Timing fields but for those added since, and
# ``agent_first_full_sync``, the agent's logged seconds of a first full sync on a kernel that the
# cold apply had already programmed. It is read with the added rows not measured; that field is
# dropped, since no schema-2 row means the same.
READABLE = (1, 2)


@dataclass(frozen=True)
class Timing:
    """Repeated wall-clock samples of one measure, in seconds, or the reason it failed."""

    samples: tuple[float, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples)

    @property
    def seconds(self) -> float | None:
        """The median sample; None when the measure failed or was not taken."""
        return statistics.median(self.samples) if self.ok else None

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "samples": list(self.samples), "error": self.error}

    @staticmethod
    def from_json(raw: dict[str, Any] | None) -> Timing:
        if not raw:
            return Timing()
        return Timing(tuple(float(s) for s in raw.get("samples", [])), raw.get("error"))


def failed(error: str) -> Timing:
    return Timing((), error)


@dataclass(frozen=True)
class Size:
    """Everything measured at one size: ``services`` Services, ``endpoints`` endpoints each."""

    services: int
    endpoints: int
    reset: str = ""  # how the kernel was emptied before each cold run
    cold_ipvsctl: Timing = field(default_factory=Timing)  # `ipvsctl apply` from YAML manifests, whole process
    # the part of it spent programming the kernel (the "program" phase it logs)
    cold_ipvsctl_program: Timing = field(default_factory=Timing)
    cold_ipvsctl_json: Timing = field(default_factory=Timing)  # the same from JSON manifests (kubectl -o json)
    cold_ipvsctl_json_program: Timing = field(default_factory=Timing)
    cold_ipvsadm: Timing = field(default_factory=Timing)
    cold_keepalived: Timing = field(default_factory=Timing)
    list_ipvsadm: Timing = field(default_factory=Timing)  # ipvsadm -Ln
    diff_ipvsctl: Timing = field(default_factory=Timing)  # `ipvsctl diff` as a whole process, no-op, caches warm
    version_ipvsctl: Timing = field(default_factory=Timing)  # `ipvsctl version` as a whole process, in the VM
    dump_diff_ipvsctl: Timing = field(default_factory=Timing)  # the agent's full resync (Engine.resync)
    # observe() + plan() on a fresh kernel connection, so every destination is decoded
    dump_diff_fresh_ipvsctl: Timing = field(default_factory=Timing)
    edit_ipvsadm: Timing = field(default_factory=Timing)  # one ipvsadm -e process
    # `ipvsctl agent --manifests` on an empty kernel with a fresh state directory: process start →
    # the kernel holds the whole rule set (checked), and the first full sync's own logged seconds
    manifests_agent_start: Timing = field(default_factory=Timing)
    manifests_agent_sync: Timing = field(default_factory=Timing)
    flip_agent_sync: Timing = field(default_factory=Timing)  # the agent's own "seconds"
    flip_agent_end_to_end: Timing = field(default_factory=Timing)  # file written → kernel changed
    agent_peak_rss_bytes: int | None = None  # the --manifests agent's VmHWM after its flips
    # `ipvsctl agent --kubernetes` against the test API server holding the rule set, on an empty
    # kernel: start → its source ready (every first LIST done), start → kernel complete (checked),
    # and the first full sync's own logged seconds
    kube_agent_ready: Timing = field(default_factory=Timing)
    kube_agent_start: Timing = field(default_factory=Timing)
    kube_agent_sync: Timing = field(default_factory=Timing)
    kube_flip_agent_sync: Timing = field(default_factory=Timing)  # the agent's own "seconds"
    kube_flip_end_to_end: Timing = field(default_factory=Timing)  # the API server holds the change → kernel
    kube_agent_peak_rss_bytes: int | None = None
    kube_lists: str = ""  # the agent's LIST requests as the test API server saw them
    notes: tuple[str, ...] = ()

    @property
    def reals(self) -> int:
        return self.services * self.endpoints

    def timing(self, name: str) -> Timing:
        value = getattr(self, name)
        if not isinstance(value, Timing):
            raise KeyError(name)
        return value

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Timing):
                out[f.name] = value.to_json()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Size:
        values: dict[str, Any] = {}
        for f in fields(Size):
            if f.name not in raw:
                continue
            value = raw[f.name]
            if f.type in ("Timing", Timing):
                values[f.name] = Timing.from_json(value)
            elif isinstance(value, list):
                values[f.name] = tuple(value)
            else:
                values[f.name] = value
        return Size(**values)


@dataclass(frozen=True)
class Machine:
    """Where the figures come from."""

    host_cpu: str = "unknown"
    host_cores: int | None = None
    host_kernel: str = "unknown"
    guest_kernel: str = "unknown"
    guest_cpu: str = "unknown"
    guest_cpus: int | None = None
    guest_memory_mb: int | None = None
    emulation: str = "unknown"
    python: str = "unknown"
    ipvsctl: str = "unknown"
    ipvsadm: str = "unknown"
    keepalived: str = "unknown"


@dataclass(frozen=True)
class Results:
    machine: Machine
    sizes: tuple[Size, ...]
    command: str = ""  # as run on the host (scripts/bench …)
    guest_command: str = ""  # as run in the guest
    started: str = ""  # UTC, ISO 8601
    finished: str = ""
    max_services: int = 0
    complete: bool = True  # False: stopped early by an error
    host_version_ipvsctl: Timing = field(default_factory=Timing)  # `ipvsctl version` on the host
    schema: int = SCHEMA  # of the file these were read from

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "machine": {f.name: getattr(self.machine, f.name) for f in fields(Machine)},
            "sizes": [s.to_json() for s in self.sizes],
            "command": self.command,
            "guest_command": self.guest_command,
            "started": self.started,
            "finished": self.finished,
            "max_services": self.max_services,
            "complete": self.complete,
            "host_version_ipvsctl": self.host_version_ipvsctl.to_json(),
        }

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Results:
        schema = raw.get("schema")
        if schema not in READABLE:
            readable = ", ".join(map(str, READABLE))
            raise ValueError(f"results schema {schema!r} cannot be read (this ipvsctl reads schemas {readable})")
        known = {f.name for f in fields(Machine)}
        machine = Machine(**{k: v for k, v in raw.get("machine", {}).items() if k in known})
        return Results(
            machine=machine,
            sizes=tuple(Size.from_json(s) for s in raw.get("sizes", [])),
            command=raw.get("command", ""),
            guest_command=raw.get("guest_command", ""),
            started=raw.get("started", ""),
            finished=raw.get("finished", ""),
            max_services=int(raw.get("max_services", 0)),
            complete=bool(raw.get("complete", True)),
            host_version_ipvsctl=Timing.from_json(raw.get("host_version_ipvsctl")),
            schema=int(schema),
        )
