"""Operations the planner emits and a kernel executes, one frozen value each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import FrozenInstanceError, dataclass

from ipvsctl.model.ipvs import IPAddress, RealKey, RealServer, ServiceKey, VirtualServer


@dataclass(frozen=True, slots=True)
class AddService:
    server: VirtualServer


@dataclass(frozen=True, slots=True)
class EditService:
    server: VirtualServer


@dataclass(frozen=True, slots=True)
class DeleteService:
    key: ServiceKey


class AddReal:
    """Add a real server to a virtual server.

    A frozen value like the other operations, but not a dataclass: ``AddReal.at`` makes one
    that holds a translation's packed real servers and a position instead of a built
    ``RealServer``, and builds it when ``server`` is read. A cold start plans one per real
    server: at 10,000 Services of 10 endpoints the 100,000 built ones (with their keys and
    addresses, 280 bytes each) were the largest thing the agent's first sync held. Equal, hashed
    and shown by its fields, however it holds them."""

    __slots__ = ("_index", "_server", "service")
    __match_args__ = ("service", "server")

    service: ServiceKey
    _server: RealServer | Sequence[RealServer]
    _index: int

    def __init__(self, service: ServiceKey, server: RealServer) -> None:
        _set(self, "service", service)
        _set(self, "_server", server)
        _set(self, "_index", -1)

    @classmethod
    def at(cls, service: ServiceKey, reals: Sequence[RealServer], index: int) -> AddReal:
        """Add ``reals[index]``, read only when the operation's ``server`` is."""
        made = cls.__new__(cls)
        _set(made, "service", service)
        _set(made, "_server", reals)
        _set(made, "_index", index)
        return made

    @property
    def server(self) -> RealServer:
        if self._index < 0:
            return self._server  # type: ignore[return-value]
        return self._server[self._index]  # type: ignore[index]

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not AddReal:
            return NotImplemented
        return self.service == other.service and self.server == other.server  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.service, self.server))

    def __repr__(self) -> str:
        return f"AddReal(service={self.service!r}, server={self.server!r})"

    def __reduce__(self) -> tuple[type[AddReal], tuple[ServiceKey, RealServer]]:
        return AddReal, (self.service, self.server)


_set = object.__setattr__


@dataclass(frozen=True, slots=True)
class EditReal:
    service: ServiceKey
    server: RealServer


@dataclass(frozen=True, slots=True)
class DeleteReal:
    service: ServiceKey
    key: RealKey


@dataclass(frozen=True, slots=True)
class BindAddress:
    """Put a virtual address on the dummy interface so the node accepts it."""

    address: IPAddress


@dataclass(frozen=True, slots=True)
class UnbindAddress:
    address: IPAddress


Operation = AddService | EditService | DeleteService | AddReal | EditReal | DeleteReal | BindAddress | UnbindAddress
ServiceOperation = AddService | EditService | DeleteService | AddReal | EditReal | DeleteReal
AddressOperation = BindAddress | UnbindAddress


def service_of(op: Operation) -> ServiceKey | None:
    """The virtual server an operation concerns (None for address operations)."""
    match op:
        case AddService(server=s) | EditService(server=s):
            return s.key
        case DeleteService(key=k):
            return k
        case AddReal(service=k) | EditReal(service=k) | DeleteReal(service=k):
            return k
    return None


def describe(op: Operation) -> str:
    """One line a person can read, in ipvsadm's vocabulary."""
    match op:
        case AddService(server=s):
            return f"add virtual server {s.key} scheduler={s.scheduler} flags={s.flags:#x} timeout={s.timeout}"
        case EditService(server=s):
            return f"edit virtual server {s.key} scheduler={s.scheduler} flags={s.flags:#x} timeout={s.timeout}"
        case DeleteService(key=k):
            return f"delete virtual server {k}"
        case AddReal(service=k, server=r):
            return f"add real server {r.key} to {k} weight={r.weight} forward={r.forward.name.lower()}"
        case EditReal(service=k, server=r):
            return f"edit real server {r.key} of {k} weight={r.weight} forward={r.forward.name.lower()}"
        case DeleteReal(service=k, key=r):
            return f"delete real server {r} from {k}"
        case BindAddress(address=a):
            return f"bind address {a}"
        case UnbindAddress(address=a):
            return f"unbind address {a}"
    raise TypeError(op)
