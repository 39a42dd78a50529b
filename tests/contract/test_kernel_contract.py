"""The Kernel contract, run against MemoryKernel and (with -m kernel, in the VM) NetlinkKernel.

Whatever passes here for both kernels is what the rest of ipvsctl may rely on:
same values read back, same errno, same batch semantics. On the real kernel,
``ipvsadm -Sn`` cross-checks that what we wrote is what ipvsadm reads.
"""

from __future__ import annotations

import errno
import ipaddress
import time
from typing import TYPE_CHECKING

import pytest

from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import (
    Forward,
    Protocol,
    RealKey,
    RealServer,
    ServiceFlag,
    ServiceKey,
    VirtualServer,
)
from ipvsctl.model.ops import (
    AddReal,
    AddService,
    BindAddress,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    UnbindAddress,
)

if TYPE_CHECKING:
    from tests.contract.conftest import Harness

ip = ipaddress.ip_address

WEB = ServiceKey(Protocol.TCP, ip("198.51.100.1"), 80)
DNS6 = ServiceKey(Protocol.UDP, ip("2001:db8::53"), 53)
WEB6 = ServiceKey(Protocol.TCP, ip("2001:db8::1"), 443)
SCTP = ServiceKey(Protocol.SCTP, ip("198.51.100.3"), 3868)
FWM4 = ServiceKey(None, ipaddress.IPv4Address(0), 0, fwmark=0x1F5C0001)
FWM6 = ServiceKey(None, ipaddress.IPv6Address(0), 0, fwmark=0x1F5C0002)
MISSING = ServiceKey(Protocol.TCP, ip("198.51.100.99"), 9)
DOCV4 = ipaddress.ip_network("198.51.100.0/24")


def real(addr: str, port: int = 8080, weight: int = 1, forward: Forward = Forward.MASQ, **kw: int) -> RealServer:
    return RealServer(RealKey(ip(addr), port), weight, forward, **kw)


def vname(key: ServiceKey) -> str:
    """How ipvsadm -Sn names a virtual server."""
    if key.fwmark:
        return f"-f {key.fwmark}" + (" -6" if key.address.version == 6 else "")
    flag = {Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service"}[key.protocol]  # type: ignore[index]
    host = f"[{key.address}]" if key.address.version == 6 else str(key.address)
    return f"{flag} {host}:{key.port}"


def ipvsadm_service(h: Harness, key: ServiceKey) -> str | None:
    lines = h.ipvsadm_save()
    if lines is None:
        return None
    found = [line for line in lines if line.startswith(f"-A {vname(key)} ")]
    assert len(found) == 1, (vname(key), lines)
    return found[0] + " "


def ipvsadm_real(h: Harness, key: ServiceKey, r: RealKey) -> str | None:
    lines = h.ipvsadm_save()
    if lines is None:
        return None
    host = f"[{r.address}]" if r.address.version == 6 else str(r.address)
    found = [line for line in lines if line.startswith(f"-a {vname(key)} -r {host}:{r.port} ")]
    assert len(found) == 1, (vname(key), host, lines)
    return found[0] + " "


FWD_FLAG = {Forward.MASQ: "-m", Forward.ROUTE: "-g", Forward.TUNNEL: "-i"}


# --- adding, reading back ---


@pytest.mark.parametrize(
    ("server", "reals"),
    [
        (VirtualServer(WEB, "lc"), [real("203.0.113.1"), real("203.0.113.2", weight=3)]),
        (VirtualServer(WEB6, "rr"), [real("2001:db8:1::1", 8443), real("2001:db8:1::2", 8443, weight=2)]),
        (VirtualServer(DNS6, "wlc"), [real("2001:db8:1::53", 5353)]),
        (VirtualServer(SCTP, "rr"), [real("203.0.113.3", 3868)]),
        (VirtualServer(FWM4, "rr"), [real("203.0.113.4", 0)]),
        (VirtualServer(FWM6, "rr"), [real("2001:db8:1::4", 0)]),
    ],
    ids=lambda v: str(v.key) if isinstance(v, VirtualServer) else "",
)
def test_add_get_dump(harness: Harness, server: VirtualServer, reals: list[RealServer]) -> None:
    """A service with real servers reads back (get and dump) exactly as added, newest real server first."""
    harness.ok([AddService(server), *(AddReal(server.key, r) for r in reals)])
    got = harness.kernel.get(server.key)
    assert got is not None
    assert got.server == server
    assert [r.server for r in got.real_servers] == reals[::-1]
    dumped = {s.server.key: s for s in harness.kernel.dump()}
    assert dumped[server.key].server == server
    assert [r.server for r in dumped[server.key].real_servers] == reals[::-1]
    line = ipvsadm_service(harness, server.key)
    if line is not None:
        assert f" -s {server.scheduler} " in line
        for r in reals:
            rline = ipvsadm_real(harness, server.key, r.key)
            assert rline is not None and f" -w {r.weight} " in rline and f" {FWD_FLAG[r.forward]} " in rline


def test_real_servers_digest(harness: Harness) -> None:
    """real_servers() reads what get() reads, with a digest that stays while nothing changes and
    moves with a weight; given that digest it returns None instead of the real servers. A
    virtual server that does not exist has none."""
    server = VirtualServer(WEB, "rr")
    harness.ok([AddService(server), AddReal(WEB, real("203.0.113.1")), AddReal(WEB, real("203.0.113.2", weight=3))])
    digest, reals = harness.kernel.real_servers(server)
    got = harness.kernel.get(WEB)
    assert reals is not None and got is not None
    assert (
        [r.server for r in reals]
        == [r.server for r in got.real_servers]
        == [real("203.0.113.2", weight=3), real("203.0.113.1")]
    )
    assert harness.kernel.real_servers(server, digest) == (digest, None)
    harness.ok([EditReal(WEB, real("203.0.113.2", weight=5))])
    moved, reals = harness.kernel.real_servers(server, digest)
    assert moved != digest and reals is not None and [r.server.weight for r in reals] == [5, 1]
    assert harness.kernel.real_servers(VirtualServer(MISSING))[1] == ()


def test_summaries_move_with_what_ipvsadm_shows_and_not_with_thresholds(harness: Harness) -> None:
    """summaries() has one number per virtual server but firewall marks; it stays while nothing
    changes, moves with a real server's weight, forwarding method, an added or deleted real
    server and the scheduler, and (what /proc/net/ip_vs does not show) not with thresholds."""
    web, dns6, sctp = VirtualServer(WEB, "rr"), VirtualServer(DNS6, "wlc"), VirtualServer(SCTP, "sh")
    harness.ok([
        AddService(web), AddService(dns6), AddService(sctp), AddService(VirtualServer(FWM4)),
        AddReal(WEB, real("203.0.113.1")), AddReal(WEB, real("203.0.113.2")), AddReal(DNS6, real("2001:db8::2:1", 53)),
    ])  # fmt: skip
    first = harness.kernel.summaries()
    assert first is not None
    assert {WEB, DNS6, SCTP} <= set(first) and FWM4 not in first
    assert harness.kernel.summaries() == first

    def moved(*ops: object) -> set[ServiceKey]:
        before = harness.kernel.summaries()
        harness.ok(list(ops))  # type: ignore[arg-type]
        after = harness.kernel.summaries()
        assert before is not None and after is not None
        return {key for key in (WEB, DNS6, SCTP) if before[key] != after[key]}

    assert moved(EditReal(WEB, real("203.0.113.1", weight=4))) == {WEB}
    assert moved(EditReal(WEB, real("203.0.113.1", weight=4, forward=Forward.ROUTE))) == {WEB}
    assert moved(AddReal(SCTP, real("203.0.113.3", 3868))) == {SCTP}
    assert moved(DeleteReal(DNS6, RealKey(ip("2001:db8::2:1"), 53))) == {DNS6}
    assert moved(EditService(VirtualServer(WEB, "wrr"))) == {WEB}
    assert moved(EditReal(WEB, real("203.0.113.2", upper_threshold=9, lower_threshold=2))) == set()


def test_get_missing_service_is_none(harness: Harness) -> None:
    """get() of a service that does not exist is None, not an error."""
    assert harness.kernel.get(MISSING) is None


def test_new_service_has_zero_counters(harness: Harness) -> None:
    """A fresh real server has no active, inactive or persistent connections."""
    harness.ok([AddService(VirtualServer(WEB)), AddReal(WEB, real("203.0.113.1"))])
    got = harness.kernel.get(WEB)
    assert got is not None
    (r,) = got.real_servers
    assert (r.active_conns, r.inactive_conns, r.persistent_conns) == (0, 0, 0)
    assert r.stats.conns == 0


# --- editing in place ---


def test_edit_scheduler_keeps_forwarding_and_weights(harness: Harness) -> None:
    """Editing lc to sh changes only the scheduler: forwarding methods and weights stay (pyroute2's bug is absent)."""
    reals = [real("203.0.113.1", forward=Forward.ROUTE, weight=3), real("203.0.113.2", weight=5)]
    harness.ok([AddService(VirtualServer(WEB, "lc")), *(AddReal(WEB, r) for r in reals)])
    edited = VirtualServer(WEB, "sh", flags=int(ServiceFlag.SCHED1))
    harness.ok([EditService(edited)])
    got = harness.kernel.get(WEB)
    assert got is not None
    assert got.server == edited
    assert [r.server for r in got.real_servers] == reals[::-1]
    line = ipvsadm_service(harness, WEB)
    if line is not None:
        assert " -s sh " in line and "sh-fallback" in line
        routed = ipvsadm_real(harness, WEB, reals[0].key)
        assert routed is not None and " -g " in routed and " -w 3 " in routed


def test_persistence_flag_and_timeout(harness: Harness) -> None:
    """Persistence (ClientIP affinity) sets the flag and timeout; editing it away clears both."""
    sticky = VirtualServer(WEB, "rr", flags=int(ServiceFlag.PERSISTENT), timeout=10800)
    harness.ok([AddService(sticky)])
    got = harness.kernel.get(WEB)
    assert got is not None and got.server == sticky
    line = ipvsadm_service(harness, WEB)
    if line is not None:
        assert " -p 10800 " in line
    plain = VirtualServer(WEB, "rr")
    harness.ok([EditService(plain)])
    got = harness.kernel.get(WEB)
    assert got is not None and got.server == plain
    line = ipvsadm_service(harness, WEB)
    if line is not None:
        assert " -p " not in line


def test_persistence_netmask_ipv4_and_ipv6(harness: Harness) -> None:
    """A persistence netmask reads back as set: an IPv4 mask, an IPv6 prefix length."""
    v4 = VirtualServer(WEB, "rr", flags=int(ServiceFlag.PERSISTENT), timeout=60, netmask=0xFFFFFF00)
    v6 = VirtualServer(WEB6, "rr", flags=int(ServiceFlag.PERSISTENT), timeout=60, netmask=64)
    harness.ok([AddService(v4), AddService(v6)])
    assert (harness.kernel.get(WEB) or pytest.fail()).server == v4
    assert (harness.kernel.get(WEB6) or pytest.fail()).server == v6
    line = ipvsadm_service(harness, WEB)
    if line is not None:
        assert " -M 255.255.255.0 " in line


def test_edit_weight_in_place(harness: Harness) -> None:
    """Setting a weight to 0 (drain) edits the real server in place: same position, same forwarding."""
    reals = [real("203.0.113.1"), real("203.0.113.2"), real("203.0.113.3")]
    harness.ok([AddService(VirtualServer(WEB)), *(AddReal(WEB, r) for r in reals)])
    drained = real("203.0.113.2", weight=0)
    harness.ok([EditReal(WEB, drained)])
    got = harness.kernel.get(WEB)
    assert got is not None
    assert [r.server for r in got.real_servers] == [reals[2], drained, reals[0]]
    rline = ipvsadm_real(harness, WEB, drained.key)
    if rline is not None:
        assert " -w 0 " in rline


def test_thresholds_read_back(harness: Harness) -> None:
    """Upper and lower connection thresholds are stored and read back."""
    r = real("203.0.113.1", upper_threshold=100, lower_threshold=10)
    harness.ok([AddService(VirtualServer(WEB)), AddReal(WEB, r)])
    got = harness.kernel.get(WEB)
    assert got is not None and got.real_servers[0].server == r


def test_delete_real_and_service(harness: Harness) -> None:
    """Deleting a real server leaves the others; deleting the service removes it from the dump."""
    harness.ok([AddService(VirtualServer(WEB)), AddReal(WEB, real("203.0.113.1")), AddReal(WEB, real("203.0.113.2"))])
    harness.ok([DeleteReal(WEB, RealKey(ip("203.0.113.1"), 8080))])
    got = harness.kernel.get(WEB)
    assert got is not None and [r.server.key.address for r in got.real_servers] == [ip("203.0.113.2")]
    harness.ok([DeleteService(WEB)])
    assert harness.kernel.get(WEB) is None
    assert WEB not in {s.server.key for s in harness.kernel.dump()}


# --- errno ---

SETUP = [AddService(VirtualServer(WEB)), AddReal(WEB, real("203.0.113.1"))]


@pytest.mark.parametrize(
    ("op", "code"),
    [
        (AddService(VirtualServer(WEB)), errno.EEXIST),
        (AddReal(WEB, real("203.0.113.1")), errno.EEXIST),
        (EditService(VirtualServer(MISSING)), errno.ESRCH),
        (DeleteService(MISSING), errno.ESRCH),
        (AddReal(MISSING, real("203.0.113.1")), errno.ESRCH),
        (EditReal(WEB, real("203.0.113.9")), errno.ENOENT),
        (DeleteReal(WEB, RealKey(ip("203.0.113.9"), 8080)), errno.ENOENT),
        (AddService(VirtualServer(SCTP, "nosuchsched")), errno.ENOENT),
        (EditService(VirtualServer(WEB, "nosuchsched")), errno.ENOENT),
        (AddService(VirtualServer(SCTP, "x" * 16)), errno.EINVAL),
        (AddReal(WEB, real("203.0.113.2", upper_threshold=5, lower_threshold=10)), errno.ERANGE),
        (AddReal(WEB, real("2001:db8:1::1")), errno.EINVAL),
    ],
    ids=[
        "dup-service", "dup-real", "edit-missing-service", "delete-missing-service", "real-on-missing-service",
        "edit-missing-real", "delete-missing-real", "unknown-scheduler-add", "unknown-scheduler-edit",
        "scheduler-name-too-long", "lower-above-upper-threshold", "ipv6-real-masq-in-ipv4-service",
    ],
)  # fmt: skip
def test_errno(harness: Harness, op: object, code: int) -> None:
    """Each refusal carries the kernel's errno, and the refused operation changes nothing."""
    harness.ok(SETUP)
    before = harness.kernel.dump()
    (result,) = harness.execute([op])  # type: ignore[list-item]
    assert result is not None and result.errno == code, result
    assert result.op == op
    assert harness.kernel.dump() == before


def test_batch_failure_in_the_middle(harness: Harness) -> None:
    """In one batch a failing operation gets its error and the operations around it still run."""
    other = ServiceKey(Protocol.TCP, ip("198.51.100.2"), 80)
    ops = [
        AddService(VirtualServer(WEB)),
        AddReal(WEB, real("203.0.113.1")),
        AddService(VirtualServer(WEB)),  # duplicate
        AddReal(MISSING, real("203.0.113.1")),  # no such service
        AddService(VirtualServer(other, "lc")),
        AddReal(other, real("203.0.113.2")),
    ]
    results = harness.execute(ops)
    assert [r.errno if r else None for r in results] == [None, None, errno.EEXIST, errno.ESRCH, None, None]
    keys = {s.server.key for s in harness.kernel.dump()}
    assert {WEB, other} <= keys and MISSING not in keys


def test_failures_at_the_edges_of_batches(harness: Harness) -> None:
    """Over several netlink datagrams (256 requests each, only the last acked), a failure is reported
    on exactly its own operation wherever it sits: first, last of a datagram, first of the next,
    the very last operation; everything else runs."""
    other = ServiceKey(Protocol.TCP, ip("198.51.100.3"), 80)
    ops: list = [AddService(VirtualServer(other)), AddService(VirtualServer(WEB))]
    ops += [AddReal(WEB, real(f"203.0.113.{1 + n % 250}", 8000 + n // 250)) for n in range(600)]
    absent = real("198.51.100.99")
    bad = {
        2: (AddService(VirtualServer(WEB)), errno.EEXIST),
        255: (AddReal(MISSING, real("203.0.113.1")), errno.ESRCH),
        256: (EditReal(WEB, absent), errno.ENOENT),
        511: (DeleteService(MISSING), errno.ESRCH),
        601: (DeleteReal(WEB, absent.key), errno.ENOENT),
    }
    for i, (op, _code) in bad.items():
        ops[i] = op
    results = harness.execute(ops)
    assert {i: r.errno for i, r in enumerate(results) if r is not None} == {i: code for i, (_op, code) in bad.items()}
    web = harness.kernel.get(WEB)
    assert web is not None and len(web.real_servers) == 600 - len(bad)
    assert harness.kernel.get(other) is not None


def test_operations_run_in_order(harness: Harness) -> None:
    """Operations apply in the order given: add, edit, delete, re-add within one call ends with the re-added value."""
    final = VirtualServer(WEB, "wrr")
    results = harness.execute(
        [
            AddService(VirtualServer(WEB, "rr")),
            EditService(VirtualServer(WEB, "lc")),
            DeleteService(WEB),
            AddService(final),
            AddReal(WEB, real("203.0.113.1", weight=4)),
        ]
    )
    assert results == [None] * 5
    got = harness.kernel.get(WEB)
    assert got is not None and got.server == final and got.real_servers[0].server.weight == 4


# --- addresses ---


def test_bind_unbind_addresses(harness: Harness) -> None:
    """Bound addresses sit on the dummy interface, not among node addresses; rebind EEXIST, bad unbind EADDRNOTAVAIL."""
    v4, v6 = ip("198.51.100.7"), ip("2001:db8::7")
    before_nodes = set(harness.kernel.node_addresses())
    harness.ok([BindAddress(v4), BindAddress(v6)])
    assert {v4, v6} <= harness.kernel.bound_addresses()
    nodes = set(harness.kernel.node_addresses())
    assert not ({v4, v6} & nodes)
    assert nodes == before_nodes - {v4, v6}
    (again,) = harness.execute([BindAddress(v4)])
    assert again is not None and again.errno == errno.EEXIST
    harness.ok([UnbindAddress(v4), UnbindAddress(v6)])
    assert not ({v4, v6} & harness.kernel.bound_addresses())
    (stray,) = harness.execute([UnbindAddress(v4)])
    assert stray is not None and stray.errno == errno.EADDRNOTAVAIL


def test_node_addresses_exclude_loopback_and_link_local(harness: Harness) -> None:
    """Node addresses never include loopback or IPv6 link-local addresses."""
    for addr in harness.kernel.node_addresses():
        assert not addr.is_loopback
        assert not (addr.version == 6 and addr.is_link_local)


def test_address_and_service_ops_interleave(harness: Harness) -> None:
    """A call mixing address and IPVS operations runs them all, one result each, in order."""
    v4 = ip("198.51.100.8")
    results = harness.execute([BindAddress(v4), AddService(VirtualServer(WEB)), BindAddress(v4), DeleteService(WEB)])
    assert [r.errno if r else None for r in results] == [None, None, errno.EEXIST, None]
    assert v4 in harness.kernel.bound_addresses()
    harness.ok([UnbindAddress(v4)])


def test_many_binds_beside_many_virtual_servers(harness: Harness) -> None:
    """Enough of both kinds that the real kernel runs the binds beside the IPVS requests (netlink.OVERLAP):
    each failure still lands on its own operation, in either kind, and everything else takes effect."""
    vips = [ip(f"198.51.100.{n}") for n in range(100, 180)]
    keys = [ServiceKey(Protocol.TCP, vip, 80) for vip in vips]
    ops: list = [BindAddress(vip) for vip in vips]
    for key in keys:
        ops += [AddService(VirtualServer(key)), AddReal(key, real("203.0.113.7"))]
    ops += [UnbindAddress(ip("198.51.100.99"))]  # never bound
    bad = {
        5: (BindAddress(vips[3]), errno.EEXIST),  # bound three operations earlier
        80 + 2 * 40: (AddService(VirtualServer(keys[0])), errno.EEXIST),  # so keys[40] is never added
        80 + 2 * 40 + 1: (AddReal(keys[40], real("203.0.113.7")), errno.ESRCH),  # ... and has no real
        80 + 2 * 41 + 1: (AddReal(MISSING, real("203.0.113.7")), errno.ESRCH),
    }
    for i, (op, _code) in bad.items():
        ops[i] = op
    ops.insert(120, BindAddress(vips[7]))  # an address operation between IPVS ones: bound already
    results = harness.execute(ops)
    failed = {i: r.errno for i, r in enumerate(results) if r is not None}
    shifted = {(i if i < 120 else i + 1): code for i, (_op, code) in bad.items()}
    assert failed == {**shifted, 120: errno.EEXIST, len(ops) - 1: errno.EADDRNOTAVAIL}
    assert set(vips) - {vips[5]} <= harness.kernel.bound_addresses()
    present = {s.server.key: len(s.real_servers) for s in harness.kernel.dump()}
    assert all(present.get(key) == 1 for key in keys if key not in (keys[40], keys[41]))
    assert keys[40] not in present and present[keys[41]] == 0
    harness.ok([UnbindAddress(vip) for vip in vips if vip != vips[5]])
    assert not (set(vips) & harness.kernel.bound_addresses())


# --- sysctls ---


def test_set_sysctls_reports_only_changes(harness: Harness) -> None:
    """Writing a sysctl reports it once; writing the same value again, or a missing sysctl, reports nothing."""
    first = harness.kernel.set_sysctls({"net.ipv4.vs.conntrack": "1"})
    assert first in ({}, {"net.ipv4.vs.conntrack": "1"})
    assert harness.kernel.set_sysctls({"net.ipv4.vs.conntrack": "1"}) == {}
    if harness.real:
        assert harness.kernel.set_sysctls({"net.ipv4.vs.no_such_sysctl": "1"}) == {}
        with open("/proc/sys/net/ipv4/vs/conntrack") as f:
            assert f.read().strip() == "1"


# --- conntrack ---


def test_flush_conntrack_without_entries_deletes_nothing(harness: Harness) -> None:
    """Flushing UDP virtual servers nobody sent to (IPv4, IPv6; one real server or any) deletes nothing."""
    dns4 = ServiceKey(Protocol.UDP, ip("198.51.100.4"), 53)
    harness.ok([AddService(VirtualServer(dns4)), AddReal(dns4, real("203.0.113.11")), AddService(VirtualServer(DNS6))])
    assert harness.kernel.flush_conntrack(dns4, real("203.0.113.11").key) == 0
    assert harness.kernel.flush_conntrack(dns4, None) == 0
    assert harness.kernel.flush_conntrack(DNS6, None) == 0
    assert harness.kernel.flush_conntrack(WEB, None) == 0  # TCP, and no such virtual server


# --- scale ---


def test_program_and_dump_many(harness: Harness) -> None:
    """Thousands of operations in one call all succeed and a dump returns every service and real server."""
    services = 1000 if harness.real else 200
    reals_each = 10
    ops: list = []
    for i in range(services):
        key = ServiceKey(Protocol.TCP, ip(f"198.51.100.{200 + i % 50}"), 10000 + i)
        ops.append(AddService(VirtualServer(key, "rr")))
        ops.extend(AddReal(key, real(f"203.0.113.{1 + j}", 8000 + i % 100, weight=1 + j)) for j in range(reals_each))
    start = time.perf_counter()
    results = harness.execute(ops)
    programmed = time.perf_counter()
    dump = harness.kernel.dump()
    dumped = time.perf_counter()
    print(
        f"\n[{harness.kind}] {services}x{reals_each}: program {programmed - start:.2f}s "
        f"({len(ops)} ops), dump {dumped - programmed:.2f}s"
    )
    assert [r for r in results if r is not None] == []
    ours = {s.server.key: s for s in dump if s.server.key.port >= 10000 and s.server.key.address in DOCV4}
    assert len(ours) == services
    assert sum(len(s.real_servers) for s in ours.values()) == services * reals_each
    some = ours[ServiceKey(Protocol.TCP, ip("198.51.100.207"), 10007)]
    assert [r.server.weight for r in some.real_servers] == list(range(reals_each, 0, -1))


# --- MemoryKernel's own test hooks (not part of the Kernel contract) ---


def test_memory_fail_next_injects_errno_once() -> None:
    """fail_next makes the next matching operation fail with the given errno and no effect; later ones succeed."""
    k = MemoryKernel()
    k.fail_next(AddService, errno.ENOMEM)
    first, second = k.execute([AddService(VirtualServer(WEB)), AddService(VirtualServer(WEB))])
    assert first is not None and first.errno == errno.ENOMEM
    assert second is None
    k.fail_next(lambda op: isinstance(op, AddReal) and op.server.weight == 7, errno.EINVAL)
    results = k.execute([AddReal(WEB, real("203.0.113.1", weight=7)), AddReal(WEB, real("203.0.113.2"))])
    assert [r.errno if r else None for r in results] == [errno.EINVAL, None]


def test_memory_counts_writes_not_reads() -> None:
    """writes counts submitted operations (failed ones too); dump, get and address queries count nothing."""
    k = MemoryKernel()
    k.dump(), k.get(WEB), k.bound_addresses(), k.node_addresses()
    assert k.writes == 0
    k.execute([AddService(VirtualServer(WEB)), AddService(VirtualServer(WEB))])
    assert k.writes == 2 and len(k.executed) == 2


def test_memory_set_conns_and_unknown_scheduler_set() -> None:
    """Tests can set connection counters; the scheduler set decides ENOENT (twos is absent by default)."""
    k = MemoryKernel()
    k.execute([AddService(VirtualServer(WEB)), AddReal(WEB, real("203.0.113.1"))])
    k.set_conns(WEB, RealKey(ip("203.0.113.1"), 8080), active=3, inactive=4)
    got = k.get(WEB)
    assert got is not None and (got.real_servers[0].active_conns, got.real_servers[0].inactive_conns) == (3, 4)
    (twos,) = k.execute([AddService(VirtualServer(SCTP, "twos"))])
    assert twos is not None and twos.errno == errno.ENOENT
    assert MemoryKernel(schedulers={"twos"}).execute([AddService(VirtualServer(SCTP, "twos"))]) == [None]


def test_memory_keeps_insertion_order() -> None:
    """Services come back in insertion order and real servers newest first (the kernel's order), never sorted."""
    k = MemoryKernel()
    keys = [ServiceKey(Protocol.TCP, ip("198.51.100.9"), p) for p in (90, 10, 50)]
    k.execute([AddService(VirtualServer(key)) for key in keys])
    k.execute([AddReal(keys[0], real(a)) for a in ("203.0.113.9", "203.0.113.1")])
    assert [s.server.key for s in k.dump()] == keys
    assert [r.server.key.address for r in k.dump()[0].real_servers] == [ip("203.0.113.1"), ip("203.0.113.9")]
