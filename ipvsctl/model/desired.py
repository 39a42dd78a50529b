"""What translate produces and plan consumes: the desired IPVS state and who wants each part."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address
from typing import overload

from ipvsctl.errors import Origin, Problem
from ipvsctl.model.ipvs import (
    NO_STATS,
    Forward,
    IPAddress,
    RealKey,
    RealServer,
    RealServerState,
    ServiceKey,
    VirtualServer,
)
from ipvsctl.model.k8s import Packed, pack_address, unpack_address


def _plain_maker() -> Callable[[IPAddress, int], RealServer]:
    """``RealServer(RealKey(address, port), 1)``, built by setting the slots directly.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; building
    the real servers of every virtual server a full sync plans went at half the speed that way.
    Should ``RealKey`` or ``RealServer`` gain a field or a ``__post_init__``, the constructors
    are used (tests compare both)."""
    key_fields = [f.name for f in fields(RealKey)]
    real_fields = [f.name for f in fields(RealServer)]
    if (
        key_fields != ["address", "port"]
        or real_fields != ["key", "weight", "forward", "upper_threshold", "lower_threshold"]
        or hasattr(RealKey, "__post_init__")
        or hasattr(RealServer, "__post_init__")
    ):
        return lambda address, port: RealServer(RealKey(address, port), 1)
    new = object.__new__
    set_address, set_port = (vars(RealKey)[n].__set__ for n in key_fields)
    set_key, set_weight, set_forward, set_upper, set_lower = (vars(RealServer)[n].__set__ for n in real_fields)
    masq = Forward.MASQ

    def make(address: IPAddress, port: int) -> RealServer:
        key = new(RealKey)
        set_address(key, address)
        set_port(key, port)
        real = new(RealServer)
        set_key(real, key)
        set_weight(real, 1)
        set_forward(real, masq)
        set_upper(real, 0)
        set_lower(real, 0)
        return real

    return make


_plain_real = _plain_maker()
_OTHER = 0  # in place of a packed address: the real server is the next one kept whole
_PORT = struct.Struct(">H")
_V4_PLAIN = struct.Struct(">BIH")  # a plain IPv4 real server: 4, its address as a number, its port


class RealServers(Sequence[RealServer]):
    """The real servers a virtual server should have, packed into bytes; reading them builds
    equal ``RealServer`` values.

    The agent holds every Service's translation for as long as it runs: a ``RealServer`` with
    its ``RealKey`` and address took 200 bytes, 20 MB for 10,000 Services of 10 endpoints.
    Translation makes plain ones (weight 1, masqueraded, no thresholds): each is kept as its
    address packed (``pack_address``: 5 bytes for IPv4) and its port (2 bytes). Any other real
    server is kept whole. Compared with a sequence of ``RealServer`` field by field."""

    __slots__ = ("_count", "_data", "_others")

    def __init__(self, reals: Iterable[RealServer] = ()) -> None:
        self._pack((real.key.address, real.key.port) if _plain(real) else real for real in reals)

    @classmethod
    def plain(cls, reals: Iterable[tuple[Packed | IPAddress, int]]) -> RealServers:
        """Plain real servers (weight 1, masqueraded) at these (address, port)s; an address may
        be given packed."""
        made = cls.__new__(cls)
        made._pack(reals)
        return made

    def _pack(self, reals: Iterable[tuple[Packed | IPAddress, int] | RealServer]) -> None:
        data = bytearray()
        others: list[RealServer] = []
        count = 0
        for item in reals:
            count += 1
            if isinstance(item, RealServer):
                whole = item
            else:
                address, port = item
                raw = address if isinstance(address, bytes) else pack_address(address)
                if raw is not None and type(port) is int and 0 <= port <= 0xFFFF:
                    data += raw
                    data += _PORT.pack(port)
                    continue
                whole = RealServer(RealKey(address if raw is None else unpack_address(raw), port), 1)
            data.append(_OTHER)
            others.append(whole)
        self._data = bytes(data)
        self._others = tuple(others)
        self._count = count

    def _parts(self) -> Iterator[tuple[bytes, int] | RealServer]:
        """Per real server: (its address packed, its port), or itself when kept whole."""
        data, others = self._data, iter(self._others)
        i, end = 0, len(data)
        while i < end:
            tag = data[i]
            if tag == _OTHER:
                yield next(others)
                i += 1
                continue
            size = 5 if tag == 4 else 17
            yield data[i : i + size], data[i + size] << 8 | data[i + size + 1]
            i += size + 2

    def _plain_v4(self) -> Iterator[tuple[int, int, int]] | None:
        """(4, address as a number, port) per real server when all are plain IPv4 (the common
        case, read without slicing), else None."""
        return _V4_PLAIN.iter_unpack(self._data) if self.plain_v4() else None

    def __iter__(self) -> Iterator[RealServer]:
        make = _plain_real
        v4 = self._plain_v4()
        if v4 is not None:
            for _, number, port in v4:
                yield make(IPv4Address(number), port)
            return
        for part in self._parts():
            yield part if isinstance(part, RealServer) else make(unpack_address(part[0]), part[1])

    def __reversed__(self) -> Iterator[RealServer]:
        return reversed(tuple(self))

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> RealServer: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[RealServer, ...]: ...
    def __getitem__(self, index: int | slice) -> RealServer | tuple[RealServer, ...]:
        if type(index) is int and self.plain_v4():
            if index < 0:
                index += self._count
            if not 0 <= index < self._count:
                raise IndexError("real server index out of range")
            _, number, port = _V4_PLAIN.unpack_from(self._data, index * _V4_PLAIN.size)
            return _plain_real(IPv4Address(number), port)  # plain IPv4 (``add_reals``): no walk
        return tuple(self)[index]

    def plain_v4(self) -> bool:
        """Are all of these plain IPv4 real servers (each read by position without a walk)?"""
        return not self._others and len(self._data) == _V4_PLAIN.size * self._count

    def packed(self) -> bytes | None:
        """The bytes these real servers are packed into when all are plain (None otherwise): two
        such ``RealServers`` with equal bytes hold equal real servers in the same order."""
        return None if self._others else self._data

    def same(self, reals: Sequence[RealServer]) -> bool:
        """Equal, in this order, to these real servers (compared field by field)."""
        if len(reals) != self._count:
            return False
        v4 = self._plain_v4()
        if v4 is not None:
            for (_, number, port), real in zip(v4, reals, strict=True):
                key = real.key
                if (
                    key.port != port
                    or key.address.version != 4
                    or int(key.address) != number
                    or real.weight != 1
                    or real.forward != Forward.MASQ
                    or real.upper_threshold
                    or real.lower_threshold
                ):
                    return False
            return True
        for part, real in zip(self._parts(), reals, strict=True):
            if isinstance(part, RealServer):
                if part != real:
                    return False
                continue
            raw, port = part
            key = real.key
            if (
                key.port != port
                or real.weight != 1
                or real.forward != Forward.MASQ
                or real.upper_threshold
                or real.lower_threshold
                or pack_address(key.address) != raw
            ):
                return False
        return True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RealServers):
            return self._data == other._data and self._others == other._others
        if isinstance(other, tuple) and all(isinstance(r, RealServer) for r in other):
            return self.same(other)
        return NotImplemented

    def __hash__(self) -> int:
        # Cheap, and consistent among RealServers; a tuple equal to one hashes differently, so
        # never mix the two as keys of one set or dict (nothing does).
        return hash((self._data, self._others))

    def __repr__(self) -> str:
        return f"RealServers({tuple(self)!r})"


def _state_maker() -> Callable[[RealServer, int, int, int], RealServerState]:
    """``RealServerState(server, active, inactive, persistent)``, built by setting the slots
    directly: a full sync builds one per real server, and a frozen dataclass's ``__init__``
    (``object.__setattr__`` per field) took twice as long. Should the class gain a field or a
    ``__post_init__``, the constructor is used (tests compare both)."""
    names = [f.name for f in fields(RealServerState)]
    if names != ["server", "active_conns", "inactive_conns", "persistent_conns", "stats"] or hasattr(
        RealServerState, "__post_init__"
    ):
        return lambda server, active, inactive, persistent: RealServerState(server, active, inactive, persistent)
    new = object.__new__
    set_server, set_active, set_inactive, set_persistent, set_stats = (vars(RealServerState)[n].__set__ for n in names)

    def make(server: RealServer, active: int, inactive: int, persistent: int) -> RealServerState:
        state = new(RealServerState)
        set_server(state, server)
        set_active(state, active)
        set_inactive(state, inactive)
        set_persistent(state, persistent)
        set_stats(state, NO_STATS)
        return state

    return make


make_state = _state_maker()
CONNS = struct.Struct("=III")  # active, inactive, persistent connections of one real server


class RealServerStates(Sequence[RealServerState]):
    """The real servers the kernel holds for a virtual server, as the agent's cache keeps them
    when they are exactly the ones a translation wants: that translation's ``configs``, in the
    kernel's order (their reverse when ``newest_first``), and their connection counts packed
    (``CONNS`` each; None when all are 0). Reading builds equal ``RealServerState`` values
    (without traffic counters); ``plan`` compares ``configs`` with what it wants and builds none."""

    __slots__ = ("_conns", "_newest_first", "configs")

    def __init__(self, configs: RealServers, conns: bytes | None, newest_first: bool) -> None:
        self.configs = configs
        self._conns = conns
        self._newest_first = newest_first

    def _states(self) -> tuple[RealServerState, ...]:
        if self._conns is None:
            states = [make_state(r, 0, 0, 0) for r in self.configs]
        else:
            states = [make_state(r, *c) for r, c in zip(self.configs, CONNS.iter_unpack(self._conns), strict=True)]
        return tuple(states[::-1] if self._newest_first else states)

    def __iter__(self) -> Iterator[RealServerState]:
        return iter(self._states())

    def __reversed__(self) -> Iterator[RealServerState]:
        return reversed(self._states())

    def __len__(self) -> int:
        return len(self.configs)

    @overload
    def __getitem__(self, index: int) -> RealServerState: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[RealServerState, ...]: ...
    def __getitem__(self, index: int | slice) -> RealServerState | tuple[RealServerState, ...]:
        return self._states()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RealServerStates | tuple):
            return self._states() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._states())  # as the equal tuple's

    def __repr__(self) -> str:
        return f"RealServerStates({self._states()!r})"


def _plain(real: RealServer) -> bool:
    return real.weight == 1 and real.forward == Forward.MASQ and not real.upper_threshold and not real.lower_threshold


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
    """``reals`` may be given as any sequence of ``RealServer``; it is kept packed (``RealServers``)."""

    server: VirtualServer
    reals: Sequence[RealServer]
    owner: Owner
    bind: bool  # put the address on the dummy interface
    origin: Origin = field(default=Origin("<memory>", 0), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.reals, RealServers):
            object.__setattr__(self, "reals", RealServers(self.reals))


@dataclass(frozen=True, slots=True)
class Desired:
    services: dict[ServiceKey, DesiredService] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    # Services (namespace, name) whose input was wrong: their virtual servers are left as they are.
    held: frozenset[tuple[str, str]] = frozenset()
    # True when a whole file could not be read: nothing may be deleted, we cannot know what it held.
    incomplete: bool = False
