"""The IPVS codec: requests carry what we mean, replies decode to what the kernel holds."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from ipvsctl.kernel import codec
from ipvsctl.model.ipvs import (
    Forward,
    Protocol,
    RealKey,
    RealServer,
    RealServerState,
    ServiceFlag,
    ServiceKey,
    Stats,
    VirtualServer,
)
from ipvsctl.model.ops import AddReal, AddService, DeleteReal, DeleteService, EditReal, EditService

FAMILY = 0x25
V4 = ipaddress.ip_address("198.51.100.10")
V6 = ipaddress.ip_address("2001:db8::10")

TCP80 = ServiceKey(Protocol.TCP, V4, 80)
UDP53_V6 = ServiceKey(Protocol.UDP, V6, 53)
FWM_V4 = ServiceKey(None, ipaddress.IPv4Address(0), 0, fwmark=4242)
FWM_V6 = ServiceKey(None, ipaddress.IPv6Address(0), 0, fwmark=77)


def attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    """Attribute type -> raw value, one level."""
    return {t: bytes(buf[o : o + n]) for t, o, n in codec.iter_attrs(buf, off, end)}


def request_nests(msg: bytes) -> dict[int, dict[int, bytes]]:
    """Top-level nest type -> its attributes, for an encoded request."""
    top = attrs(msg, 20, len(msg))
    return {t: attrs(v, 0, len(v)) for t, v in top.items()}


def service_roundtrip(server: VirtualServer, cmd: int = codec.IPVS_CMD_NEW_SERVICE) -> VirtualServer:
    request = codec.encode_service(FAMILY, 1, cmd, server)
    reply = codec.request_as_reply(request, codec.IPVS_CMD_NEW_SERVICE)
    decoded, stats = codec.decode_service(reply, 0, len(reply))
    assert stats == Stats()
    return decoded


def dest_roundtrip(service: ServiceKey, real: RealServer) -> RealServerState:
    request = codec.encode_dest(FAMILY, 1, codec.IPVS_CMD_NEW_DEST, service, real)
    reply = codec.request_as_reply(request, codec.IPVS_CMD_NEW_DEST)
    af = codec.AF_INET if service.address.version == 4 else codec.AF_INET6
    return codec.decode_dest(reply, 0, len(reply), af)


@pytest.mark.parametrize(
    "server",
    [
        VirtualServer(TCP80, "lc"),
        VirtualServer(TCP80, "sh", flags=int(ServiceFlag.PERSISTENT | ServiceFlag.SCHED1), timeout=10800),
        VirtualServer(TCP80, "wrr", flags=int(ServiceFlag.PERSISTENT), timeout=300, netmask=0xFFFFFF00),
        VirtualServer(UDP53_V6, "rr"),
        VirtualServer(UDP53_V6, "mh", flags=int(ServiceFlag.PERSISTENT), timeout=60, netmask=64),
        VirtualServer(ServiceKey(Protocol.SCTP, V4, 3868), "lblcr"),
        VirtualServer(FWM_V4, "wlc"),
        VirtualServer(FWM_V6, "dh", flags=int(ServiceFlag.ONEPACKET)),
    ],
    ids=str,
)
def test_service_roundtrip(server: VirtualServer) -> None:
    """A service encoded as NEW_SERVICE and read back as a reply is the same value."""
    assert service_roundtrip(server) == server


def test_set_service_sends_every_option() -> None:
    """SET_SERVICE carries scheduler, flags with a full mask, timeout and netmask: nothing left to kernel defaults."""
    server = VirtualServer(TCP80, "sh", flags=int(ServiceFlag.PERSISTENT), timeout=300)
    msg = codec.encode_service(FAMILY, 9, codec.IPVS_CMD_SET_SERVICE, server)
    svc = request_nests(msg)[codec.IPVS_CMD_ATTR_SERVICE]
    assert svc[codec.IPVS_SVC_ATTR_SCHED_NAME].split(b"\0")[0] == b"sh"
    assert struct.unpack("=II", svc[codec.IPVS_SVC_ATTR_FLAGS]) == (int(ServiceFlag.PERSISTENT), 0xFFFFFFFF)
    assert struct.unpack("=I", svc[codec.IPVS_SVC_ATTR_TIMEOUT]) == (300,)
    assert svc[codec.IPVS_SVC_ATTR_NETMASK] == b"\xff\xff\xff\xff"
    assert msg[16] == codec.IPVS_CMD_SET_SERVICE


def test_header_fields() -> None:
    """The netlink header carries length, family id, REQUEST|ACK and the sequence number; genl version is 1."""
    msg = codec.encode_service(FAMILY, 1234, codec.IPVS_CMD_NEW_SERVICE, VirtualServer(TCP80))
    length, family, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, family, flags, seq, pid) == (len(msg), FAMILY, codec.NLM_F_REQUEST | codec.NLM_F_ACK, 1234, 0)
    assert msg[16:18] == bytes([codec.IPVS_CMD_NEW_SERVICE, 1])


def test_ports_are_network_byte_order() -> None:
    """Service and destination ports travel big-endian (__be16) whatever the host order."""
    real = RealServer(RealKey(ipaddress.ip_address("10.0.0.1"), 0x1F90))
    msg = codec.encode_dest(FAMILY, 1, codec.IPVS_CMD_NEW_DEST, ServiceKey(Protocol.TCP, V4, 0x0102), real)
    nests = request_nests(msg)
    assert nests[codec.IPVS_CMD_ATTR_SERVICE][codec.IPVS_SVC_ATTR_PORT][:2] == b"\x01\x02"
    assert nests[codec.IPVS_CMD_ATTR_DEST][codec.IPVS_DEST_ATTR_PORT][:2] == b"\x1f\x90"


def test_tunnel_port_is_network_byte_order() -> None:
    """The tunnel port (GUE) is __be16 too; pyroute2 gets this wrong."""
    real = RealServer(RealKey(ipaddress.ip_address("10.0.0.1"), 80), forward=Forward.TUNNEL)
    msg = codec.encode_dest(FAMILY, 1, codec.IPVS_CMD_NEW_DEST, TCP80, real, tun_type=1, tun_port=6080)
    dest = request_nests(msg)[codec.IPVS_CMD_ATTR_DEST]
    assert dest[codec.IPVS_DEST_ATTR_TUN_PORT][:2] == struct.pack("!H", 6080)
    assert dest[codec.IPVS_DEST_ATTR_TUN_TYPE][:1] == b"\x01"


def test_ipv4_netmask_is_network_byte_order() -> None:
    """An IPv4 persistence netmask travels as the mask's bytes in network order (__be32)."""
    server = VirtualServer(TCP80, "rr", flags=int(ServiceFlag.PERSISTENT), timeout=60, netmask=0xFFFFFF00)
    svc = request_nests(codec.encode_service(FAMILY, 1, 1, server))[codec.IPVS_CMD_ATTR_SERVICE]
    assert svc[codec.IPVS_SVC_ATTR_NETMASK] == b"\xff\xff\xff\x00"


def test_ipv6_and_fwmark_services_always_carry_a_netmask() -> None:
    """IPv6 gets prefix length 128 (host order) and fwmark services a full mask, or the kernel says EINVAL."""
    v6 = request_nests(codec.encode_service(FAMILY, 1, 1, VirtualServer(UDP53_V6)))[codec.IPVS_CMD_ATTR_SERVICE]
    assert struct.unpack("=I", v6[codec.IPVS_SVC_ATTR_NETMASK]) == (128,)
    fwm = request_nests(codec.encode_service(FAMILY, 1, 1, VirtualServer(FWM_V4)))[codec.IPVS_CMD_ATTR_SERVICE]
    assert fwm[codec.IPVS_SVC_ATTR_NETMASK] == b"\xff\xff\xff\xff"
    assert struct.unpack("=I", fwm[codec.IPVS_SVC_ATTR_FWMARK]) == (4242,)
    assert codec.IPVS_SVC_ATTR_ADDR not in fwm


def test_addresses_use_the_16_byte_union() -> None:
    """Addresses travel in the 16-byte nf_inet_addr union: IPv4 in the first four bytes, zeros after."""
    svc = request_nests(codec.encode_service(FAMILY, 1, 1, VirtualServer(TCP80)))[codec.IPVS_CMD_ATTR_SERVICE]
    assert svc[codec.IPVS_SVC_ATTR_ADDR] == V4.packed + bytes(12)
    assert struct.unpack("=H", svc[codec.IPVS_SVC_ATTR_AF][:2]) == (socket.AF_INET,)
    v6 = request_nests(codec.encode_service(FAMILY, 1, 1, VirtualServer(UDP53_V6)))[codec.IPVS_CMD_ATTR_SERVICE]
    assert v6[codec.IPVS_SVC_ATTR_ADDR] == V6.packed


def test_overlong_scheduler_name_has_no_nul() -> None:
    """A 16-character scheduler name goes without its NUL, so the kernel rejects it (EINVAL), never truncates."""
    svc = request_nests(codec.encode_service(FAMILY, 1, 1, VirtualServer(TCP80, "x" * 16)))
    assert b"\0" not in svc[codec.IPVS_CMD_ATTR_SERVICE][codec.IPVS_SVC_ATTR_SCHED_NAME]


@pytest.mark.parametrize(
    ("service", "real"),
    [
        (TCP80, RealServer(RealKey(ipaddress.ip_address("10.1.2.3"), 8080))),
        (TCP80, RealServer(RealKey(ipaddress.ip_address("10.1.2.3"), 8080), 0, Forward.ROUTE, 100, 10)),
        (UDP53_V6, RealServer(RealKey(ipaddress.ip_address("2001:db8::99"), 5353), 7, Forward.MASQ)),
        (FWM_V4, RealServer(RealKey(ipaddress.ip_address("10.9.9.9"), 0), 3, Forward.TUNNEL)),
    ],
    ids=str,
)
def test_dest_roundtrip(service: ServiceKey, real: RealServer) -> None:
    """A destination encoded as NEW_DEST and read back as a reply is the same real server."""
    assert dest_roundtrip(service, real) == RealServerState(real)


def test_dest_reply_with_conns_and_stats64() -> None:
    """A kernel-shaped destination reply gives weight, forwarding, conns and 64-bit stats (above 2**32)."""
    stats = Stats(conns=5_000_000_000, inpkts=2, outpkts=3, inbytes=2**40, outbytes=5, cps=6, inpps=7,
                  outpps=8, inbps=9, outbps=10)  # fmt: skip
    state = RealServerState(
        RealServer(RealKey(ipaddress.ip_address("10.0.0.7"), 443), 5, Forward.ROUTE, 10, 2),
        active_conns=11, inactive_conns=12, persistent_conns=13, stats=stats,
    )  # fmt: skip
    reply = codec.kernel_dest_reply(FAMILY, 1, state)
    assert codec.decode_dest(reply, 0, len(reply)) == state


def test_dest_decode_fast_path_matches_slow_path() -> None:
    """The second destination of the same shape (compiled layout) decodes exactly like the first (walked)."""
    states = [
        RealServerState(RealServer(RealKey(ipaddress.ip_address(f"10.0.0.{i}"), 80 + i), i), active_conns=i)
        for i in range(1, 5)
    ]
    replies = [codec.kernel_dest_reply(FAMILY, 1, s) for s in states]
    assert [codec.decode_dest(r, 0, len(r)) for r in replies] == states


def test_service_reply_with_stats64_and_hashed_flag() -> None:
    """A kernel-shaped service reply decodes with its 64-bit stats; the kernel's HASHED flag is dropped."""
    server = VirtualServer(TCP80, "sh", flags=int(ServiceFlag.PERSISTENT | ServiceFlag.SCHED2), timeout=10800)
    stats = Stats(conns=1, inbytes=2**33, outbps=99)
    reply = codec.kernel_service_reply(FAMILY, 1, server, stats, flags_extra=int(ServiceFlag.HASHED))
    assert codec.decode_service(reply, 0, len(reply)) == (server, stats)


def test_service_reply_shapes_with_different_scheduler_lengths() -> None:
    """Services whose scheduler names differ in length still decode correctly after a layout is cached."""
    servers = [VirtualServer(TCP80, s) for s in ("rr", "wlc", "lblcr", "rr", "wlc", "mh")]
    for server in servers:
        reply = codec.kernel_service_reply(FAMILY, 1, server)
        assert codec.decode_service(reply, 0, len(reply))[0] == server


def test_fwmark_service_reply() -> None:
    """A fwmark service reply (no protocol, address or port) decodes to a fwmark key of its family."""
    server = VirtualServer(FWM_V6, "rr")
    reply = codec.kernel_service_reply(FAMILY, 1, server)
    decoded, _ = codec.decode_service(reply, 0, len(reply))
    assert decoded == server
    assert decoded.key.address.version == 6


def test_unsupported_protocol_is_a_decode_error() -> None:
    """A foreign service with a protocol we cannot express (ESP) raises DecodeError, not a crash."""
    reply = bytearray(codec.kernel_service_reply(FAMILY, 1, VirtualServer(TCP80)))
    # PROTOCOL is the second attribute of the nest: nlmsg(16)+genl(4)+nest(4)+AF(8)+hdr(4).
    struct.pack_into("=H", reply, 36, 50)
    with pytest.raises(codec.DecodeError):
        codec.decode_service(bytes(reply), 0, len(reply))


@pytest.mark.parametrize(
    ("op", "cmd"),
    [
        (AddService(VirtualServer(TCP80)), codec.IPVS_CMD_NEW_SERVICE),
        (EditService(VirtualServer(TCP80)), codec.IPVS_CMD_SET_SERVICE),
        (DeleteService(TCP80), codec.IPVS_CMD_DEL_SERVICE),
        (AddReal(TCP80, RealServer(RealKey(V4, 1))), codec.IPVS_CMD_NEW_DEST),
        (EditReal(TCP80, RealServer(RealKey(V4, 1))), codec.IPVS_CMD_SET_DEST),
        (DeleteReal(FWM_V4, RealKey(V4, 1)), codec.IPVS_CMD_DEL_DEST),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, int) else str(v),
)
def test_operation_maps_to_command(op: object, cmd: int) -> None:
    """Each model operation becomes its own IPVS command (update is never mapped to delete)."""
    msg = codec.encode_operation(FAMILY, 5, op)  # type: ignore[arg-type]
    assert msg[16] == cmd
    assert struct.unpack_from("=I", msg)[0] == len(msg)
    assert struct.unpack_from("=HHI", msg, 4) == (FAMILY, codec.NLM_F_REQUEST | codec.NLM_F_ACK, 5)
    quiet = codec.encode_operation(FAMILY, 5, op, ack=False)  # type: ignore[arg-type]
    assert struct.unpack_from("=H", quiet, 6) == (codec.NLM_F_REQUEST,)  # the kernel answers only a failure
    assert quiet[:6] + quiet[8:] == msg[:6] + msg[8:]  # nothing else differs


def test_delete_sends_only_keys() -> None:
    """DEL_SERVICE carries only the service key; DEL_DEST the service key and the destination's address/port/family."""
    svc = request_nests(codec.encode_operation(FAMILY, 1, DeleteService(TCP80)))
    assert set(svc) == {codec.IPVS_CMD_ATTR_SERVICE}
    assert set(svc[codec.IPVS_CMD_ATTR_SERVICE]) == {1, 2, 3, 4}
    dest = request_nests(codec.encode_operation(FAMILY, 1, DeleteReal(TCP80, RealKey(V4, 9))))
    assert set(dest[codec.IPVS_CMD_ATTR_DEST]) == {
        codec.IPVS_DEST_ATTR_ADDR, codec.IPVS_DEST_ATTR_PORT, codec.IPVS_DEST_ATTR_ADDR_FAMILY,
    }  # fmt: skip


def test_dump_requests() -> None:
    """Dumps set NLM_F_DUMP; a destination dump names its service."""
    dump = codec.encode_dump_services(FAMILY, 3)
    assert struct.unpack_from("=IHH", dump) == (20, FAMILY, codec.NLM_F_REQUEST | codec.NLM_F_DUMP)
    dests = codec.encode_dump_dests(FAMILY, 4, TCP80)
    assert struct.unpack_from("=H", dests, 6)[0] == codec.NLM_F_REQUEST | codec.NLM_F_DUMP
    assert dests[16] == codec.IPVS_CMD_GET_DEST
    assert codec.IPVS_CMD_ATTR_SERVICE in request_nests(dests)


def test_iter_messages_and_errors() -> None:
    """A datagram of several acks splits into messages whose errno reads positive (0 = success)."""
    acks = b"".join(struct.pack("=IHHIIi", 20, codec.NLMSG_ERROR, 0, seq, 0, -err) for seq, err in ((1, 0), (2, 17)))
    msgs = list(codec.iter_messages(acks))
    assert [(m[0], m[2]) for m in msgs] == [(codec.NLMSG_ERROR, 1), (codec.NLMSG_ERROR, 2)]
    assert [codec.decode_error(acks, m[3]) for m in msgs] == [0, 17]


def test_family_lookup_roundtrip() -> None:
    """CTRL_CMD_GETFAMILY names IPVS; a reply's CTRL_ATTR_FAMILY_ID is found."""
    req = codec.encode_get_family(7)
    assert b"IPVS\0" in req and struct.unpack_from("=H", req, 4)[0] == codec.GENL_ID_CTRL
    reply = (
        struct.pack("=IHHII", 28, codec.GENL_ID_CTRL, 0, 7, 0) + bytes([1, 2, 0, 0]) + struct.pack("=HHH2x", 6, 1, 33)
    )
    assert codec.decode_family_id(reply, 0, len(reply)) == 33


def test_dest_reply_without_optional_attributes() -> None:
    """A sparse destination reply (old kernel: no family, tunnel or stats attributes) decodes with zero defaults."""
    body = codec.encode_attr(codec.IPVS_DEST_ATTR_ADDR, V4.packed) + codec.encode_attr(
        codec.IPVS_DEST_ATTR_PORT, b"\x00\x50"
    )
    body += codec.encode_attr(codec.IPVS_DEST_ATTR_WEIGHT, struct.pack("=I", 2))
    reply = codec._genl_message(FAMILY, codec.IPVS_CMD_NEW_DEST, 1, codec.encode_attr(codec.IPVS_CMD_ATTR_DEST, body))
    assert codec.decode_dest(reply, 0, len(reply)) == RealServerState(RealServer(RealKey(V4, 80), weight=2))


def test_empty_service_nest_is_a_decode_error() -> None:
    """A service reply with an empty nest raises DecodeError rather than crashing the layout compiler."""
    reply = codec._genl_message(
        FAMILY, codec.IPVS_CMD_NEW_SERVICE, 1, codec.encode_attr(codec.IPVS_CMD_ATTR_SERVICE, b"")
    )
    with pytest.raises(codec.DecodeError):
        codec.decode_service(reply, 0, len(reply))


def test_fast_constructors_build_the_same_values_as_the_dataclass() -> None:
    """The slot-setting constructors the decoder uses give values equal (and hashing equal) to the real ones."""
    key = RealKey(ipaddress.ip_address("10.0.0.7"), 443)
    fast_key = codec._new_real_key(ipaddress.ip_address("10.0.0.7"), 443)
    assert codec._new_real_key is not RealKey  # the fast path is really in use
    assert fast_key == key and hash(fast_key) == hash(key) and type(fast_key) is RealKey
    server = RealServer(key, 5, Forward.ROUTE, 10, 2)
    assert codec._new_real_server(key, 5, Forward.ROUTE, 10, 2) == server
    stats = Stats(*range(10))
    assert codec._new_stats(*range(10)) == stats
    assert codec._new_real_state(server, 1, 2, 3, stats) == RealServerState(server, 1, 2, 3, stats)
    with pytest.raises(TypeError):
        codec._new_real_key(ipaddress.ip_address("10.0.0.7"))  # every field is required
