"""The ownership record and the write lock, under the state directory (/run/ipvsctl).

IPVS has no owner tag, so this record is the only way to know what ipvsctl created. It lives
in /run on purpose: IPVS state vanishes at reboot, and so does the record. Writes are atomic
(temporary file, fsync, rename), and callers record intent *before* the kernel write, so a
crash at any instant leaves at worst a claim on something that does not exist (forgotten on
the next run), never an object we created but do not know about.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ipvsctl.errors import LockBusy, StateError
from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import Protocol, RealKey, ServiceKey
from ipvsctl.plan import DrainKey, Ownership

RECORD = "owned.json"
LOCK = "lock"
VERSION = 1


def _key_to_json(key: ServiceKey) -> dict[str, Any]:
    return {
        "protocol": key.protocol.name if key.protocol else None,
        "address": str(key.address),
        "port": key.port,
        "fwmark": key.fwmark,
    }


def _key_from_json(raw: dict[str, Any]) -> ServiceKey:
    proto = Protocol[raw["protocol"]] if raw.get("protocol") else None
    return ServiceKey(proto, ipaddress.ip_address(raw["address"]), int(raw["port"]), int(raw.get("fwmark", 0)))


def encode(owned: Ownership) -> dict[str, Any]:
    return {
        "version": VERSION,
        "services": [
            {**_key_to_json(k), "namespace": o.namespace, "name": o.name, "port_name": o.port_name}
            for k, o in sorted(owned.services.items(), key=lambda item: item[0].sort_key())
        ],
        "addresses": sorted(str(a) for a in owned.addresses),
        "draining": [
            {"service": _key_to_json(s), "address": str(r.address), "port": r.port, "since": since}
            for (s, r), since in owned.draining.items()
        ],
    }


def decode(raw: dict[str, Any]) -> Ownership:
    if raw.get("version") != VERSION:
        raise ValueError(f"unknown record version {raw.get('version')!r}")
    services = {
        _key_from_json(s): Owner(s["namespace"], s["name"], s.get("port_name", "")) for s in raw.get("services", [])
    }
    addresses = frozenset(ipaddress.ip_address(a) for a in raw.get("addresses", []))
    draining: dict[DrainKey, float] = {
        (_key_from_json(d["service"]), RealKey(ipaddress.ip_address(d["address"]), int(d["port"]))): float(d["since"])
        for d in raw.get("draining", [])
    }
    return Ownership(services, addresses, draining)


class Store:
    """Reads and writes the ownership record in one state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / RECORD

    def load(self) -> Ownership:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Ownership()
        except OSError as err:
            raise StateError(f"cannot read {self.path}: {err.strerror}") from None
        try:
            return decode(json.loads(text))
        except (ValueError, KeyError, TypeError) as err:
            raise StateError(
                f"{self.path} is damaged ({err}); move it aside to start over "
                "(ipvsctl will then treat every existing virtual server as foreign)"
            ) from None

    def save(self, owned: Ownership) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(encode(owned), handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as err:
            raise StateError(f"cannot write {self.path}: {err.strerror}") from None

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold the write lock; wait up to ``timeout`` seconds for another ipvsctl to finish."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StateError(f"cannot open lock in {self.directory}: {err.strerror}") from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                        raise LockBusy(
                            f"another ipvsctl (pid {holder}) is changing IPVS; waited {timeout:g}s "
                            f"for {self.directory / LOCK}"
                        ) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)
