"""The kernel test topology works: proven with plain ipvsadm, no ipvsctl code involved.

Each test creates its virtual servers itself and deletes exactly those (never `ipvsadm -C`).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from netns import Backend, Client, Topology, run

pytestmark = pytest.mark.kernel

DUMMY = "ipvsctl-smk0"  # not ipvsctl0: that one belongs to ipvsctl
VIP4 = "198.51.100.200"
VIP6 = "2001:db8:5::200"
VS_CONNTRACK = Path("/proc/sys/net/ipv4/vs/conntrack")


@pytest.fixture(scope="module")
def vips() -> Iterator[None]:
    """VIP4 and VIP6 bound on a dummy interface of the node, removed afterwards."""
    if Path("/sys/class/net", DUMMY).exists():
        run("ip", "link", "del", DUMMY)
    run("ip", "link", "add", DUMMY, "type", "dummy")
    try:
        run("ip", "addr", "add", f"{VIP4}/32", "dev", DUMMY)
        run("ip", "addr", "add", f"{VIP6}/128", "dev", DUMMY, "nodad")
        run("ip", "link", "set", DUMMY, "up")
        yield
    finally:
        run("ip", "link", "del", DUMMY)


@contextmanager
def virtual_server(
    ipvsadm: str, proto: str, vip: str, port: int, reals: list[str], scheduler: str = "rr"
) -> Iterator[str]:
    """A masq virtual server made with ipvsadm, deleted (only it) afterwards; yields its ipvsadm name."""
    flag = {"tcp": "-t", "udp": "-u"}[proto]
    service = f"[{vip}]:{port}" if ":" in vip else f"{vip}:{port}"
    run(ipvsadm, "-A", flag, service, "-s", scheduler)
    try:
        for real in reals:
            run(ipvsadm, "-a", flag, service, "-r", real, "-m")
        yield service
    finally:
        run(ipvsadm, "-D", flag, service)


def active_connections(ipvsadm: str, service: str) -> dict[str, int]:
    """ActiveConn per real server address, from `ipvsadm -Ln -t SERVICE`."""
    out = run(ipvsadm, "-Ln", "-t", service)
    rows = re.findall(r"->\s+(\S+):\d+\s+Masq\s+\d+\s+(\d+)\s+\d+", out)
    return {address.strip("[]"): int(active) for address, active in rows}


def assert_round_robin(answers: list[str], names: set[str], n: int) -> None:
    assert len(answers) == n, answers
    assert set(answers) == names, answers
    assert all(a != b for a, b in itertools.pairwise(answers)), f"not alternating: {answers}"


@pytest.fixture(params=[0, 1], ids=["vs-conntrack-0", "vs-conntrack-1"])
def vs_conntrack(request: pytest.FixtureRequest) -> Iterator[int]:
    """net.ipv4.vs.conntrack set to the parameter, restored afterwards."""
    saved = VS_CONNTRACK.read_text()
    VS_CONNTRACK.write_text(f"{request.param}\n")
    try:
        yield request.param
    finally:
        VS_CONNTRACK.write_text(saved)


def test_tcp_round_robin_alternates_between_masq_backends(
    topology: Topology, client: Client, ipvsadm: str, vips: None, vs_conntrack: int
) -> None:
    """10 TCP requests to an rr masq VS alternate be1/be2, replies masqueraded back via the node."""
    be = topology.backends
    reals = [f"{be['be1'].ipv4}:8080", f"{be['be2'].ipv4}:8080"]
    with virtual_server(ipvsadm, "tcp", VIP4, 80, reals):
        assert_round_robin(client.requests(VIP4, 80, 10), {"be1", "be2"}, 10)


def test_udp_round_robin_alternates_between_masq_backends(
    topology: Topology, client: Client, ipvsadm: str, vips: None
) -> None:
    """10 UDP requests, each from a new source port, to an rr masq VS alternate be1/be2."""
    be = topology.backends
    reals = [f"{be['be1'].ipv4}:8080", f"{be['be2'].ipv4}:8080"]
    with virtual_server(ipvsadm, "udp", VIP4, 80, reals):
        assert_round_robin(client.requests(VIP4, 80, 10, proto="udp"), {"be1", "be2"}, 10)


def test_ipv6_tcp_round_robin_alternates_between_masq_backends(
    topology: Topology, client: Client, ipvsadm: str, vips: None
) -> None:
    """The IPv6 path works too: an rr masq VS on an IPv6 VIP alternates be3/be4."""
    be = topology.backends
    reals = [f"[{be['be3'].ipv6}]:8080", f"[{be['be4'].ipv6}]:8080"]
    with virtual_server(ipvsadm, "tcp", VIP6, 80, reals):
        assert_round_robin(client.requests(VIP6, 80, 6), {"be3", "be4"}, 6)


def test_held_connections_count_as_active_until_closed(
    topology: Topology, client: Client, ipvsadm: str, vips: None
) -> None:
    """Four held connections spread 2/2 and show as ActiveConn; closing them ends that."""
    be = topology.backends
    reals = [f"{be['be1'].ipv4}:8080", f"{be['be2'].ipv4}:8080"]
    with virtual_server(ipvsadm, "tcp", VIP4, 80, reals) as service:
        with client.hold(VIP4, 80, 4) as held:
            assert sorted(held.backends) == ["be1", "be1", "be2", "be2"]
            assert active_connections(ipvsadm, service) == {be["be1"].ipv4: 2, be["be2"].ipv4: 2}
        deadline = time.monotonic() + 10  # the FINs cross the node asynchronously
        while (active := active_connections(ipvsadm, service)) != {be["be1"].ipv4: 0, be["be2"].ipv4: 0}:
            assert time.monotonic() < deadline, active
            time.sleep(0.2)


def test_requests_keep_the_chosen_client_source_address(
    topology: Topology, client: Client, ipvsadm: str, vips: None
) -> None:
    """A request from source 198.18.0.5 reaches the backend and IPVS sees that client address."""
    source = client.sources_v4[3]
    assert source == "198.18.0.5"
    with virtual_server(ipvsadm, "tcp", VIP4, 80, [f"{topology.backends['be3'].ipv4}:8080"], scheduler="sh"):
        assert client.requests(VIP4, 80, 3, source=source) == ["be3", "be3", "be3"]
        connections = run(ipvsadm, "-Lnc")
        assert re.search(rf"{re.escape(source)}:\d+\s+{re.escape(VIP4)}:80\s+", connections), connections


def test_stopped_backend_server_refuses(client: Client, backends: dict[str, Backend], ipvsadm: str, vips: None) -> None:
    """With be4's server stopped, requests scheduled to it are refused (and the fixture restarts it)."""
    with virtual_server(ipvsadm, "tcp", VIP4, 80, [f"{backends['be4'].ipv4}:8080"]):
        backends["be4"].stop_server()
        assert client.requests(VIP4, 80, 2, timeout=3.0) == ["!refused", "!refused"]
        backends["be4"].start_server()
        assert client.requests(VIP4, 80, 1) == ["be4"]
