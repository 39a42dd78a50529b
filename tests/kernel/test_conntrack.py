"""A UDP client that keeps its source port while its backend is removed: conntrack entries, IPVS's own
connection table and ipvsctl's conntrack flush (kube-proxy's k8s #71514, #76664), on a real kernel.

The node namespace tracks connections only when some rule needs conntrack (on a Kubernetes node,
kube-proxy's or the CNI's iptables/nftables rules); the ``tracking`` fixture adds one nftables rule
that does, or IPVS would create no conntrack entries here at all (net.ipv4.vs.conntrack=1 alone
does not register the conntrack hooks).

Measured in the test VM (Debian 6.1), client 198.18.0.2 sending from one fixed port:

- With ipvsctl's sysctls (vs.conntrack=1, vs.expire_nodest_conn=1): deleting the real server makes
  IPVS expire its own connection entries to it at once (6.1's ip_vs has a work item for that,
  ip_vs_expire_nodest_conn_flush; kernels without it were not measured), and IPVS deletes the
  conntrack entry of each connection it expires. By the time `ipvsctl apply` returns, neither is
  left, and the next datagram from the same source port goes to the remaining backend, **with or
  without ipvsctl's conntrack flush**: on this kernel the client is not blackholed without the
  flush (test_without_flush_...), and the flush found nothing left to delete (0 entries, IPv4 and
  IPv6).
- With vs.expire_nodest_conn=0: IPVS keeps its connection entry to the removed backend (UDP
  timeout 5 min, not refreshed by the datagrams it drops) and drops every datagram of that
  client: blackholed, whether or not the conntrack entry is flushed. Here the conntrack entry
  outlives the real server, and ipvsctl's flush is what deletes it (test_flush_without_...).

Every test uses its own VIP, so conntrack entries of one test never meet another's.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netns import CLIENT_NETNS, Topology, ns_run
from test_ipvsctl import Ipvsctl, service

from ipvsctl.kernel.netlink import NetlinkKernel
from ipvsctl.model.ipvs import Protocol, RealKey, ServiceKey

NFT_TABLE = "ipvsctl_test_conntrack"
NFPROTO_INET = 1  # an "inet" table: IPv4 and IPv6
NFT_CT_STATE = 0
EXPIRE_NODEST_CONN = Path("/proc/sys/net/ipv4/vs/expire_nodest_conn")


@dataclass(frozen=True)
class Family:
    name: str  # EndpointSlice addressType
    client: str
    backends: dict[str, str]


V4 = Family("IPv4", "198.18.0.2", {"be1": "203.0.113.11", "be2": "203.0.113.12"})
V6 = Family("IPv6", "2001:db8:c::2", {"be1": "2001:db8:b::11", "be2": "2001:db8:b::12"})

# Run in the client namespace: for each source port, bind it and send N datagrams one after the
# other; print "answers" and who answered each ("be1"; "be1@ADDR" if not from the VIP; "!timeout").
SEND = """
import socket, sys
vip, port, source, timeout, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
out = []
for sport in sys.argv[6:]:
    s = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((source, int(sport)))
    s.settimeout(timeout)
    for _ in range(n):
        s.sendto(b"who?\\n", (vip, port))
        try:
            data, peer = s.recvfrom(65535)
        except TimeoutError:
            out.append("!timeout")
            continue
        name = data.decode(errors="replace").strip() or "!empty"
        out.append(name if peer[0] == vip else name + "@" + peer[0])
    s.close()
print("answers", *out)
"""


def send(vip: str, family: Family, sports: list[int], n: int = 1, timeout: float = 4.0) -> list[str]:
    """n datagrams from each fixed source port (family.client:sport) to vip:53; who answered each."""
    args = [vip, "53", family.client, str(timeout), str(n), *map(str, sports)]
    out = ns_run(CLIENT_NETNS, sys.executable, "-I", "-S", "-c", SEND, *args, timeout=60 + len(sports) * n * timeout)
    words = out.split()
    assert words[:1] == ["answers"] and len(words) == 1 + n * len(sports), out
    return words[1:]


@dataclass(frozen=True)
class Flow:
    """One UDP conntrack entry as `conntrack -L` shows it."""

    source: str
    sport: int
    destination: str
    dport: int
    reply_source: str
    reply_sport: int


def flows(conntrack: str, vip: str) -> list[Flow]:
    """UDP conntrack entries whose original destination is vip:53 (filtered here, not by the tool)."""
    fam = "ipv6" if ":" in vip else "ipv4"
    out = subprocess.run([conntrack, "-L", "-p", "udp", "-f", fam], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = [w.split("=", 1) for w in line.split() if "=" in w]
        values: dict[str, list[str]] = {}
        for key, value in fields:
            values.setdefault(key, []).append(value)
        if len(values.get("src", ())) < 2 or len(values.get("sport", ())) < 2:
            continue
        flow = Flow(
            values["src"][0], int(values["sport"][0]), values["dst"][0], int(values["dport"][0]),
            values["src"][1], int(values["sport"][1]),
        )  # fmt: skip
        if ipaddress.ip_address(flow.destination) == ipaddress.ip_address(vip) and flow.dport == 53:
            found.append(flow)
    return found


def ipvs_conns(ipvsadm: str, vip: str) -> list[str]:
    """Lines of IPVS's connection table (`ipvsadm -Lnc`) for vip:53."""
    host = f"[{vip}]" if ":" in vip else vip
    out = subprocess.run([ipvsadm, "-Lnc"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"{host}:53 " in line + " "]


def _unavailable(reason: str) -> None:
    if os.environ.get("IPVSCTL_KERNEL_TESTS") == "require":
        pytest.fail(f"kernel tests required but cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def conntrack(kernel_available: None) -> str:
    """Path of the conntrack command (conntrack-tools; scripts/bootstrap installs it)."""
    candidates = (shutil.which("conntrack"), "/usr/sbin/conntrack", "/sbin/conntrack")
    path = next((p for p in candidates if p and Path(p).exists()), None)
    if path is None:
        _unavailable("needs the conntrack command (apt-get install conntrack, or scripts/bootstrap)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def tracking(topology: Topology) -> Iterator[None]:
    """Conntrack hooks active in the node namespace: one nftables table whose rule reads the conntrack
    state (as on a Kubernetes node). Removed afterwards."""
    from pyroute2 import NetlinkError
    from pyroute2.nftables.expressions import genex
    from pyroute2.nftables.main import NFTables

    def drop_table() -> None:
        try:
            nft.table("del", name=NFT_TABLE)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise

    nft = NFTables(nfgen_family=NFPROTO_INET)
    try:
        drop_table()  # left over from an interrupted run
        nft.table("add", name=NFT_TABLE)
        nft.chain("add", table=NFT_TABLE, name="track", hook="prerouting", type="filter", priority=0)
        nft.rule("add", table=NFT_TABLE, chain="track", expressions=([genex("ct", {"dreg": 1, "key": NFT_CT_STATE})],))
        yield
    finally:
        try:
            drop_table()
        finally:
            nft.close()


@pytest.fixture
def ipvsctl(tracking: None, tmp_path: Path) -> Iterator[Ipvsctl]:
    """ipvsctl with fresh state; everything it created is cleaned up after the test."""
    (tmp_path / "m").mkdir()
    tool = Ipvsctl(tmp_path / "state", tmp_path / "m")
    yield tool
    code, _, err = tool("cleanup")
    assert code == 0, err


@pytest.fixture
def flush_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ServiceKey, RealKey | None, int]]:
    """Every NetlinkKernel.flush_conntrack call of the test, with what it returned."""
    calls: list[tuple[ServiceKey, RealKey | None, int]] = []
    original = NetlinkKernel.flush_conntrack

    def recording(self: NetlinkKernel, service: ServiceKey, real: RealKey | None) -> int:
        n = original(self, service, real)
        calls.append((service, real, n))
        return n

    monkeypatch.setattr(NetlinkKernel, "flush_conntrack", recording)
    return calls


def udp_service(vip: str, family: Family, names: list[str]) -> str:
    return service("u", vip, [family.backends[n] for n in names], port=53, proto="UDP", family=family.name)


def start_flow(ipvsctl: Ipvsctl, conntrack: str, vip: str, family: Family, sport: int) -> tuple[str, str]:
    """A UDP service on vip:53 with be1 and be2, and a client flow from one source port that sticks to
    one of them; returns (the backend it uses, the other one)."""
    ipvsctl.write("u.yaml", udp_service(vip, family, ["be1", "be2"]))
    ipvsctl.apply()
    answers = send(vip, family, [sport], n=3)
    assert len(set(answers)) == 1 and answers[0] in family.backends, answers
    used = answers[0]
    (flow,) = flows(conntrack, vip)
    assert (flow.sport, flow.reply_source, flow.reply_sport) == (sport, family.backends[used], 8080), flow
    return used, "be2" if used == "be1" else "be1"


@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
def test_removed_udp_backend_leaves_no_conntrack_entry_and_client_moves(
    ipvsctl: Ipvsctl,
    conntrack: str,
    ipvsadm: str,
    flush_calls: list[tuple[ServiceKey, RealKey | None, int]],
    family: Family,
) -> None:
    """Removing the backend a fixed-port UDP client uses: after apply no conntrack entry (and no IPVS
    connection) points at it, ipvsctl asked to flush exactly it, and the same source port is answered
    by the remaining backend."""
    vip = "198.51.100.40" if family is V4 else "2001:db8:5::40"
    used, kept = start_flow(ipvsctl, conntrack, vip, family, 40040)
    ipvsctl.write("u.yaml", udp_service(vip, family, [kept]))
    ipvsctl.apply()
    key = ServiceKey(Protocol.UDP, ipaddress.ip_address(vip), 53)
    gone = RealKey(ipaddress.ip_address(family.backends[used]), 8080)
    assert [(s, r) for s, r, _ in flush_calls] == [(key, gone)]
    assert [f for f in flows(conntrack, vip) if f.reply_source == family.backends[used]] == []
    assert [c for c in ipvs_conns(ipvsadm, vip) if family.backends[used] in c] == []
    assert send(vip, family, [40040], n=3) == [kept] * 3
    (flow,) = flows(conntrack, vip)
    assert flow.reply_source == family.backends[kept]


def test_without_flush_ipvs_deletes_the_entry_itself(
    ipvsctl: Ipvsctl, conntrack: str, ipvsadm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured, not wished for: with ipvsctl's flush disabled and expire_nodest_conn=1, this kernel
    (6.1) expires IPVS's connection to the removed backend and deletes its conntrack entry by itself;
    the client is not blackholed. (If this fails on another kernel, ipvsctl's flush is what remains.)"""
    monkeypatch.setattr(NetlinkKernel, "flush_conntrack", lambda self, service, real: 0)
    vip = "198.51.100.41"
    used, kept = start_flow(ipvsctl, conntrack, vip, V4, 40041)
    ipvsctl.write("u.yaml", udp_service(vip, V4, [kept]))
    ipvsctl.apply()
    assert EXPIRE_NODEST_CONN.read_text().strip() == "1"
    assert [f for f in flows(conntrack, vip) if f.reply_source == V4.backends[used]] == []
    assert [c for c in ipvs_conns(ipvsadm, vip) if V4.backends[used] in c] == []
    assert send(vip, V4, [40041], n=3) == [kept] * 3


def test_flush_without_expire_nodest_conn_deletes_the_entry_but_ipvs_still_drops(
    ipvsctl: Ipvsctl, conntrack: str, ipvsadm: str
) -> None:
    """With expire_nodest_conn=0 IPVS keeps its connection entry to the removed backend: the conntrack
    entry is then deleted only by ipvsctl's flush, and the client stays blackholed anyway, by IPVS's
    own connection table (until that entry times out, 5 min), which is why ipvsctl sets the sysctl."""
    vip = "198.51.100.42"
    used, kept = start_flow(ipvsctl, conntrack, vip, V4, 40042)
    EXPIRE_NODEST_CONN.write_text("0\n")
    try:
        ipvsctl.write("u.yaml", udp_service(vip, V4, [kept]))
        ipvsctl.apply("--no-sysctls")
        assert [f for f in flows(conntrack, vip) if f.reply_source == V4.backends[used]] == []
        assert [c for c in ipvs_conns(ipvsadm, vip) if V4.backends[used] in c] != []
        assert send(vip, V4, [40042], n=2, timeout=2.0) == ["!timeout"] * 2
    finally:
        EXPIRE_NODEST_CONN.write_text("1\n")


@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
def test_flush_conntrack_deletes_only_what_it_is_asked_to(ipvsctl: Ipvsctl, conntrack: str, family: Family) -> None:
    """NetlinkKernel.flush_conntrack on live entries (the real servers stay): one real server's entries
    only, with the right count; then the rest (real=None); never another VIP's or a TCP service's."""
    vip = "198.51.100.43" if family is V4 else "2001:db8:5::43"
    other_vip = "198.51.100.44" if family is V4 else "2001:db8:5::44"
    ipvsctl.write("u.yaml", udp_service(vip, family, ["be1", "be2"]))
    ipvsctl.write("o.yaml", service("o", other_vip, [family.backends["be1"]], port=53, proto="UDP",
                                    family=family.name))  # fmt: skip
    ipvsctl.apply()
    assert Counter(send(vip, family, [40050, 40051, 40052, 40053])) == {"be1": 2, "be2": 2}
    assert send(other_vip, family, [40054]) == ["be1"]
    assert Counter(f.reply_source for f in flows(conntrack, vip)) == {
        family.backends["be1"]: 2, family.backends["be2"]: 2
    }  # fmt: skip
    key = ServiceKey(Protocol.UDP, ipaddress.ip_address(vip), 53)
    with NetlinkKernel() as kernel:
        be1 = RealKey(ipaddress.ip_address(family.backends["be1"]), 8080)
        assert kernel.flush_conntrack(key, RealKey(be1.address, 9999)) == 0  # the port counts too
        assert kernel.flush_conntrack(ServiceKey(Protocol.TCP, key.address, 53), None) == 0
        assert kernel.flush_conntrack(key, be1) == 2
        assert [f.reply_source for f in flows(conntrack, vip)] == [family.backends["be2"]] * 2
        assert kernel.flush_conntrack(key, None) == 2
        assert flows(conntrack, vip) == []
    assert len(flows(conntrack, other_vip)) == 1
