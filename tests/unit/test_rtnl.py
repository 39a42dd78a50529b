"""The rtnetlink codec: requests carry what ``ip addr add`` sends, replies decode to what the kernel holds.

The last tests prove it against the running kernel, inside a network namespace of their own
(a forked child unshares one; the host's namespace is never touched): they need root and are
skipped without it, or when namespaces are unavailable.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
import traceback
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipvsctl.kernel import codec, rtnl
from ipvsctl.kernel.netlink import NetlinkKernel
from ipvsctl.model.ipvs import IPAddress
from ipvsctl.model.ops import BindAddress, UnbindAddress

V4 = ipaddress.ip_address("198.51.100.7")
V6 = ipaddress.ip_address("2001:db8::7")
NLMSG = struct.Struct("=IHHII")


def attrs(msg: bytes, start: int) -> dict[int, bytes]:
    return {t: msg[o : o + n] for t, o, n in codec.iter_attrs(msg, start, len(msg))}


def attr(atype: int, value: bytes) -> bytes:
    alen = 4 + len(value)
    return struct.pack("=HH", alen, atype) + value + b"\0" * (((alen + 3) & ~3) - alen)


def message(mtype: int, seq: int, body: bytes, flags: int = codec.NLM_F_MULTI) -> bytes:
    return NLMSG.pack(16 + len(body), mtype, flags, seq, 4242) + body


def address_reply(seq: int, family: int, index: int, *attributes: bytes, flags: int = codec.NLM_F_MULTI) -> bytes:
    """An RTM_NEWADDR message as a dump carries it."""
    prefix = 32 if family == socket.AF_INET else 128
    body = struct.pack("=BBBBI", family, prefix, 0x80, 0, index) + b"".join(attributes)
    return message(rtnl.RTM_NEWADDR, seq, body, flags)


def done(seq: int, code: int = 0, flags: int = codec.NLM_F_MULTI) -> bytes:
    return message(codec.NLMSG_DONE, seq, struct.pack("=i", -code), flags)


def ack(seq: int, code: int, request: bytes | None = None) -> bytes:
    """NLMSG_ERROR: the errno and the request's header (capped) or the whole request."""
    echoed = request if request is not None else NLMSG.pack(40, rtnl.RTM_NEWADDR, 0x605, seq, 0)
    return message(codec.NLMSG_ERROR, seq, struct.pack("=i", -code) + echoed, flags=0)


# --- encoding ---


@pytest.mark.parametrize(
    ("add", "address", "size", "flags"),
    [
        (True, V4, 40, 0x605),  # REQUEST | ACK | EXCL | CREATE
        (False, V4, 40, 0x005),
        (True, V6, 72, 0x605),
        (False, V6, 64, 0x005),
    ],
)
def test_address_request_layout(add: bool, address: IPAddress, size: int, flags: int) -> None:
    """ifaddrmsg with a host prefix, IFA_LOCAL = IFA_ADDRESS, NODAD on a new IPv6 address only."""
    msg = rtnl.encode_address(77, rtnl.AddressChange(add, 9, address))
    length, mtype, mflags, seq, pid = NLMSG.unpack_from(msg, 0)
    assert (length, len(msg), mflags, seq, pid) == (size, size, flags, 77, 0)
    assert mtype == (rtnl.RTM_NEWADDR if add else rtnl.RTM_DELADDR)
    family, prefixlen, ifa_flags, scope, index = struct.unpack_from("=BBBBI", msg, 16)
    v4 = address.version == 4
    assert (family, prefixlen, ifa_flags, scope, index) == (
        socket.AF_INET if v4 else socket.AF_INET6,
        32 if v4 else 128,
        0,
        0,
        9,
    )
    found = attrs(msg, 24)
    assert found[rtnl.IFA_LOCAL] == found[rtnl.IFA_ADDRESS] == address.packed
    if add and not v4:
        assert found[rtnl.IFA_FLAGS] == struct.pack("=I", rtnl.IFA_F_NODAD)
    else:
        assert rtnl.IFA_FLAGS not in found


def test_dump_requests() -> None:
    addr = rtnl.encode_dump_addresses(5)
    assert NLMSG.unpack_from(addr, 0) == (24, rtnl.RTM_GETADDR, 0x301, 5, 0)
    assert addr[16:] == bytes(8)  # AF_UNSPEC, every interface
    link = rtnl.encode_dump_links(6)
    assert NLMSG.unpack_from(link, 0) == (len(link), rtnl.RTM_GETLINK, 0x301, 6, 0)
    assert attrs(link, 32) == {rtnl.IFLA_EXT_MASK: struct.pack("=I", rtnl.RTEXT_FILTER_SKIP_STATS)}


def test_link_requests_layout() -> None:
    """`ip link add NAME type KIND` and `ip link set dev NAME up` as iproute2 sends them."""
    new = rtnl.encode_new_link(8, "ipvsctl0")
    assert NLMSG.unpack_from(new, 0) == (len(new), rtnl.RTM_NEWLINK, 0x605, 8, 0)  # REQUEST|ACK|EXCL|CREATE
    assert new[16:32] == bytes(16)  # AF_UNSPEC, no index, no flags, no change
    found = attrs(new, 32)
    assert set(found) == {rtnl.IFLA_IFNAME, rtnl.IFLA_LINKINFO}
    assert found[rtnl.IFLA_IFNAME] == b"ipvsctl0\0"
    assert struct.unpack_from("=HH", new, 48) == (16, rtnl.IFLA_LINKINFO | rtnl.NLA_F_NESTED)  # after the name's 16
    assert attrs(found[rtnl.IFLA_LINKINFO], 0) == {rtnl.IFLA_INFO_KIND: b"dummy"}
    up = rtnl.encode_set_up(9, 42)
    assert NLMSG.unpack_from(up, 0) == (32, rtnl.RTM_NEWLINK, 0x005, 9, 0)
    assert struct.unpack_from("=BxHiII", up, 16) == (0, 0, 42, rtnl.IFF_UP, rtnl.IFF_UP)  # only IFF_UP changes


@pytest.mark.parametrize("name", ["", "a" * 16, ".", "..", "a/b", "a b", "a:1", "a\0b", "a\tb"])
def test_names_the_kernel_refuses_are_refused_before_sending(name: str) -> None:
    assert not rtnl.valid_name(name)
    with pytest.raises(ValueError, match="not an interface name"):
        rtnl.encode_new_link(1, name)
    assert rtnl.RouteSocket().create_link(name) == errno.EINVAL  # never opens a socket


@pytest.mark.parametrize("name", ["ipvsctl0", "kube-ipvs0", "a" * 15, "vip_0.1"])
def test_names_the_kernel_takes(name: str) -> None:
    assert rtnl.valid_name(name)


# --- decoding ---


@given(st.ip_addresses(), st.booleans(), st.integers(1, 2**31 - 1))
def test_request_decodes_as_reply(address: IPAddress, add: bool, index: int) -> None:
    """A request has the layout of the RTM_NEWADDR the kernel sends: it decodes to what was encoded."""
    msg = rtnl.encode_address(1, rtnl.AddressChange(add, index, address))
    assert rtnl.decode_address(msg, 0, len(msg)) == (index, address)


def test_dump_reply_prefers_local_and_skips_other_families() -> None:
    """IFA_LOCAL wins over IFA_ADDRESS (a peer on point-to-point links); IFA_ADDRESS alone is used
    (IPv6); messages of other families, other sequence numbers or other types are skipped."""
    seq = 31
    local, peer = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")
    cacheinfo = attr(rtnl.IFA_CACHEINFO, bytes(16))
    label, flags = attr(rtnl.IFA_LABEL, b"eth0\0"), attr(rtnl.IFA_FLAGS, struct.pack("=I", 0x80))
    datagram = b"".join(
        [
            address_reply(seq, socket.AF_INET, 3, attr(rtnl.IFA_ADDRESS, peer.packed),
                          attr(rtnl.IFA_LOCAL, local.packed), label, flags, cacheinfo),
            address_reply(seq, socket.AF_INET6, 4, attr(rtnl.IFA_ADDRESS, V6.packed), cacheinfo, flags),
            address_reply(seq, 17, 5, attr(rtnl.IFA_ADDRESS, b"\1\2\3\4\5\6")),  # AF_PACKET: not ours
            address_reply(seq, socket.AF_INET, 6, attr(rtnl.IFA_LABEL, b"x\0")),  # no address at all
            address_reply(seq - 1, socket.AF_INET, 7, attr(rtnl.IFA_LOCAL, V4.packed)),  # a stale dump
            message(codec.NLMSG_NOOP, seq, b""),
            done(seq),
        ]
    )  # fmt: skip
    out: list[tuple[int, IPAddress]] = []
    assert rtnl.read_dump(datagram, len(datagram), seq, rtnl.RTM_NEWADDR, rtnl.decode_address, out) == (True, False)
    assert out == [(3, local), (4, V6)]


def test_keep_filters_by_interface_before_decoding() -> None:
    msg = address_reply(1, socket.AF_INET, 6, attr(rtnl.IFA_LOCAL, V4.packed))
    assert rtnl.decode_address(msg, 0, len(msg), keep=lambda index: index == 6) == (6, V4)
    assert rtnl.decode_address(msg, 0, len(msg), keep=lambda index: index != 6) is None


def test_dump_spanning_datagrams_and_interrupted() -> None:
    first = address_reply(8, socket.AF_INET, 2, attr(rtnl.IFA_LOCAL, V4.packed))
    out: list[tuple[int, IPAddress]] = []
    assert rtnl.read_dump(first, len(first), 8, rtnl.RTM_NEWADDR, rtnl.decode_address, out) == (False, False)
    flagged = codec.NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR
    second = address_reply(8, socket.AF_INET6, 2, attr(rtnl.IFA_ADDRESS, V6.packed), flags=flagged) + done(8)
    assert rtnl.read_dump(second, len(second), 8, rtnl.RTM_NEWADDR, rtnl.decode_address, out) == (True, True)
    assert out == [(2, V4), (2, V6)]


@pytest.mark.parametrize("mtype", [codec.NLMSG_DONE, codec.NLMSG_ERROR])
def test_dump_failure_raises_the_kernel_errno(mtype: int) -> None:
    datagram = done(9, errno.EINVAL) if mtype == codec.NLMSG_DONE else ack(9, errno.EINVAL)
    with pytest.raises(OSError) as caught:
        rtnl.read_dump(datagram, len(datagram), 9, rtnl.RTM_NEWADDR, rtnl.decode_address, [])
    assert caught.value.errno == errno.EINVAL


def test_link_reply() -> None:
    body = struct.pack("=BxHiII", 0, 772, 1, 0x10049, 0)
    msg = message(rtnl.RTM_NEWLINK, 1, body + attr(4, struct.pack("=I", 65536)) + attr(rtnl.IFLA_IFNAME, b"lo\0"))
    assert rtnl.decode_link(msg, 0, len(msg)) == rtnl.Link(1, 0x10049, "lo")
    nameless = message(rtnl.RTM_NEWLINK, 1, body)
    assert rtnl.decode_link(nameless, 0, len(nameless)) == rtnl.Link(1, 0x10049, "")
    short = message(rtnl.RTM_NEWLINK, 1, body[:8])
    assert rtnl.decode_link(short, 0, len(short)) is None
    short = message(rtnl.RTM_NEWADDR, 1, b"\2\x20\0\0")
    assert rtnl.decode_address(short, 0, len(short)) is None


def test_acks_match_by_sequence_number() -> None:
    """Acks in any order; capped (header only) or not (whole request); stale acks and other messages ignored."""
    request = rtnl.encode_address(12, rtnl.AddressChange(False, 3, V6))
    datagram = b"".join(
        [
            ack(11, errno.EEXIST),
            ack(99, errno.ENODEV),  # an earlier batch's
            message(rtnl.RTM_NEWADDR, 10, b""),
            ack(10, 0),
            ack(12, errno.EADDRNOTAVAIL, request),
        ]
    )
    pending = {10: 0, 11: 1, 12: 2, 13: 3}
    codes = [-1] * 4
    rtnl.read_acks(datagram, len(datagram), pending, codes)
    assert codes == [0, errno.EEXIST, errno.EADDRNOTAVAIL, -1]
    assert pending == {13: 3}
    tail = ack(13, errno.EPERM)
    rtnl.read_acks(tail + b"\0" * 8, len(tail), pending, codes)  # only up to what was received
    assert codes[3] == errno.EPERM and not pending


class FakeKernel:
    """Stands in for the socket: answers each request with ``reply(seq)`` (one datagram each)."""

    def __init__(self, reply: Callable[[int], list[bytes]]) -> None:
        self.reply = reply
        self.queue: list[bytes] = []
        self.sends: list[int] = []  # requests per send
        self.closed = False

    @property
    def requests(self) -> int:
        return sum(self.sends)

    def send(self, data: bytes) -> int:
        messages = list(codec.iter_messages(data))
        self.sends.append(len(messages))
        for _mtype, _flags, seq, _off, _length in messages:
            self.queue.extend(self.reply(seq))
        return len(data)

    def recv_into(self, buf: bytearray) -> int:
        if not self.queue:
            raise OSError(errno.ENOBUFS, "No buffer space available")
        data = self.queue.pop(0)
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.closed = True


def route_with(fake: FakeKernel, batch: int = rtnl.BATCH) -> rtnl.RouteSocket:
    route = rtnl.RouteSocket(batch=batch)
    route._sock = fake  # type: ignore[assignment]
    return route


def test_interrupted_dump_is_taken_again() -> None:
    answers = iter([rtnl.NLM_F_DUMP_INTR, 0])

    def reply(seq: int) -> list[bytes]:
        flags = codec.NLM_F_MULTI | next(answers)
        return [address_reply(seq, socket.AF_INET, 2, attr(rtnl.IFA_LOCAL, V4.packed), flags=flags), done(seq)]

    fake = FakeKernel(reply)
    assert route_with(fake).addresses() == [(2, V4)]
    assert fake.requests == 2


def test_dump_never_consistent_raises() -> None:
    fake = FakeKernel(lambda seq: [done(seq, flags=codec.NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR)])
    with pytest.raises(rtnl.DumpInterrupted):
        route_with(fake).links()


def test_batches_and_lost_replies() -> None:
    """Requests go out ``batch`` to a send; acks come back per seq; lost replies close the socket."""
    sent: list[int] = []

    def reply(seq: int) -> list[bytes]:
        sent.append(seq)
        return [ack(seq, errno.EEXIST if seq % 3 == 0 else 0)]

    fake = FakeKernel(reply)
    route = route_with(fake, batch=4)
    codes = route.change_addresses([rtnl.AddressChange(True, 2, V4)] * 10)
    assert fake.sends == [4, 4, 2]
    assert len(sent) == 10 and codes == [errno.EEXIST if seq % 3 == 0 else 0 for seq in sent]
    fake.reply = lambda seq: []  # the kernel's acks were dropped (ENOBUFS)
    with pytest.raises(OSError) as caught:
        route.change_addresses([rtnl.AddressChange(False, 2, V4)])
    assert caught.value.errno == errno.ENOBUFS and fake.closed


# --- against the running kernel, in a network namespace of our own ---

CLONE_NEWNET = 0x40000000
_SKIP = 77


def in_new_netns(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child that first moves to a new network namespace; a failure
    there fails the test with the child's traceback. The namespace dies with the child."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    if shutil.which("ip") is None:
        pytest.skip("needs the ip command (iproute2)")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                report, status = f"network namespaces unavailable: {os.strerror(ctypes.get_errno())}", _SKIP
            else:
                body()
                report, status = "", 0
        except BaseException:
            report = traceback.format_exc()
        finally:
            os.write(write, report.encode())
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode()
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code == _SKIP:
        pytest.skip(report)
    assert code == 0, report or f"child exited with {code}"


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def ip_addresses(dev: str) -> set[str]:
    """``ip -o addr show dev`` as {"10.0.0.1/32", "fd00::1/128 nodad", ...}."""
    out = set()
    for line in ip("-o", "addr", "show", "dev", dev).splitlines():
        words = line.split()
        family = words.index("inet") if "inet" in words else words.index("inet6")
        out.add(words[family + 1] + (" nodad" if "nodad" in words else "") + (" peer" if "peer" in words else ""))
    return out


def test_route_socket_on_lo() -> None:
    """Batches of adds and deletes land in the kernel as `ip` shows them; errors come back per request."""

    def body() -> None:
        ip("link", "set", "lo", "up")
        route = rtnl.RouteSocket(timeout=10)
        (lo,) = [link for link in route.links() if link.name == "lo"]
        assert lo.flags & rtnl.IFF_LOOPBACK and lo.flags & rtnl.IFF_UP
        many = [ipaddress.ip_address(int(ipaddress.ip_address("10.20.0.0")) + n) for n in range(600)]
        changes = [rtnl.AddressChange(True, lo.index, a) for a in [V4, V6, *many]]
        assert route.change_addresses(changes) == [0] * len(changes)  # three batches
        assert ip_addresses("lo") >= {"198.51.100.7/32", "2001:db8::7/128 nodad", "10.20.2.87/32"}
        dumped = route.addresses()
        assert set(dumped) == {(lo.index, a) for a in [V4, V6, *many, ipaddress.ip_address("127.0.0.1")]} | {
            (lo.index, ipaddress.ip_address("::1"))
        }
        errors = route.change_addresses(
            [
                rtnl.AddressChange(True, lo.index, V4),
                rtnl.AddressChange(True, lo.index, V6),
                rtnl.AddressChange(False, lo.index, ipaddress.ip_address("203.0.113.1")),
                rtnl.AddressChange(False, lo.index, ipaddress.ip_address("2001:db8::99")),
                rtnl.AddressChange(True, 999_999, ipaddress.ip_address("203.0.113.1")),
                rtnl.AddressChange(False, lo.index, V4),
                rtnl.AddressChange(False, lo.index, V6),
            ]
        )
        assert errors == [errno.EEXIST, errno.EEXIST, errno.EADDRNOTAVAIL, errno.EADDRNOTAVAIL, errno.ENODEV, 0, 0]
        route.change_addresses([rtnl.AddressChange(False, lo.index, a) for a in many])
        assert ip_addresses("lo") == {"127.0.0.1/8", "::1/128"}
        assert set(route.addresses()) == {(lo.index, ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")}
        route.close()

    in_new_netns(body)


def test_create_link_and_set_up() -> None:
    """A link made by create_link is there and down; EEXIST the second time; set_up raises IFF_UP only.
    (The host kernel may lack the dummy module: a bridge shows the request works; the VM's kernel
    suite makes dummies.)"""

    def body() -> None:
        route = rtnl.RouteSocket(timeout=10)
        assert route.create_link("vip0", kind="bridge") == 0
        assert route.create_link("vip0", kind="bridge") == errno.EEXIST
        assert route.create_link("vip1", kind="no-such-kind") == errno.EOPNOTSUPP
        (vip0,) = [link for link in route.links() if link.name == "vip0"]
        assert "bridge" in ip("-d", "-o", "link", "show", "vip0")
        assert not vip0.flags & rtnl.IFF_UP
        assert route.set_up(vip0.index) == 0
        assert route.set_up(vip0.index) == 0  # already up: nothing to do
        (vip0,) = [link for link in route.links() if link.name == "vip0"]
        assert vip0.flags & rtnl.IFF_UP
        assert route.set_up(999_999) == errno.ENODEV
        route.close()

    in_new_netns(body)


def test_netlink_kernel_addresses() -> None:
    """NetlinkKernel's bind/unbind, bound and node addresses over rtnl, with a bridge standing in for
    the dummy interface (the host may have no dummy module); ENODEV when it vanishes under the cache."""

    def body() -> None:
        ip("link", "set", "lo", "up")
        ip("link", "add", "vip0", "type", "bridge")
        ip("link", "set", "vip0", "addrgenmode", "none")  # no link-local address once it is up
        ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        ip("addr", "add", "192.0.2.10/24", "dev", "eth0")
        ip("addr", "add", "2001:db8:1::10/64", "dev", "eth0", "nodad")
        ip("addr", "add", "fe80::10/64", "dev", "eth0", "nodad")
        ip("addr", "add", "127.0.0.2/8", "dev", "eth1")  # loopback address on a plain link
        ip("addr", "add", "203.0.113.9/32", "dev", "lo")  # any address on a loopback link
        kernel = NetlinkKernel(interface="vip0", timeout=10)
        nodes = [ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8:1::10")]
        assert kernel.bound_addresses() == set()
        assert kernel.node_addresses() == nodes

        a, b, c = V4, V6, ipaddress.ip_address("198.51.100.8")
        results = kernel.execute([BindAddress(a), BindAddress(b), BindAddress(a), UnbindAddress(c)])
        assert [r.errno if r else None for r in results] == [None, None, errno.EEXIST, errno.EADDRNOTAVAIL]
        assert kernel.bound_addresses() == {a, b}
        assert ip_addresses("vip0") == {"198.51.100.7/32", "2001:db8::7/128 nodad"}
        assert kernel.node_addresses() == nodes

        ip("link", "del", "vip0")  # the cached index is now stale
        results = kernel.execute([UnbindAddress(a), UnbindAddress(b)])
        assert [r.errno if r else None for r in results] == [errno.ENODEV, errno.EADDRNOTAVAIL]
        assert kernel.bound_addresses() == set()
        ip("link", "add", "vip0", "type", "bridge")
        ip("link", "set", "vip0", "addrgenmode", "none")
        results = kernel.execute([UnbindAddress(a), BindAddress(c)])  # finds the new vip0 (no ENODEV)
        assert [r.errno if r else None for r in results] == [errno.EADDRNOTAVAIL, None]
        assert kernel.bound_addresses() == {c}
        assert "UP" in ip("-o", "link", "show", "vip0").split("<", 1)[1].split(">", 1)[0].split(",")
        kernel.close()

    in_new_netns(body)
