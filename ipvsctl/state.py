"""The ownership record and the write lock, under the state directory (/run/ipvsctl).

IPVS has no owner tag, so this record is the only way to know what ipvsctl created. It lives
in /run on purpose: IPVS state vanishes at reboot, and so does the record. Callers record
intent *before* the kernel write, so a crash at any instant leaves at worst a claim on
something that does not exist (forgotten on the next run), never an object we created but do
not know about.

Two files: ``owned.json``, the whole record, replaced atomically (temporary file, fsync,
rename); and ``owned.journal``, patches appended since (one JSON line each, fsynced): "drop
these entries, then put these". The agent changes a few virtual servers at a time and appends
a patch, so its cost does not grow with the number of Services; every full write empties the
journal. A crash can tear only the last line, which loading then ignores; replaying a patch
the snapshot already holds changes nothing.
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
from typing import IO, Any

from ipvsctl.errors import LockBusy, StateError
from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import Protocol, RealKey, ServiceKey
from ipvsctl.plan import DrainKey, Ownership

RECORD = "owned.json"
JOURNAL = "owned.journal"
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


def _service_to_json(key: ServiceKey, owner: Owner) -> dict[str, Any]:
    return {**_key_to_json(key), "namespace": owner.namespace, "name": owner.name, "port_name": owner.port_name}


def _sorted_services(owned: Ownership) -> list[tuple[ServiceKey, Owner]]:
    return sorted(owned.services.items(), key=lambda item: item[0].sort_key())


def _rest_to_json(owned: Ownership) -> dict[str, Any]:
    return {
        "addresses": sorted(str(a) for a in owned.addresses),
        "draining": [
            {"service": _key_to_json(s), "address": str(r.address), "port": r.port, "since": since}
            for (s, r), since in owned.draining.items()
        ],
    }


def encode(owned: Ownership) -> dict[str, Any]:
    return {
        "version": VERSION,
        "services": [_service_to_json(k, o) for k, o in _sorted_services(owned)],
        **_rest_to_json(owned),
    }


def write_record(handle: IO[str], owned: Ownership) -> None:
    """``encode(owned)`` as JSON, one virtual server a line, written as it is encoded: the record
    of 10,000 virtual servers is never held whole, as objects or as text."""
    handle.write(f'{{"version": {VERSION}, "services": [')
    for i, (key, owner) in enumerate(_sorted_services(owned)):
        handle.write("\n " if i == 0 else ",\n ")
        handle.write(json.dumps(_service_to_json(key, owner)))
    rest = _rest_to_json(owned)
    handle.write(f'\n], "addresses": {json.dumps(rest["addresses"])}, "draining": [')
    for i, entry in enumerate(rest["draining"]):
        handle.write("\n " if i == 0 else ",\n ")
        handle.write(json.dumps(entry))
    handle.write("\n]}\n")


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


def patched(owned: Ownership, drop: Ownership, put: Ownership) -> Ownership:
    """``owned`` without drop's entries, then with put's (what one journal line does)."""
    services = {k: o for k, o in owned.services.items() if k not in drop.services}
    services.update(put.services)
    draining = {k: t for k, t in owned.draining.items() if k not in drop.draining}
    draining.update(put.draining)
    return Ownership(services, (owned.addresses - drop.addresses) | put.addresses, draining)


class Store:
    """Reads and writes the ownership record in one state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / RECORD
        self.journal = directory / JOURNAL
        self.patches = 0  # lines in the journal (as loaded, plus appended since)

    def load(self) -> Ownership:
        owned = self._load_snapshot()
        try:
            lines = self.journal.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as err:
            raise StateError(f"cannot read {self.journal}: {err.strerror}") from None
        self.patches = 0
        for number, line in enumerate(lines, 1):
            try:
                raw = json.loads(line)
            except ValueError:
                continue  # torn by a crash mid-append: that write never completed, nor what followed it
            try:
                owned = patched(owned, decode(raw["drop"]), decode(raw["put"]))
            except (ValueError, KeyError, TypeError) as err:
                raise self._damaged(self.journal, f"line {number}: {err}") from None
            self.patches += 1
        return owned

    def _load_snapshot(self) -> Ownership:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Ownership()
        except OSError as err:
            raise StateError(f"cannot read {self.path}: {err.strerror}") from None
        try:
            return decode(json.loads(text))
        except (ValueError, KeyError, TypeError) as err:
            raise self._damaged(self.path, str(err)) from None

    @staticmethod
    def _damaged(path: Path, why: str) -> StateError:
        return StateError(
            f"{path} is damaged ({why}); move owned.json and owned.journal aside to start over "
            "(ipvsctl will then treat every existing virtual server as foreign)"
        )

    def save(self, owned: Ownership) -> None:
        """Write the whole record, then empty the journal (the record holds its patches)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            tmp = self.path.with_suffix(".tmp")
            # 0o644 whatever the umask: whoever can write the record can make ipvsctl delete
            # virtual servers that are not its own.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.fchmod(fd, 0o644)
            with open(fd, "w", encoding="utf-8") as handle:
                write_record(handle, owned)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            if self.patches or self.journal.exists():
                self.journal.unlink(missing_ok=True)
            self.patches = 0
        except OSError as err:
            raise StateError(f"cannot write {self.path}: {err.strerror}") from None

    def append(self, drop: Ownership, put: Ownership) -> None:
        """Record a patch: drop's entries leave the record, then put's enter it."""
        line = json.dumps({"drop": encode(drop), "put": encode(put)}, separators=(",", ":")) + "\n"
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(self.journal, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line  # a torn line from a crash stays on its own line
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise StateError(f"cannot write {self.journal}: {err.strerror}") from None
        self.patches += 1

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold the write lock; wait up to ``timeout`` seconds for another ipvsctl to finish."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            # 0o600: a user who could open the lock could flock() it and stall every ipvsctl.
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)
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
