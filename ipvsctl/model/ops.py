"""Operations the planner emits and a kernel executes, one frozen value each."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class AddReal:
    service: ServiceKey
    server: RealServer


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
