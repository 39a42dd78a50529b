"""Kubernetes objects as frozen values: only the fields ipvsctl uses, already validated."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from ipvsctl.errors import Origin, Problem
from ipvsctl.model.ipvs import IPAddress, Protocol


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    protocol: Protocol
    port: int
    target_port: int | str | None = None
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"  # ClusterIP, NodePort, LoadBalancer, ExternalName
    cluster_ips: tuple[IPAddress, ...] = ()
    headless: bool = False
    ip_families: tuple[int, ...] = ()  # 4 and/or 6
    ports: tuple[ServicePort, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    load_balancer_ips: tuple[IPAddress, ...] = ()
    session_affinity_timeout: int | None = None  # None: no ClientIP affinity
    external_traffic_local: bool = False
    internal_traffic_local: bool = False
    annotations: tuple[tuple[str, str], ...] = ()
    origin: Origin = field(default=Origin("<memory>", 0), compare=False)

    def annotation(self, key: str) -> str | None:
        for k, v in self.annotations:
            if k == key:
                return v
        return None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: Protocol


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[IPAddress, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None


# An address packed: its version (4 or 6), then its 4 or 16 bytes. Sorting packed addresses of
# one version sorts them as numbers. An address with a zone (IPv6 ``%eth0``; never from input,
# which refuses them) cannot be packed and is kept as an object.
Packed = bytes
_V4, _V6, _ODD = 4, 6, 0


def pack_address(address: IPAddress) -> Packed | None:
    """``address`` packed, or None for one with a zone."""
    if address.version == 4:
        return b"\x04" + address.packed
    if address.scope_id is not None:  # type: ignore[union-attr]
        return None
    return b"\x06" + address.packed


def unpack_address(raw: Packed) -> IPAddress:
    if raw[0] == _V4:
        return ipaddress.IPv4Address(raw[1:])
    return ipaddress.IPv6Address(raw[1:])


def packed_version(raw: Packed) -> int:
    return raw[0]


_READY, _SERVING, _TERMINATING, _NODE, _ONE = 1, 2, 4, 8, 16


class Endpoints(Sequence[Endpoint]):
    """A slice's endpoints, packed into bytes; reading them builds equal ``Endpoint`` values.

    The agent holds every slice for as long as it runs, and one ``Endpoint`` with its tuple and
    its address took about 200 bytes: 20 MB for 10,000 Services of 10 endpoints. Here an IPv4
    endpoint takes 6 bytes: its conditions (and whether a node index and an address count
    follow), its address packed (``pack_address``). A node name adds its index among the
    slice's node names (a varint), an endpoint with other than one address its count (a
    varint). Translation reads the packed addresses (``rows``) and builds no address objects."""

    __slots__ = ("_count", "_data", "_nodes", "_odd")

    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        data = bytearray()
        nodes: dict[str, int] = {}
        odd: list[IPAddress] = []
        count = 0
        for ep in endpoints:
            flags = (_READY if ep.ready else 0) | (_SERVING if ep.serving else 0)
            flags |= (_TERMINATING if ep.terminating else 0) | (_ONE if len(ep.addresses) == 1 else 0)
            data.append(flags if ep.node_name is None else flags | _NODE)
            if ep.node_name is not None:
                _varint(data, nodes.setdefault(ep.node_name, len(nodes)))
            if len(ep.addresses) != 1:
                _varint(data, len(ep.addresses))
            for address in ep.addresses:
                raw = pack_address(address)
                if raw is None:
                    data.append(_ODD)
                    odd.append(address)
                else:
                    data += raw
            count += 1
        self._data = bytes(data)
        self._nodes = tuple(nodes)
        self._odd = tuple(odd)
        self._count = count

    def __iter__(self) -> Iterator[Endpoint]:
        for addresses, ready, serving, terminating, node in self._rows():
            yield Endpoint(tuple(self._address(a) for a in addresses), ready, serving, terminating, node)

    def rows(self) -> Iterator[tuple[Packed | IPAddress, bool, bool, bool, str | None]]:
        """Per endpoint with an address: its first address (packed; an address object if it
        cannot be), ready, serving, terminating, node name. What translation reads."""
        for addresses, ready, serving, terminating, node in self._rows():
            if addresses:
                first = addresses[0]
                yield (first if isinstance(first, bytes) else self._odd[first]), ready, serving, terminating, node

    def _address(self, item: Packed | int) -> IPAddress:
        return unpack_address(item) if isinstance(item, bytes) else self._odd[item]

    def _rows(self) -> Iterator[tuple[list[Packed | int], bool, bool, bool, str | None]]:
        """Per endpoint: its addresses (packed, or an index into ``_odd``) and the rest."""
        data, nodes = self._data, self._nodes
        i = odd = 0
        end = len(data)
        while i < end:
            flags = data[i]
            i += 1
            node = None
            if flags & _NODE:
                index, i = _read_varint(data, i)
                node = nodes[index]
            if flags & _ONE:
                n = 1
            else:
                n, i = _read_varint(data, i)
            addresses: list[Packed | int] = []
            for _ in range(n):
                tag = data[i]
                if tag == _ODD:
                    addresses.append(odd)
                    odd += 1
                    i += 1
                else:
                    size = 5 if tag == _V4 else 17
                    addresses.append(data[i : i + size])
                    i += size
            yield addresses, bool(flags & _READY), bool(flags & _SERVING), bool(flags & _TERMINATING), node

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Endpoint: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Endpoint, ...]: ...
    def __getitem__(self, index: int | slice) -> Endpoint | tuple[Endpoint, ...]:
        return tuple(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Endpoints):
            return (self._data, self._nodes, self._odd) == (other._data, other._nodes, other._odd)
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        # Cheap, and consistent among Endpoints; a tuple equal to one hashes differently, so
        # never mix the two as keys of one set or dict (nothing does).
        return hash((self._data, self._nodes, self._odd))

    def __repr__(self) -> str:
        return f"Endpoints({tuple(self)!r})"


def _varint(data: bytearray, value: int) -> None:
    while value >= 0x80:
        data.append(value & 0x7F | 0x80)
        value >>= 7
    data.append(value)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """(value, index after it)"""
    value = shift = 0
    while data[i] & 0x80:
        value |= (data[i] & 0x7F) << shift
        shift += 7
        i += 1
    return value | data[i] << shift, i + 1


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice, or a v1 Endpoints subset converted to the same shape.

    ``endpoints`` may be given as any sequence of ``Endpoint``; it is kept packed (``Endpoints``)."""

    namespace: str
    name: str
    service_name: str
    ports: tuple[EndpointPort, ...]
    endpoints: Sequence[Endpoint]
    from_endpoints: bool = False  # came from a v1 Endpoints object
    origin: Origin = field(default=Origin("<memory>", 0), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.endpoints, Endpoints):
            object.__setattr__(self, "endpoints", Endpoints(self.endpoints))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything read from the sources in one go, with what was wrong in it."""

    services: tuple[Service, ...] = ()
    slices: tuple[EndpointSlice, ...] = ()
    problems: tuple[Problem, ...] = ()
