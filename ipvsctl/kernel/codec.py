"""A lean IPVS generic-netlink codec, written from include/uapi/linux/ip_vs.h.

Pure functions over bytes: no sockets here. ``netlink.py`` sends what this
module encodes and hands back what the kernel replied.

Why our own codec: pyroute2's IPVS class sends defaults on every request (a
``set`` silently changes the scheduler and forwarding method and clears
persistence), cannot express the netmask IPv6 and fwmark services need, and
spends most of its time building and decoding attribute objects. Here every
request is one ``struct.pack`` of a precomputed layout, and every SET carries
the full desired attributes, so the kernel never falls back to a default.

Byte order, as the kernel wants it (the part that is easy to get wrong):

- ports (``IPVS_SVC_ATTR_PORT``, ``IPVS_DEST_ATTR_PORT``, ``IPVS_DEST_ATTR_TUN_PORT``)
  are ``__be16``: network byte order inside a u16 attribute;
- ``IPVS_SVC_ATTR_NETMASK`` is ``__be32``: for IPv4 the mask's bytes in network
  order (255.255.255.0 is ``ff ff ff 00``); for IPv6 the kernel reads the same
  four bytes as a host-order prefix length (1..128);
- everything else is host byte order.

Addresses travel in a 16-byte ``union nf_inet_addr``: IPv4 in the first four
bytes. We always send 16 bytes (the kernel copies at most that many and zeroes
the rest), so IPv4 and IPv6 share one layout.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

from ipvsctl.model.ipvs import (
    NO_STATS,
    Forward,
    IPAddress,
    Protocol,
    RealKey,
    RealServer,
    RealServerState,
    ServiceFlag,
    ServiceKey,
    Stats,
    VirtualServer,
)
from ipvsctl.model.ops import (
    AddReal,
    AddService,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    ServiceOperation,
)

# --- netlink / generic netlink framing (linux/netlink.h, linux/genetlink.h) ---

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300

NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2

# --- IPVS (linux/ip_vs.h) ---

IPVS_GENL_NAME = "IPVS"
IPVS_GENL_VERSION = 1

IPVS_CMD_NEW_SERVICE = 1
IPVS_CMD_SET_SERVICE = 2
IPVS_CMD_DEL_SERVICE = 3
IPVS_CMD_GET_SERVICE = 4
IPVS_CMD_NEW_DEST = 5
IPVS_CMD_SET_DEST = 6
IPVS_CMD_DEL_DEST = 7
IPVS_CMD_GET_DEST = 8

IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2

IPVS_SVC_ATTR_AF = 1
IPVS_SVC_ATTR_PROTOCOL = 2
IPVS_SVC_ATTR_ADDR = 3
IPVS_SVC_ATTR_PORT = 4
IPVS_SVC_ATTR_FWMARK = 5
IPVS_SVC_ATTR_SCHED_NAME = 6
IPVS_SVC_ATTR_FLAGS = 7
IPVS_SVC_ATTR_TIMEOUT = 8
IPVS_SVC_ATTR_NETMASK = 9
IPVS_SVC_ATTR_STATS = 10
IPVS_SVC_ATTR_PE_NAME = 11
IPVS_SVC_ATTR_STATS64 = 12

IPVS_DEST_ATTR_ADDR = 1
IPVS_DEST_ATTR_PORT = 2
IPVS_DEST_ATTR_FWD_METHOD = 3
IPVS_DEST_ATTR_WEIGHT = 4
IPVS_DEST_ATTR_U_THRESH = 5
IPVS_DEST_ATTR_L_THRESH = 6
IPVS_DEST_ATTR_ACTIVE_CONNS = 7
IPVS_DEST_ATTR_INACT_CONNS = 8
IPVS_DEST_ATTR_PERSIST_CONNS = 9
IPVS_DEST_ATTR_STATS = 10
IPVS_DEST_ATTR_ADDR_FAMILY = 11
IPVS_DEST_ATTR_STATS64 = 12
IPVS_DEST_ATTR_TUN_TYPE = 13
IPVS_DEST_ATTR_TUN_PORT = 14
IPVS_DEST_ATTR_TUN_FLAGS = 15

# IPVS_STATS_ATTR_CONNS .. IPVS_STATS_ATTR_OUTBPS are 1..10, in Stats' field order.
STATS_FIELDS = 10

IP_VS_SCHEDNAME_MAXLEN = 16  # including the terminating NUL
AF_INET = 2
AF_INET6 = 10

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLA = struct.Struct("=HH")  # len, type
_GENL_HDRLEN = 4
_NLMSG_HDRLEN = _NLMSG.size
NLMSG_HDRLEN = _NLMSG_HDRLEN
NLMSG_HEADER = _NLMSG  # len, type, flags, seq, pid
_PAYLOAD = _NLMSG_HDRLEN + _GENL_HDRLEN  # where a genl message's attributes start
_I32 = struct.Struct("=i")

_htons = socket.htons
_htonl = socket.htonl
_ntohs = socket.ntohs


def encode_attr(atype: int, value: bytes) -> bytes:
    """One netlink attribute (header and value), padded to 4 bytes. For requests built rarely
    (rtnl's link creation) and replies built by tests; the hot requests use struct layouts."""
    alen = 4 + len(value)
    return _NLA.pack(alen, atype) + value + b"\0" * (((alen + 3) & ~3) - alen)


# ---------------------------------------------------------------------------
# Encoding: one precomputed layout per request shape.
#
# Field groups, each an attribute header (len, type) and its padded value:
#   u16 attribute: "HH H2x"   (8 bytes)     u32 attribute: "HH I" (8 bytes)
#   u8 attribute:  "HH B3x"   (8 bytes)     address:       "HH 16s" (20 bytes)
#   flags:         "HH II"    (12 bytes)    scheduler:     "HH 16s" (20 bytes, NUL padded)
# The scheduler name always travels as 16 bytes: a name of 16 or more
# characters then has no NUL in the attribute and the kernel answers EINVAL,
# exactly as for the over-long names it rejects itself.
# ---------------------------------------------------------------------------

_HEAD = "IHHII BBxx"  # nlmsghdr + genlmsghdr
_SVC_KEY_ADDR = "HH HH H2x HH H2x HH 16s HH H2x"  # nest, AF, PROTOCOL, ADDR, PORT
_SVC_KEY_FWMARK = "HH HH H2x HH I"  # nest, AF, FWMARK
_SVC_OPTS = "HH 16s HH II HH I HH I"  # SCHED_NAME, FLAGS, TIMEOUT, NETMASK
_DEST_KEY = "HH HH 16s HH H2x HH H2x"  # nest, ADDR, PORT, ADDR_FAMILY
_DEST_OPTS = "HH I HH I HH I HH I HH B3x HH H2x HH H2x"  # FWD, WEIGHT, U/L_THRESH, TUN_*

_S_SVC_ADDR = struct.Struct("=" + _HEAD + _SVC_KEY_ADDR)
_S_SVC_FWMARK = struct.Struct("=" + _HEAD + _SVC_KEY_FWMARK)
_S_SVC_ADDR_FULL = struct.Struct("=" + _HEAD + _SVC_KEY_ADDR + _SVC_OPTS)
_S_SVC_FWMARK_FULL = struct.Struct("=" + _HEAD + _SVC_KEY_FWMARK + _SVC_OPTS)
_S_DEST_ADDR = struct.Struct("=" + _HEAD + _SVC_KEY_ADDR + _DEST_KEY)
_S_DEST_FWMARK = struct.Struct("=" + _HEAD + _SVC_KEY_FWMARK + _DEST_KEY)
_S_DEST_ADDR_FULL = struct.Struct("=" + _HEAD + _SVC_KEY_ADDR + _DEST_KEY + _DEST_OPTS)
_S_DEST_FWMARK_FULL = struct.Struct("=" + _HEAD + _SVC_KEY_FWMARK + _DEST_KEY + _DEST_OPTS)
_S_DUMP = struct.Struct("=" + _HEAD)

_SVC_KEY_ADDR_LEN = struct.calcsize("=" + _SVC_KEY_ADDR)
_SVC_KEY_FWMARK_LEN = struct.calcsize("=" + _SVC_KEY_FWMARK)
_SVC_OPTS_LEN = struct.calcsize("=" + _SVC_OPTS)
_DEST_KEY_LEN = struct.calcsize("=" + _DEST_KEY)
_DEST_OPTS_LEN = struct.calcsize("=" + _DEST_OPTS)

_NEST_SVC = NLA_F_NESTED | IPVS_CMD_ATTR_SERVICE
_NEST_DEST = NLA_F_NESTED | IPVS_CMD_ATTR_DEST
_ALL_FLAGS = 0xFFFFFFFF
_NOT_HASHED = 0xFFFFFFFF & ~int(ServiceFlag.HASHED)  # a plain int: decoded flags stay ints, not IntFlags


def _packed_address(address: IPAddress) -> bytes:
    # struct's "16s" zero-pads an IPv4 address to the union's 16 bytes.
    return address.packed


def _netmask_u32(server: VirtualServer) -> int:
    """The NETMASK attribute as the host-order u32 whose bytes the kernel reads as ``__be32``."""
    mask = server.effective_netmask
    if server.key.address.version == 4:
        return _htonl(mask)
    return mask


def _svc_key_args(key: ServiceKey) -> tuple[int | bytes, ...]:
    family = AF_INET if key.address.version == 4 else AF_INET6
    if key.fwmark:
        return (_SVC_KEY_FWMARK_LEN, _NEST_SVC, 6, IPVS_SVC_ATTR_AF, family, 8, IPVS_SVC_ATTR_FWMARK, key.fwmark)
    return (
        _SVC_KEY_ADDR_LEN, _NEST_SVC,
        6, IPVS_SVC_ATTR_AF, family,
        6, IPVS_SVC_ATTR_PROTOCOL, int(key.protocol or 0),
        20, IPVS_SVC_ATTR_ADDR, _packed_address(key.address),
        6, IPVS_SVC_ATTR_PORT, _htons(key.port),
    )  # fmt: skip


def _svc_opts_args(server: VirtualServer) -> tuple[int | bytes, ...]:
    return (
        20, IPVS_SVC_ATTR_SCHED_NAME, server.scheduler.encode(),
        12, IPVS_SVC_ATTR_FLAGS, server.flags & _NOT_HASHED, _ALL_FLAGS,
        8, IPVS_SVC_ATTR_TIMEOUT, server.timeout,
        8, IPVS_SVC_ATTR_NETMASK, _netmask_u32(server),
    )  # fmt: skip


def _dest_key_args(key: RealKey) -> tuple[int | bytes, ...]:
    address = key.address
    family = AF_INET if address.version == 4 else AF_INET6
    return (
        _DEST_KEY_LEN, _NEST_DEST,
        20, IPVS_DEST_ATTR_ADDR, address.packed,
        6, IPVS_DEST_ATTR_PORT, _htons(key.port),
        6, IPVS_DEST_ATTR_ADDR_FAMILY, family,
    )  # fmt: skip


def _dest_opts_args(server: RealServer, tun_type: int, tun_port: int, tun_flags: int) -> tuple[int, ...]:
    return (
        8, IPVS_DEST_ATTR_FWD_METHOD, int(server.forward),
        8, IPVS_DEST_ATTR_WEIGHT, server.weight,
        8, IPVS_DEST_ATTR_U_THRESH, server.upper_threshold,
        8, IPVS_DEST_ATTR_L_THRESH, server.lower_threshold,
        5, IPVS_DEST_ATTR_TUN_TYPE, tun_type,
        6, IPVS_DEST_ATTR_TUN_PORT, _htons(tun_port),
        6, IPVS_DEST_ATTR_TUN_FLAGS, tun_flags,
    )  # fmt: skip


def _head(layout: struct.Struct, family: int, flags: int, seq: int, cmd: int) -> tuple[int, ...]:
    return (layout.size, family, flags, seq, 0, cmd, IPVS_GENL_VERSION)


def encode_service(
    family: int, seq: int, cmd: int, server: VirtualServer, flags: int = NLM_F_REQUEST | NLM_F_ACK
) -> bytes:
    """NEW_SERVICE or SET_SERVICE with every option present (scheduler, flags with a full mask, timeout, netmask).

    Sending everything is what makes SET safe: the kernel keeps nothing from a
    default we did not mean. The flags mask is all ones so the kernel replaces
    the flags rather than merging them with what was there.
    """
    layout = _S_SVC_FWMARK_FULL if server.key.fwmark else _S_SVC_ADDR_FULL
    key = _svc_key_args(server.key)
    nest_len = key[0] + _SVC_OPTS_LEN
    return layout.pack(*_head(layout, family, flags, seq, cmd), nest_len, *key[1:], *_svc_opts_args(server))


def encode_service_key(
    family: int, seq: int, cmd: int, key: ServiceKey, flags: int = NLM_F_REQUEST | NLM_F_ACK
) -> bytes:
    """A request naming one service only: DEL_SERVICE, GET_SERVICE, or GET_DEST (as a dump)."""
    layout = _S_SVC_FWMARK if key.fwmark else _S_SVC_ADDR
    return layout.pack(*_head(layout, family, flags, seq, cmd), *_svc_key_args(key))


def encode_dest(
    family: int,
    seq: int,
    cmd: int,
    service: ServiceKey,
    server: RealServer,
    *,
    tun_type: int = 0,
    tun_port: int = 0,
    tun_flags: int = 0,
    flags: int = NLM_F_REQUEST | NLM_F_ACK,
) -> bytes:
    """NEW_DEST or SET_DEST with every option present, tunnel attributes included.

    The kernel rebuilds the destination from the request on SET (missing
    tunnel attributes would mean IPIP, port 0), so we always say what we mean.
    """
    layout = _S_DEST_FWMARK_FULL if service.fwmark else _S_DEST_ADDR_FULL
    dest = _dest_key_args(server.key)
    return layout.pack(
        *_head(layout, family, flags, seq, cmd),
        *_svc_key_args(service),
        dest[0] + _DEST_OPTS_LEN,
        *dest[1:],
        *_dest_opts_args(server, tun_type, tun_port, tun_flags),
    )


def encode_dest_key(
    family: int, seq: int, cmd: int, service: ServiceKey, key: RealKey, flags: int = NLM_F_REQUEST | NLM_F_ACK
) -> bytes:
    """DEL_DEST: the service key and the destination's address, port and family."""
    layout = _S_DEST_FWMARK if service.fwmark else _S_DEST_ADDR
    return layout.pack(*_head(layout, family, flags, seq, cmd), *_svc_key_args(service), *_dest_key_args(key))


def encode_dump_services(family: int, seq: int) -> bytes:
    """GET_SERVICE as a dump: every virtual server in this network namespace."""
    return _S_DUMP.pack(*_head(_S_DUMP, family, NLM_F_REQUEST | NLM_F_DUMP, seq, IPVS_CMD_GET_SERVICE))


def encode_dump_dests(family: int, seq: int, key: ServiceKey) -> bytes:
    """GET_DEST as a dump for one service (the kernel has no single-destination GET: EOPNOTSUPP)."""
    return encode_service_key(family, seq, IPVS_CMD_GET_DEST, key, NLM_F_REQUEST | NLM_F_DUMP)


def encode_get_service(family: int, seq: int, key: ServiceKey) -> bytes:
    """GET_SERVICE for one service; the kernel answers one NEW_SERVICE message or ESRCH."""
    return encode_service_key(family, seq, IPVS_CMD_GET_SERVICE, key, NLM_F_REQUEST)


def encode_operation(family: int, seq: int, op: ServiceOperation, ack: bool = True) -> bytes:
    """The one request that performs ``op``; with NLM_F_ACK unless ``ack`` is false (the kernel then
    answers only if it fails)."""
    flags = NLM_F_REQUEST | NLM_F_ACK if ack else NLM_F_REQUEST
    match op:
        case AddService(server=s):
            return encode_service(family, seq, IPVS_CMD_NEW_SERVICE, s, flags)
        case EditService(server=s):
            return encode_service(family, seq, IPVS_CMD_SET_SERVICE, s, flags)
        case DeleteService(key=k):
            return encode_service_key(family, seq, IPVS_CMD_DEL_SERVICE, k, flags)
        case AddReal(service=k, server=r):
            return encode_dest(family, seq, IPVS_CMD_NEW_DEST, k, r, flags=flags)
        case EditReal(service=k, server=r):
            return encode_dest(family, seq, IPVS_CMD_SET_DEST, k, r, flags=flags)
        case DeleteReal(service=k, key=r):
            return encode_dest_key(family, seq, IPVS_CMD_DEL_DEST, k, r, flags)
    raise TypeError(f"not an IPVS operation: {op!r}")


def encode_get_family(seq: int, name: str = IPVS_GENL_NAME) -> bytes:
    """CTRL_CMD_GETFAMILY for a family name (the kernel autoloads the module if it can)."""
    raw = name.encode() + b"\0"
    attr_len = 4 + len(raw)
    padded = (attr_len + 3) & ~3
    total = _PAYLOAD + padded
    return (
        _NLMSG.pack(total, GENL_ID_CTRL, NLM_F_REQUEST, seq, 0)
        + struct.pack("=BBxx", CTRL_CMD_GETFAMILY, 1)
        + _NLA.pack(attr_len, CTRL_ATTR_FAMILY_NAME)
        + raw
        + b"\0" * (padded - attr_len)
    )


# ---------------------------------------------------------------------------
# Decoding.
# ---------------------------------------------------------------------------


def iter_messages(
    buf: bytes | bytearray | memoryview, end: int | None = None
) -> Iterator[tuple[int, int, int, int, int]]:
    """Split a netlink datagram: yields (type, flags, seq, offset, length) per message."""
    if end is None:
        end = len(buf)
    off = 0
    unpack = _NLMSG.unpack_from
    while off + _NLMSG_HDRLEN <= end:
        length, mtype, mflags, seq, _pid = unpack(buf, off)
        if length < _NLMSG_HDRLEN or off + length > end:
            break
        yield mtype, mflags, seq, off, length
        off += (length + 3) & ~3


def decode_error(buf: bytes | bytearray | memoryview, off: int) -> int:
    """The positive errno of an NLMSG_ERROR (0 = ack) or NLMSG_DONE message starting at ``off``."""
    return -_I32.unpack_from(buf, off + _NLMSG_HDRLEN)[0]


def iter_attrs(buf: bytes | bytearray | memoryview, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Walk attributes: yields (type without flag bits, value offset, value length)."""
    unpack = _NLA.unpack_from
    while off + 4 <= end:
        alen, atype = unpack(buf, off)
        if alen < 4 or off + alen > end:
            break
        yield atype & NLA_TYPE_MASK, off + 4, alen - 4
        off += (alen + 3) & ~3


def decode_family_id(buf: bytes | bytearray | memoryview, off: int, length: int) -> int | None:
    """CTRL_ATTR_FAMILY_ID from a CTRL_CMD_NEWFAMILY reply message."""
    for atype, voff, vlen in iter_attrs(buf, off + _PAYLOAD, off + length):
        if atype == CTRL_ATTR_FAMILY_ID and vlen >= 2:
            return int(struct.unpack_from("=H", buf, voff)[0])
    return None


# Value kinds: how an attribute's value is read. The layout compiler turns each
# into a struct code sized to the attribute the kernel actually sent.
_U8, _U16, _U32, _U64, _RAW = range(5)


def _no_headers(_vals: tuple) -> tuple:
    return ()


class _Layout:
    """One compiled attribute shape: a single ``unpack_from`` reads every value we want.

    ``expected`` holds every attribute header (len, type) seen when the shape
    was learnt; a message matches the layout only if its headers are the same,
    so a different kernel (or scheduler-name length) falls back to learning.
    """

    __slots__ = ("expected", "headers", "pick", "struct")

    def __init__(self, fmt: str, header_idx: list[int], expected: tuple[int, ...], pick_idx: list[int]) -> None:
        self.struct = struct.Struct("=" + fmt)
        self.headers = itemgetter(*header_idx) if header_idx else _no_headers
        self.expected = expected
        self.pick = itemgetter(*pick_idx)


class NestDecoder:
    """Decodes one nested attribute (a service or a destination) into a flat tuple of raw values.

    ``schema`` maps attribute type to (field index, kind); ``nested`` maps an
    attribute type to the schema of a nest flattened into the same tuple (the
    stats), in order of preference: only the first one present is read. Fields
    the message lacks come back as None.

    The first message of each shape is walked attribute by attribute; the shape
    is then compiled to one ``struct`` and the following messages (a dump's
    thousands of destinations all share a shape) decode with one
    ``unpack_from``, one header comparison and one ``itemgetter``.
    """

    _MAX_SHAPES_PER_LENGTH = 8

    def __init__(self, nfields: int, schema: dict[int, tuple[int, int]], nested: dict[int, dict[int, tuple[int, int]]]):
        self._nfields = nfields
        self._schema = schema
        self._nested = nested
        self._shapes: dict[int, list[_Layout]] = {}

    def decode(self, buf: bytes | bytearray | memoryview, off: int, end: int) -> tuple:
        shapes = self._shapes.get(end - off)
        if shapes:
            for layout in shapes:
                vals = layout.struct.unpack_from(buf, off)
                if layout.headers(vals) == layout.expected:
                    return layout.pick(vals)
        layout = self._compile(buf, off, end)
        known = self._shapes.setdefault(end - off, [])
        if len(known) >= self._MAX_SHAPES_PER_LENGTH:
            known.pop(0)
        known.append(layout)
        return layout.pick(layout.struct.unpack_from(buf, off))

    def _compile(self, buf: bytes | bytearray | memoryview, start: int, end: int) -> _Layout:
        fmt: list[str] = []
        header_idx: list[int] = []
        expected: list[int] = []
        where: list[int | None] = [None] * self._nfields
        state = {"pos": start, "count": 0}

        def gap(to: int) -> None:
            if to > state["pos"]:
                fmt.append(f"{to - state['pos']}x")
                state["pos"] = to

        def value(code: str, size: int) -> None:
            fmt.append(code)
            state["pos"] += size

        # Of the nests we can read (STATS64, then the 32-bit STATS), descend into the first present
        # only: the other stays opaque, its header alone pinning the positions after it.
        present = {t for t, _o, _n in iter_attrs(buf, start, end)}
        wanted = next((t for t in self._nested if t in present), None)

        def walk(off: int, stop: int, schema: dict[int, tuple[int, int]], nested: bool) -> None:
            unpack = _NLA.unpack_from
            while off + 4 <= stop:
                alen, atype = unpack(buf, off)
                if alen < 4 or off + alen > stop:
                    break
                gap(off)
                fmt.append("HH")
                state["pos"] += 4
                header_idx.extend((state["count"], state["count"] + 1))
                expected.extend((alen, atype))
                state["count"] += 2
                vlen = alen - 4
                t = atype & NLA_TYPE_MASK
                if not nested and t == wanted:
                    walk(off + 4, off + alen, self._nested[t], True)
                elif t in schema:
                    field, kind = schema[t]
                    code, size = _code_for(kind, vlen)
                    if code is not None and where[field] is None:
                        value(code, size)
                        where[field] = state["count"]
                        state["count"] += 1
                off += (alen + 3) & ~3

        walk(start, end, self._schema, False)
        # Missing fields read a None appended after the real values.
        fmt.append("0x")
        none_idx = state["count"]
        pick = [none_idx if w is None else w for w in where]
        layout = _Layout("".join(fmt), header_idx, tuple(expected), pick)
        if None in where:
            inner = layout.pick
            layout.pick = lambda vals, _inner=inner: _inner((*vals, None))  # type: ignore[assignment]
        return layout


def _code_for(kind: int, vlen: int) -> tuple[str | None, int]:
    if kind == _RAW:
        return f"{vlen}s", vlen
    need = {_U8: ("B", 1), _U16: ("H", 2), _U32: ("I", 4), _U64: ("Q", 8)}[kind]
    if vlen < need[1]:
        return None, 0
    return need[0], need[1]


def _stats_schema(base: int, wide: bool) -> dict[int, tuple[int, int]]:
    # STATS: conns/inpkts/outpkts/rates are u32, bytes u64. STATS64: all u64.
    kinds = [_U64 if wide or i in (3, 4) else _U32 for i in range(STATS_FIELDS)]
    return {i + 1: (base + i, kinds[i]) for i in range(STATS_FIELDS)}


# Destination fields, in tuple order.
(_D_ADDR, _D_PORT, _D_FWD, _D_WEIGHT, _D_UTH, _D_LTH, _D_ACT, _D_INACT, _D_PERSIST, _D_AF,
 _D_TUN_TYPE, _D_TUN_PORT, _D_TUN_FLAGS) = range(13)  # fmt: skip
_D_STATS64 = 13
_D_STATS = _D_STATS64 + STATS_FIELDS
_D_NFIELDS = _D_STATS + STATS_FIELDS

_DEST_DECODER = NestDecoder(
    _D_NFIELDS,
    {
        IPVS_DEST_ATTR_ADDR: (_D_ADDR, _RAW),
        IPVS_DEST_ATTR_PORT: (_D_PORT, _U16),
        IPVS_DEST_ATTR_FWD_METHOD: (_D_FWD, _U32),
        IPVS_DEST_ATTR_WEIGHT: (_D_WEIGHT, _U32),
        IPVS_DEST_ATTR_U_THRESH: (_D_UTH, _U32),
        IPVS_DEST_ATTR_L_THRESH: (_D_LTH, _U32),
        IPVS_DEST_ATTR_ACTIVE_CONNS: (_D_ACT, _U32),
        IPVS_DEST_ATTR_INACT_CONNS: (_D_INACT, _U32),
        IPVS_DEST_ATTR_PERSIST_CONNS: (_D_PERSIST, _U32),
        IPVS_DEST_ATTR_ADDR_FAMILY: (_D_AF, _U16),
        IPVS_DEST_ATTR_TUN_TYPE: (_D_TUN_TYPE, _U8),
        IPVS_DEST_ATTR_TUN_PORT: (_D_TUN_PORT, _U16),
        IPVS_DEST_ATTR_TUN_FLAGS: (_D_TUN_FLAGS, _U16),
    },
    {
        IPVS_DEST_ATTR_STATS64: _stats_schema(_D_STATS64, True),
        IPVS_DEST_ATTR_STATS: _stats_schema(_D_STATS, False),
    },
)

# Service fields, in tuple order.
(_S_AF, _S_PROTO, _S_ADDR, _S_PORT, _S_FWMARK, _S_SCHED, _S_FLAGS, _S_TIMEOUT, _S_NETMASK,
 _S_PE) = range(10)  # fmt: skip
_S_STATS64 = 10
_S_STATS = _S_STATS64 + STATS_FIELDS
_S_NFIELDS = _S_STATS + STATS_FIELDS

_SERVICE_DECODER = NestDecoder(
    _S_NFIELDS,
    {
        IPVS_SVC_ATTR_AF: (_S_AF, _U16),
        IPVS_SVC_ATTR_PROTOCOL: (_S_PROTO, _U16),
        IPVS_SVC_ATTR_ADDR: (_S_ADDR, _RAW),
        IPVS_SVC_ATTR_PORT: (_S_PORT, _U16),
        IPVS_SVC_ATTR_FWMARK: (_S_FWMARK, _U32),
        IPVS_SVC_ATTR_SCHED_NAME: (_S_SCHED, _RAW),
        IPVS_SVC_ATTR_FLAGS: (_S_FLAGS, _U32),  # struct ip_vs_flags: we read .flags, the mask is ~0
        IPVS_SVC_ATTR_TIMEOUT: (_S_TIMEOUT, _U32),
        IPVS_SVC_ATTR_NETMASK: (_S_NETMASK, _RAW),  # __be32 for IPv4, a prefix length for IPv6
        IPVS_SVC_ATTR_PE_NAME: (_S_PE, _RAW),
    },
    {
        IPVS_SVC_ATTR_STATS64: _stats_schema(_S_STATS64, True),
        IPVS_SVC_ATTR_STATS: _stats_schema(_S_STATS, False),
    },
)


class DecodeError(ValueError):
    """A reply the codec cannot turn into a value (unknown family or protocol, missing key)."""


# Decoded values repeat across a dump (the same pod addresses behind many
# ports, the same scheduler names): cache the immutable objects. The address cache is
# bounded small: it lives as long as the process, and at 110,000 addresses (10,000 Services
# of 10 endpoints) it alone held some 24 MB of the agent's memory.
_ADDR_CACHE_SIZE = 8192
_ADDR_CACHE: dict[tuple[int, bytes], IPAddress] = {}
_NAME_CACHE: dict[bytes, str] = {}
_EMPTY_STATS = NO_STATS
_ZERO_V4 = ipaddress.IPv4Address(0)
_ZERO_V6 = ipaddress.IPv6Address(0)
_PROTOCOLS = {int(p): p for p in Protocol}
_FORWARDS = {int(f): f for f in Forward}
_V4_FULL = 0xFFFFFFFF


def _fast(cls: type) -> Callable[..., Any]:
    """A positional constructor for a plain frozen slotted dataclass that sets its slots directly.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    which looks the attribute up on the type every time: building the four objects of
    one destination that way cost more than decoding it. Calling each slot's descriptor
    gives the same value in about half the time. Classes without slots, or with a
    ``__post_init__``, get their real constructor (tests compare both paths).
    """
    if "__slots__" not in vars(cls) or hasattr(cls, "__post_init__"):
        return cls
    names = [f.name for f in dataclasses.fields(cls)]
    # One straight-line function per class (as dataclasses itself builds __init__): a loop
    # over the setters cost a third of decoding a destination.
    args = ", ".join(f"v{i}" for i in range(len(names)))
    body = "".join(f"    s{i}(obj, v{i})\n" for i in range(len(names)))
    source = f"def make({args}):\n    obj = new(cls)\n{body}    return obj\n"
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    scope.update({f"s{i}": vars(cls)[name].__set__ for i, name in enumerate(names)})
    exec(source, scope)  # the source is built from the dataclass's own field names
    return scope["make"]


_new_real_key = _fast(RealKey)
_new_real_server = _fast(RealServer)
_new_real_state = _fast(RealServerState)
_new_stats = _fast(Stats)


def _address(af: int, raw: bytes) -> IPAddress:
    key = (af, raw)
    addr = _ADDR_CACHE.get(key)
    if addr is None:
        if af == AF_INET:
            addr = ipaddress.IPv4Address(raw[:4])
        elif af == AF_INET6:
            addr = ipaddress.IPv6Address(raw[:16])
        else:
            raise DecodeError(f"unknown address family {af}")
        if len(_ADDR_CACHE) >= _ADDR_CACHE_SIZE:
            _ADDR_CACHE.clear()
        _ADDR_CACHE[key] = addr
    return addr


def _name(raw: bytes) -> str:
    name = _NAME_CACHE.get(raw)
    if name is None:
        name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        if len(_NAME_CACHE) < 1024:
            _NAME_CACHE[raw] = name
    return name


def _stats(vals: tuple, wide: int, narrow: int) -> Stats:
    base = wide if vals[wide] is not None else narrow if vals[narrow] is not None else -1
    if base < 0:
        return _EMPTY_STATS
    block = vals[base : base + STATS_FIELDS]
    if not any(block):
        return _EMPTY_STATS
    if None in block:
        block = tuple(v or 0 for v in block)
    return _new_stats(*block)


def _nest(buf: bytes | bytearray | memoryview, off: int, length: int, want: int) -> tuple[int, int]:
    """(start, end) of the top-level attribute ``want`` of a genl message at ``off``."""
    alen, atype = _NLA.unpack_from(buf, off + _PAYLOAD)
    if atype & NLA_TYPE_MASK == want and 4 <= alen <= length - _PAYLOAD:  # the kernel's replies: one nest
        return off + _PAYLOAD + 4, off + _PAYLOAD + alen
    for atype, voff, vlen in iter_attrs(buf, off + _PAYLOAD, off + length):
        if atype == want:
            return voff, voff + vlen
    raise DecodeError(f"message has no attribute {want}")


def decode_dest(
    buf: bytes | bytearray | memoryview, off: int, length: int, service_af: int = AF_INET
) -> RealServerState:
    """A GET_DEST reply message (starting at ``off``) to a RealServerState."""
    start, end = _nest(buf, off, length, IPVS_CMD_ATTR_DEST)
    v = _DEST_DECODER.decode(buf, start, end)
    raw, port = v[_D_ADDR], v[_D_PORT]
    if raw is None or port is None:
        raise DecodeError("destination without address or port")
    af = v[_D_AF] or service_af
    fwd = v[_D_FWD] or 0
    server = _new_real_server(
        _new_real_key(_address(af, raw), _ntohs(port)),
        v[_D_WEIGHT] or 0,
        _FORWARDS.get(fwd & 7, Forward.MASQ),
        v[_D_UTH] or 0,
        v[_D_LTH] or 0,
    )
    return _new_real_state(
        server, v[_D_ACT] or 0, v[_D_INACT] or 0, v[_D_PERSIST] or 0, _stats(v, _D_STATS64, _D_STATS)
    )


def decode_service(buf: bytes | bytearray | memoryview, off: int, length: int) -> tuple[VirtualServer, Stats]:
    """A GET_SERVICE reply message (starting at ``off``) to (VirtualServer, Stats).

    Normalisations, so that what we read compares equal to what we meant:
    HASHED (the kernel's bookkeeping) is cleared from the flags, and a full
    netmask (255.255.255.255 or /128) becomes 0, our "full" default.

    Raises DecodeError for a service our model cannot express (a protocol
    other than TCP/UDP/SCTP, such as an AH or ESP service made by someone else).
    """
    start, end = _nest(buf, off, length, IPVS_CMD_ATTR_SERVICE)
    v = _SERVICE_DECODER.decode(buf, start, end)
    af = v[_S_AF]
    if af not in (AF_INET, AF_INET6):
        raise DecodeError(f"service with unknown address family {af}")
    fwmark = v[_S_FWMARK] or 0
    if fwmark:
        key = ServiceKey(None, _ZERO_V4 if af == AF_INET else _ZERO_V6, 0, fwmark)
    else:
        if v[_S_ADDR] is None or v[_S_PORT] is None or v[_S_PROTO] is None:
            raise DecodeError("service without protocol, address or port")
        proto = _PROTOCOLS.get(v[_S_PROTO])
        if proto is None:
            raise DecodeError(f"service with unsupported protocol {v[_S_PROTO]}")
        key = ServiceKey(proto, _address(af, v[_S_ADDR]), _ntohs(v[_S_PORT]))
    netmask = 0
    raw_mask = v[_S_NETMASK]
    if raw_mask is not None and len(raw_mask) >= 4:
        if af == AF_INET:
            netmask = int.from_bytes(raw_mask[:4], "big")
            netmask = 0 if netmask == _V4_FULL else netmask
        else:
            netmask = int.from_bytes(raw_mask[:4], sys.byteorder)
            netmask = 0 if netmask == 128 else netmask
    server = VirtualServer(
        key=key,
        scheduler=_name(v[_S_SCHED]) if v[_S_SCHED] is not None else "",
        flags=(v[_S_FLAGS] or 0) & _NOT_HASHED,
        timeout=v[_S_TIMEOUT] or 0,
        netmask=netmask,
    )
    return server, _stats(v, _S_STATS64, _S_STATS)


def service_family(server: VirtualServer) -> int:
    """AF_INET or AF_INET6 of a service, which its destinations default to."""
    return AF_INET if server.key.address.version == 4 else AF_INET6


# ---------------------------------------------------------------------------
# Building kernel-style replies: what the kernel would send for a value. Used by
# tests (round trips without a kernel) and nothing else on the hot path.
# ---------------------------------------------------------------------------


def _stats_attrs(atype: int, stats: Stats, wide: bool) -> bytes:
    body = b""
    for i, val in enumerate(
        (stats.conns, stats.inpkts, stats.outpkts, stats.inbytes, stats.outbytes,
         stats.cps, stats.inpps, stats.outpps, stats.inbps, stats.outbps)
    ):  # fmt: skip
        code = "=Q" if wide or i in (3, 4) else "=I"
        masked = val if code == "=Q" else val & 0xFFFFFFFF
        body += encode_attr(i + 1, struct.pack(code, masked))
    return encode_attr(atype, body)


def _genl_message(family: int, cmd: int, seq: int, attrs: bytes, flags: int = NLM_F_MULTI) -> bytes:
    return _NLMSG.pack(_PAYLOAD + len(attrs), family, flags, seq, 0) + struct.pack("=BBxx", cmd, 1) + attrs


def kernel_service_reply(
    family: int, seq: int, server: VirtualServer, stats: Stats = _EMPTY_STATS, flags_extra: int = 0
) -> bytes:
    """The NEW_SERVICE message the kernel sends for ``server`` in a dump (ip_vs_genl_fill_service's order)."""
    key = server.key
    af = service_family(server)
    body = encode_attr(IPVS_SVC_ATTR_AF, struct.pack("=H", af))
    if key.fwmark:
        body += encode_attr(IPVS_SVC_ATTR_FWMARK, struct.pack("=I", key.fwmark))
    else:
        body += encode_attr(IPVS_SVC_ATTR_PROTOCOL, struct.pack("=H", int(key.protocol or 0)))
        body += encode_attr(IPVS_SVC_ATTR_ADDR, key.address.packed.ljust(16, b"\0"))
        body += encode_attr(IPVS_SVC_ATTR_PORT, struct.pack("!H", key.port))
    body += encode_attr(IPVS_SVC_ATTR_SCHED_NAME, server.scheduler.encode() + b"\0")
    body += encode_attr(IPVS_SVC_ATTR_FLAGS, struct.pack("=II", server.flags | flags_extra, _ALL_FLAGS))
    body += encode_attr(IPVS_SVC_ATTR_TIMEOUT, struct.pack("=I", server.timeout))
    body += encode_attr(IPVS_SVC_ATTR_NETMASK, struct.pack("=I", _netmask_u32(server)))
    body += _stats_attrs(IPVS_SVC_ATTR_STATS, stats, False)
    body += _stats_attrs(IPVS_SVC_ATTR_STATS64, stats, True)
    return _genl_message(family, IPVS_CMD_NEW_SERVICE, seq, encode_attr(IPVS_CMD_ATTR_SERVICE, body))


def kernel_dest_reply(family: int, seq: int, state: RealServerState, tun_port: int = 0) -> bytes:
    """The NEW_DEST message the kernel sends for a destination in a dump (ip_vs_genl_fill_dest's order)."""
    r = state.server
    af = AF_INET if r.key.address.version == 4 else AF_INET6
    body = encode_attr(IPVS_DEST_ATTR_ADDR, r.key.address.packed.ljust(16, b"\0"))
    body += encode_attr(IPVS_DEST_ATTR_PORT, struct.pack("!H", r.key.port))
    body += encode_attr(IPVS_DEST_ATTR_FWD_METHOD, struct.pack("=I", int(r.forward)))
    body += encode_attr(IPVS_DEST_ATTR_WEIGHT, struct.pack("=I", r.weight))
    body += encode_attr(IPVS_DEST_ATTR_TUN_TYPE, struct.pack("=B", 0))
    body += encode_attr(IPVS_DEST_ATTR_TUN_PORT, struct.pack("!H", tun_port))
    body += encode_attr(IPVS_DEST_ATTR_TUN_FLAGS, struct.pack("=H", 0))
    body += encode_attr(IPVS_DEST_ATTR_U_THRESH, struct.pack("=I", r.upper_threshold))
    body += encode_attr(IPVS_DEST_ATTR_L_THRESH, struct.pack("=I", r.lower_threshold))
    body += encode_attr(IPVS_DEST_ATTR_ACTIVE_CONNS, struct.pack("=I", state.active_conns))
    body += encode_attr(IPVS_DEST_ATTR_INACT_CONNS, struct.pack("=I", state.inactive_conns))
    body += encode_attr(IPVS_DEST_ATTR_PERSIST_CONNS, struct.pack("=I", state.persistent_conns))
    body += encode_attr(IPVS_DEST_ATTR_ADDR_FAMILY, struct.pack("=H", af))
    body += _stats_attrs(IPVS_DEST_ATTR_STATS, state.stats, False)
    body += _stats_attrs(IPVS_DEST_ATTR_STATS64, state.stats, True)
    return _genl_message(family, IPVS_CMD_NEW_DEST, seq, encode_attr(IPVS_CMD_ATTR_DEST, body))


def request_as_reply(request: bytes, new_cmd: int) -> bytes:
    """Re-frame an encoded request as a reply: same attributes, ``new_cmd`` (for round-trip tests).

    The kernel's replies carry the same attribute types as our requests, so a
    request's attributes decoded as a reply must give back the encoded value.
    """
    length, family, _flags, seq, pid = _NLMSG.unpack_from(request, 0)
    return (
        _NLMSG.pack(length, family, NLM_F_MULTI, seq, pid) + struct.pack("=BBxx", new_cmd, 1) + request[_PAYLOAD:length]
    )
