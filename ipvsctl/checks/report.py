"""The checker's states in a file for ``ipvsctl list``: ``health.json`` in the state directory.

The agent writes it (replaced atomically, at most a few times a second) while it checks, and
removes it when it stops; ``list`` reads it and trusts it only while the process that wrote it
runs. The shape, one object per checked real server::

    {"version": 1, "pid": 1234, "written": 1733560000.0,
     "servers": [{"namespace": "lb", "name": "shop", "address": "203.0.113.21", "port": 8080,
                  "check": "http", "check_port": 8080, "state": "down",
                  "reason": "status 500", "since": 1733559990.2}]}

``state`` is ``up``, ``down`` or ``unknown`` (not yet checked: in rotation, as keepalived
starts its servers); ``since`` is when it took that state (0 while unknown).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ipvsctl.model.ipvs import IPAddress

FILE = "health.json"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Health:
    """One checked real server, as ``list`` shows it."""

    check: str  # the kind, e.g. "http"
    check_port: int
    state: str  # up | down | unknown
    reason: str = ""
    since: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "check": self.check, "check_port": self.check_port, "state": self.state,
            "reason": self.reason, "since": self.since,
        }  # fmt: skip


HealthKey = tuple[str, str, IPAddress, int]  # namespace, name, address, endpoint port


def encode(servers: Mapping[HealthKey, Health], pid: int, written: float) -> dict[str, object]:
    items = sorted(servers.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2].version, kv[0][2], kv[0][3]))
    return {
        "version": VERSION,
        "pid": pid,
        "written": written,
        "servers": [
            {"namespace": ns, "name": name, "address": str(address), "port": port, **health.to_json()}
            for (ns, name, address, port), health in items
        ],
    }


def write(path: Path, servers: Mapping[HealthKey, Health]) -> None:
    """Replace ``path`` atomically (no fsync: it lives under /run and says what is, not what was)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(encode(servers, os.getpid(), time.time()), separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def decode(raw: object) -> dict[HealthKey, Health] | None:
    """The servers of a decoded file, or None for anything not this version's shape."""
    if not isinstance(raw, dict) or raw.get("version") != VERSION or not isinstance(raw.get("servers"), list):
        return None
    out: dict[HealthKey, Health] = {}
    try:
        for item in raw["servers"]:
            key = (str(item["namespace"]), str(item["name"]), ipaddress.ip_address(item["address"]), int(item["port"]))
            out[key] = Health(
                str(item["check"]), int(item["check_port"]), str(item["state"]), str(item.get("reason", "")),
                float(item.get("since", 0.0)),
            )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    return out


def read(directory: Path) -> dict[HealthKey, Health] | None:
    """What the running agent's checker says, or None: no file, a file nobody can trust (its
    writer is gone, or it is damaged), or no checks."""
    try:
        raw = json.loads((directory / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not _alive(raw.get("pid")):
        return None
    return decode(raw)


class Table:
    """The servers of a file, for looking real servers up by Service."""

    def __init__(self, servers: Mapping[HealthKey, Health]) -> None:
        self.servers = servers
        self._by_address: dict[tuple[str, str, IPAddress], list[Health]] = {}
        for (ns, name, address, _), health in servers.items():
            self._by_address.setdefault((ns, name, address), []).append(health)

    def get(self, namespace: str, name: str, address: IPAddress, port: int) -> Health | None:
        """The health of one real server of a Service. A direct-routing or tunnel real server has
        the virtual server's port in the kernel, not its endpoint's: then the address decides."""
        found = self.servers.get((namespace, name, address, port))
        if found is not None:
            return found
        same = self._by_address.get((namespace, name, address), [])
        return same[0] if len(same) == 1 else None


def summary(healths: Iterable[Health | None]) -> str:
    """One virtual server's HEALTH cell: "2 up", "1 up, 1 down", "-" when nothing is checked."""
    counts: dict[str, int] = {}
    for health in healths:
        if health is not None:
            counts[health.state] = counts.get(health.state, 0) + 1
    if not counts:
        return "-"
    return ", ".join(f"{counts[s]} {s}" for s in ("up", "down", "unknown") if s in counts)
