"""What translate produces and plan consumes: the desired IPVS state and who wants each part."""

from __future__ import annotations

from dataclasses import dataclass, field

from ipvsctl.errors import Origin, Problem
from ipvsctl.model.ipvs import RealServer, ServiceKey, VirtualServer


@dataclass(frozen=True, order=True, slots=True)
class Owner:
    """The Service port a virtual server was made for."""

    namespace: str
    name: str
    port_name: str = ""

    @property
    def service(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port_name}" if self.port_name else f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class DesiredService:
    server: VirtualServer
    reals: tuple[RealServer, ...]
    owner: Owner
    bind: bool  # put the address on the dummy interface
    origin: Origin = field(default=Origin("<memory>", 0), compare=False)


@dataclass(frozen=True, slots=True)
class Desired:
    services: dict[ServiceKey, DesiredService] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    # Services (namespace, name) whose input was wrong: their virtual servers are left as they are.
    held: frozenset[tuple[str, str]] = frozenset()
    # True when a whole file could not be read: nothing may be deleted, we cannot know what it held.
    incomplete: bool = False
