"""The values every importer produces: virtual servers as ipvsctl can express them, and notes
on what it cannot.

An importer reads a configuration (keepalived.conf, ``ipvsadm -Sn`` output) into a tuple of
``Imported`` virtual servers and a tuple of ``Note``s, each note saying where (file and line)
something was left out and why. ``ConfigError`` is the input that cannot be read at all: the
import stops there and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipvsctl.model.ipvs import Forward, IPAddress, Protocol


@dataclass(frozen=True, slots=True)
class Where:
    """A line of an input file (1-based)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ConfigError(Exception):
    """Input that cannot be read: a syntax error, a bad address or number, an include loop."""

    def __init__(self, where: Where | str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class Note:
    """Something the input says that the manifests do not: what, and why."""

    where: Where
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Real:
    address: IPAddress
    port: int
    weight: int
    where: Where


@dataclass(frozen=True, slots=True)
class Sorry:
    address: IPAddress
    port: int


@dataclass(frozen=True, slots=True)
class Imported:
    """One virtual server with everything about it that ipvsctl's annotations can say."""

    where: Where
    protocol: Protocol
    address: IPAddress
    port: int
    scheduler: str
    scheduler_flags: tuple[str, ...] = ()  # ipvsadm's names: sh-port, mh-fallback, ...
    persistence: int | None = None  # seconds of client persistence; None: not persistent
    forward: Forward = Forward.MASQ
    reals: tuple[Real, ...] = ()
    sorry: Sorry | None = None
    quorum: int | None = None  # only with a sorry server
    # The Service's health check as ipvsctl.io/health-check annotations: ("", kind) first, then
    # (knob, value) pairs; empty without a check.
    check: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Result:
    servers: tuple[Imported, ...]
    notes: tuple[Note, ...]
