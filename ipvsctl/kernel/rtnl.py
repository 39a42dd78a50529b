"""A small rtnetlink codec and socket: addresses and links, written from include/uapi/linux/
rtnetlink.h, if_addr.h, if_link.h and if.h.

Only what ipvsctl needs for its dummy interface: create it and set it up, add and delete one
address (host prefix), dump every address, dump every link. Address requests are one
``struct.pack`` each; replies are read in place with ``unpack_from`` over a memoryview, no
message objects. The netlink framing (message walk, error codes, attributes) is shared with
``codec``.

Address requests carry what ``ip addr add ADDR/32 dev IF`` (or /128, ``nodad``) sends:
an ``ifaddrmsg`` with the prefix length and interface index, then IFA_LOCAL and
IFA_ADDRESS both holding the address (the kernel reads two equal values as "no peer"),
and for a new IPv6 address IFA_FLAGS = IFA_F_NODAD (no duplicate address detection: the
address is usable at once, never "tentative"). A new address also has NLM_F_CREATE |
NLM_F_EXCL: adding one that exists fails with EEXIST; deleting one that does not exist
fails with EADDRNOTAVAIL.

Creating the interface is what ``ip link add NAME type dummy`` sends: RTM_NEWLINK with
NLM_F_CREATE | NLM_F_EXCL (EEXIST when the name is taken), IFLA_IFNAME and a nested
IFLA_LINKINFO holding IFLA_INFO_KIND "dummy". Setting it up is ``ip link set dev NAME up``:
RTM_NEWLINK for its index with IFF_UP in both the flags and the change mask.

``RouteSocket`` sends address requests ``batch`` to a ``sendmsg``, each with NLM_F_ACK
and its own sequence number, and matches the acks back by sequence number: the kernel
runs every request of a datagram in order and answers each, failures included.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

from ipvsctl.kernel.codec import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    decode_error,
    encode_attr,
    iter_messages,
)
from ipvsctl.model.ipvs import IPAddress

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # error acks carry only the request's header, not the whole request
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

NLM_F_DUMP_INTR = 0x10  # the dumped table changed while it was dumped: the dump may be inconsistent
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22

IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_CACHEINFO = 6
IFA_FLAGS = 8
IFA_F_NODAD = 0x02

IFLA_IFNAME = 3
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3  # link dumps without the (large) statistics blocks

IFF_UP = 0x1
IFF_LOOPBACK = 0x8

AF_UNSPEC = 0
AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

BATCH = 256
BUFFER = 8 << 20
_RECV_CHUNK = 1 << 20
_DUMP_ATTEMPTS = 5

_NLMSG_HDRLEN = 16
_NLA = struct.Struct("=HH")
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_ADDR_START = _NLMSG_HDRLEN + _IFADDRMSG.size  # where an address message's attributes start
_LINK_START = _NLMSG_HDRLEN + _IFINFOMSG.size

# nlmsghdr, ifaddrmsg, IFA_LOCAL, IFA_ADDRESS [, IFA_FLAGS]
_ADDR4 = struct.Struct("=IHHII BBBBI HH4s HH4s")
_ADDR6 = struct.Struct("=IHHII BBBBI HH16s HH16s")
_ADDR6_NODAD = struct.Struct("=IHHII BBBBI HH16s HH16s HHI")
_DUMP_ADDR = struct.Struct("=IHHII BBBBI")
_DUMP_LINK = struct.Struct("=IHHII BxHiII HHI")  # with IFLA_EXT_MASK
_SET_LINK = struct.Struct("=IHHII BxHiII")  # nlmsghdr, ifinfomsg
IFNAMSIZ = 16  # an interface name has at most 15 bytes and its NUL

_NEW_FLAGS = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_DEL_FLAGS = NLM_F_REQUEST | NLM_F_ACK

T = TypeVar("T")


class AddressChange(NamedTuple):
    """Add (``add=True``) or delete one host-prefix address on interface ``index``."""

    add: bool
    index: int
    address: IPAddress


class Link(NamedTuple):
    index: int
    flags: int  # IFF_*
    name: str


class DumpInterrupted(OSError):
    """The kernel flagged every attempt at a dump as interrupted (NLM_F_DUMP_INTR)."""


# --- encoding ---


def encode_address(seq: int, change: AddressChange) -> bytes:
    """RTM_NEWADDR (NLM_F_CREATE | NLM_F_EXCL) or RTM_DELADDR for one /32 or /128 address, with NLM_F_ACK."""
    add, index, address = change
    raw = address.packed
    cmd, flags = (RTM_NEWADDR, _NEW_FLAGS) if add else (RTM_DELADDR, _DEL_FLAGS)
    if address.version == 4:
        head = (_ADDR4.size, cmd, flags, seq, 0, AF_INET, 32, 0, 0, index)
        return _ADDR4.pack(*head, 8, IFA_LOCAL, raw, 8, IFA_ADDRESS, raw)
    layout = _ADDR6_NODAD if add else _ADDR6
    head = (layout.size, cmd, flags, seq, 0, AF_INET6, 128, 0, 0, index)
    if add:
        return layout.pack(*head, 20, IFA_LOCAL, raw, 20, IFA_ADDRESS, raw, 8, IFA_FLAGS, IFA_F_NODAD)
    return layout.pack(*head, 20, IFA_LOCAL, raw, 20, IFA_ADDRESS, raw)


def valid_name(name: str) -> bool:
    """Whether the kernel could take ``name`` as an interface name (1 to 15 bytes, no NUL, '/' or
    blank, not '.' or '..')."""
    raw = name.encode(errors="surrogateescape")
    return 0 < len(raw) < IFNAMSIZ and raw not in (b".", b"..") and not any(c in raw for c in b"\0/: \t\n\v\f\r")


def encode_new_link(seq: int, name: str, kind: str = "dummy") -> bytes:
    """RTM_NEWLINK (NLM_F_CREATE | NLM_F_EXCL, NLM_F_ACK): a new interface ``name`` of ``kind``."""
    if not valid_name(name):
        raise ValueError(f"not an interface name: {name!r}")
    name_attr = encode_attr(IFLA_IFNAME, name.encode(errors="surrogateescape") + b"\0")
    attrs = name_attr + encode_attr(IFLA_LINKINFO | NLA_F_NESTED, encode_attr(IFLA_INFO_KIND, kind.encode()))
    size = _SET_LINK.size + len(attrs)
    return _SET_LINK.pack(size, RTM_NEWLINK, _NEW_FLAGS, seq, 0, AF_UNSPEC, 0, 0, 0, 0) + attrs


def encode_set_up(seq: int, index: int) -> bytes:
    """RTM_NEWLINK (NLM_F_ACK) setting IFF_UP on interface ``index``, nothing else."""
    return _SET_LINK.pack(_SET_LINK.size, RTM_NEWLINK, _DEL_FLAGS, seq, 0, AF_UNSPEC, 0, index, IFF_UP, IFF_UP)


def encode_dump_addresses(seq: int, family: int = AF_UNSPEC) -> bytes:
    """RTM_GETADDR with NLM_F_DUMP: every address of ``family`` (AF_UNSPEC: IPv4 and IPv6)."""
    return _DUMP_ADDR.pack(_DUMP_ADDR.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, family, 0, 0, 0, 0)


def encode_dump_links(seq: int) -> bytes:
    """RTM_GETLINK with NLM_F_DUMP, asking the kernel to leave out statistics."""
    head = (_DUMP_LINK.size, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, AF_UNSPEC, 0, 0, 0, 0)
    return _DUMP_LINK.pack(*head, 8, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)


# --- decoding ---


def decode_address(
    buf: bytes | bytearray | memoryview, off: int, length: int, keep: Callable[[int], bool] | None = None
) -> tuple[int, IPAddress] | None:
    """(interface index, address) of an RTM_NEWADDR message: IFA_LOCAL, else IFA_ADDRESS.

    None for a family other than IPv4/IPv6, a message with neither attribute, or an interface
    index ``keep`` rejects (checked first: a rejected address costs no decoding).
    """
    if length < _ADDR_START:
        return None
    family, _prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(buf, off + _NLMSG_HDRLEN)
    if keep is not None and not keep(index):
        return None
    if family == AF_INET:
        size, make = 4, ipaddress.IPv4Address
    elif family == AF_INET6:
        size, make = 16, ipaddress.IPv6Address
    else:
        return None
    found = -1
    pos = off + _ADDR_START
    end = off + length
    unpack = _NLA.unpack_from
    while pos + 4 <= end:
        alen, atype = unpack(buf, pos)
        if alen < 4 or pos + alen > end:
            break
        if alen - 4 == size:
            if atype == IFA_LOCAL:
                found = pos + 4
                break
            if atype == IFA_ADDRESS:
                found = pos + 4
        pos += (alen + 3) & ~3
    if found < 0:
        return None
    return index, make(bytes(buf[found : found + size]))


def decode_link(buf: bytes | bytearray | memoryview, off: int, length: int) -> Link | None:
    """Index, IFF_* flags and name of an RTM_NEWLINK message ("" when it has no IFLA_IFNAME)."""
    if length < _LINK_START:
        return None
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(buf, off + _NLMSG_HDRLEN)
    pos = off + _LINK_START
    end = off + length
    name = ""
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(buf, pos)
        if alen < 4 or pos + alen > end:
            break
        if atype == IFLA_IFNAME:
            raw = bytes(buf[pos + 4 : pos + alen])
            name = raw.split(b"\0", 1)[0].decode(errors="replace")
            break
        pos += (alen + 3) & ~3
    return Link(index, flags, name)


def read_acks(buf: bytes | bytearray | memoryview, end: int, pending: dict[int, int], codes: list[int]) -> None:
    """Take the acks of one received datagram: for each NLMSG_ERROR whose sequence number is in
    ``pending`` (seq -> slot), store its positive errno (0 = done) in ``codes[slot]`` and drop
    the seq from ``pending``. Anything else (a stale reply of an earlier request) is skipped."""
    for mtype, _flags, seq, off, _length in iter_messages(buf, end):
        if mtype == NLMSG_ERROR:
            slot = pending.pop(seq, None)
            if slot is not None:
                codes[slot] = decode_error(buf, off)


def read_dump(
    buf: bytes | bytearray | memoryview,
    end: int,
    seq: int,
    want: int,
    decode: Callable[[bytes | bytearray | memoryview, int, int], T | None],
    out: list[T],
) -> tuple[bool, bool]:
    """Take one received datagram of the dump with sequence number ``seq``: append
    ``decode(buf, offset, length)`` of each message of type ``want`` to ``out`` (unless None).

    Returns (done, interrupted): done once NLMSG_DONE arrived, interrupted when a message
    carried NLM_F_DUMP_INTR. Raises OSError with the kernel's errno when the dump failed.
    """
    interrupted = False
    for mtype, mflags, mseq, off, length in iter_messages(buf, end):
        if mseq != seq:
            continue
        if mflags & NLM_F_DUMP_INTR:
            interrupted = True
        if mtype == NLMSG_DONE:
            code = decode_error(buf, off) if length >= _NLMSG_HDRLEN + 4 else 0
            if code:
                raise OSError(code, f"rtnetlink dump failed: {os.strerror(code)}")
            return True, interrupted
        if mtype == NLMSG_ERROR:
            code = decode_error(buf, off)
            if code:
                raise OSError(code, f"rtnetlink dump failed: {os.strerror(code)}")
            continue
        if mtype == want:
            item = decode(buf, off, length)
            if item is not None:
                out.append(item)
    return False, interrupted


# --- the socket ---


def grow_buffers(sock: socket.socket, size: int = BUFFER) -> None:
    """Big socket buffers: a large dump, or a batch of acks, must not overflow them.

    SO_*BUFFORCE passes rmem_max/wmem_max (needs CAP_NET_ADMIN, which writing needs anyway).
    """
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)


class RouteSocket:
    """One NETLINK_ROUTE socket, opened on first use (in the network namespace of the thread
    that first uses it). Raises OSError for socket failures (PermissionError, TimeoutError,
    ENOBUFS: replies were lost), DumpInterrupted when a dump never came out consistent;
    per-request kernel errors are results, not exceptions."""

    def __init__(self, *, timeout: float = 120.0, batch: int = BATCH) -> None:
        self._timeout = timeout
        self._batch = batch
        self._sock: socket.socket | None = None
        self._seq = 0
        self._buf = bytearray(_RECV_CHUNK)
        self._view = memoryview(self._buf)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            try:
                sock.bind((0, 0))
                grow_buffers(sock)
                with contextlib.suppress(OSError):
                    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
                sock.settimeout(self._timeout)
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def open(self) -> None:
        """Open the socket now (binding it to the current network namespace)."""
        self._socket()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _recv(self) -> int:
        assert self._sock is not None
        try:
            return self._sock.recv_into(self._buf)
        except OSError:  # timeout, ENOBUFS: what the kernel did or will still send is unknown
            self.close()
            raise

    def change_addresses(self, changes: Sequence[AddressChange]) -> list[int]:
        """Run the changes in order; return each one's errno (0 = done)."""
        sock = self._socket()
        codes = [0] * len(changes)
        for start in range(0, len(changes), self._batch):
            pending: dict[int, int] = {}
            out = bytearray()
            for slot in range(start, min(start + self._batch, len(changes))):
                seq = self._next_seq()
                pending[seq] = slot
                out += encode_address(seq, changes[slot])
            sock.send(out)
            while pending:
                read_acks(self._view, self._recv(), pending, codes)
        return codes

    def request(self, encode: Callable[[int], bytes]) -> int:
        """Send one request with NLM_F_ACK (``encode(seq)``); its errno (0 = done)."""
        sock = self._socket()
        seq = self._next_seq()
        sock.send(encode(seq))
        codes = [0]
        pending = {seq: 0}
        while pending:
            read_acks(self._view, self._recv(), pending, codes)
        return codes[0]

    def create_link(self, name: str, kind: str = "dummy") -> int:
        """Create interface ``name`` of ``kind``; errno (0 = created, EEXIST = the name is taken,
        EINVAL = not a name the kernel could take, EOPNOTSUPP = no such kind in this kernel)."""
        if not valid_name(name):
            return errno.EINVAL
        return self.request(functools.partial(encode_new_link, name=name, kind=kind))

    def set_up(self, index: int) -> int:
        """Set interface ``index`` up (a no-op when it is up); errno (0 = done)."""
        return self.request(functools.partial(encode_set_up, index=index))

    def _dump(self, encode: Callable[[int], bytes], want: int, decode: Callable[..., T | None]) -> list[T]:
        for _attempt in range(_DUMP_ATTEMPTS):
            sock = self._socket()
            seq = self._next_seq()
            sock.send(encode(seq))
            out: list[T] = []
            done = interrupted = False
            while not done:
                done, intr = read_dump(self._view, self._recv(), seq, want, decode, out)
                interrupted = interrupted or intr
            if not interrupted:
                return out
        raise DumpInterrupted(errno.EINTR, f"rtnetlink dump interrupted {_DUMP_ATTEMPTS} times in a row")

    def addresses(self, keep: Callable[[int], bool] | None = None) -> list[tuple[int, IPAddress]]:
        """(interface index, address) of every IPv4 and IPv6 address, in the kernel's order; only
        those on interfaces whose index ``keep`` accepts, when given."""
        decode = decode_address if keep is None else functools.partial(decode_address, keep=keep)
        return self._dump(encode_dump_addresses, RTM_NEWADDR, decode)

    def links(self) -> list[Link]:
        return self._dump(encode_dump_links, RTM_NEWLINK, decode_link)
