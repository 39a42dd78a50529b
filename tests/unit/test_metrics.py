"""Agent metrics: parse the exposition text and check names, labels and values."""

from __future__ import annotations

import errno
from ipaddress import ip_address as ip

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from structlog.testing import capture_logs

from ipvsctl.agent.metrics import Metrics, operation_name
from ipvsctl.kernel.base import KernelError
from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import (
    Protocol,
    RealKey,
    RealServer,
    RealServerState,
    ServiceKey,
    Stats,
    VirtualServer,
    VirtualServerState,
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

VS_KEY = ServiceKey(Protocol.TCP, ip("10.96.0.10"), 80)
REAL = RealServer(RealKey(ip("10.1.0.1"), 8080))


def samples(metrics: Metrics) -> list[Sample]:
    payload, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return [s for family in text_string_to_metric_families(payload.decode()) for s in family.samples]


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The value of the one sample with this name and exactly these labels (None if absent)."""
    found = [s.value for s in samples(metrics) if s.name == name and s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


def with_name(metrics: Metrics, name: str) -> list[Sample]:
    return [s for s in samples(metrics) if s.name == name]


def test_fresh_metrics_start_series_at_zero() -> None:
    m = Metrics()
    assert value(m, "ipvsctl_syncs_total", kind="full", result="error") == 0
    assert value(m, "ipvsctl_sync_duration_seconds_count", kind="drain") == 0
    assert value(m, "ipvsctl_operations_total", operation="add_real", result="ok") == 0
    assert value(m, "ipvsctl_last_successful_sync_timestamp_seconds") == 0
    assert value(m, "ipvsctl_drift_repairs_total") == 0
    assert with_name(m, "ipvsctl_virtual_server_connections_total") == []


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.count_repairs(3)
    assert value(a, "ipvsctl_drift_repairs_total") == 3
    assert value(b, "ipvsctl_drift_repairs_total") == 0


def test_observe_sync() -> None:
    m = Metrics()
    m.observe_sync("full", 0.004, ok=True, now=1_700_000_000.5)
    m.observe_sync("partial", 0.0005, ok=True, now=1_700_000_001.0)
    m.observe_sync("partial", 2.0, ok=False, now=1_700_000_050.0)

    assert value(m, "ipvsctl_syncs_total", kind="full", result="ok") == 1
    assert value(m, "ipvsctl_syncs_total", kind="partial", result="ok") == 1
    assert value(m, "ipvsctl_syncs_total", kind="partial", result="error") == 1
    assert value(m, "ipvsctl_syncs_total", kind="drain", result="ok") == 0
    # A failure does not move the last-success timestamp.
    assert value(m, "ipvsctl_last_successful_sync_timestamp_seconds") == 1_700_000_001.0

    assert value(m, "ipvsctl_sync_duration_seconds_count", kind="partial") == 2
    assert value(m, "ipvsctl_sync_duration_seconds_sum", kind="partial") == pytest.approx(2.0005)
    assert value(m, "ipvsctl_sync_duration_seconds_bucket", kind="partial", le="0.001") == 1
    assert value(m, "ipvsctl_sync_duration_seconds_bucket", kind="partial", le="2.5") == 2
    assert value(m, "ipvsctl_sync_duration_seconds_bucket", kind="full", le="0.005") == 1
    assert value(m, "ipvsctl_sync_duration_seconds_bucket", kind="full", le="0.0025") == 0
    buckets = with_name(m, "ipvsctl_sync_duration_seconds_bucket")
    bounds = {s.labels["le"] for s in buckets if s.labels["kind"] == "full"}
    assert {"0.001", "1.0", "60.0", "+Inf"} <= bounds


def test_observe_sync_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown sync kind 'fll'"):
        Metrics().observe_sync("fll", 1.0, ok=True, now=0.0)


def test_count_operations_by_kind_and_errno() -> None:
    m = Metrics()
    vs = VirtualServer(VS_KEY)
    ops = [
        AddService(vs),
        EditService(vs),
        DeleteService(VS_KEY),
        AddReal(VS_KEY, REAL),
        AddReal(VS_KEY, REAL),
        EditReal(VS_KEY, REAL),
        DeleteReal(VS_KEY, REAL.key),
        BindAddress(VS_KEY.address),
        UnbindAddress(VS_KEY.address),
    ]
    results: list[KernelError | None] = [None] * len(ops)
    results[4] = KernelError(ops[4], errno.EEXIST)
    results[6] = KernelError(ops[6], errno.ENOENT)
    m.count_operations(ops, results)
    m.count_operations([ops[0]], [KernelError(ops[0], errno.ENOENT)])

    assert value(m, "ipvsctl_operations_total", operation="add_real", result="ok") == 1
    assert value(m, "ipvsctl_operations_total", operation="add_real", result="EEXIST") == 1
    assert value(m, "ipvsctl_operations_total", operation="delete_real", result="ENOENT") == 1
    assert value(m, "ipvsctl_operations_total", operation="delete_real", result="ok") == 0
    assert value(m, "ipvsctl_operations_total", operation="add_service", result="ENOENT") == 1
    for name in ("add_service", "edit_service", "delete_service", "edit_real", "bind_address", "unbind_address"):
        assert value(m, "ipvsctl_operations_total", operation=name, result="ok") == 1, name


def test_count_operations_needs_one_result_per_op() -> None:
    with pytest.raises(ValueError, match="2 operations but 1 results"):
        Metrics().count_operations([DeleteService(VS_KEY), DeleteService(VS_KEY)], [None])


def test_operation_name_of_every_op_class() -> None:
    assert operation_name(UnbindAddress(VS_KEY.address)) == "unbind_address"
    assert operation_name(DeleteService(VS_KEY)) == "delete_service"


def test_counters_and_gauges() -> None:
    m = Metrics()
    m.count_repairs(2)
    m.count_repairs(0)
    m.count_repairs(1)
    m.count_conntrack_flushed(17)
    m.set_owned(virtual_servers=12, real_servers=40, draining=3)
    m.set_input_problems(4)
    m.set_owned(virtual_servers=11, real_servers=38, draining=0)
    assert value(m, "ipvsctl_drift_repairs_total") == 3
    assert value(m, "ipvsctl_conntrack_entries_deleted_total") == 17
    assert value(m, "ipvsctl_owned_virtual_servers") == 11
    assert value(m, "ipvsctl_owned_real_servers") == 38
    assert value(m, "ipvsctl_draining_real_servers") == 0
    assert value(m, "ipvsctl_input_problems") == 4


def vs_state(key: ServiceKey, stats: Stats, conns: list[tuple[int, int]]) -> VirtualServerState:
    reals = tuple(
        RealServerState(RealServer(RealKey(ip(f"10.1.0.{i + 1}"), 8080)), active_conns=a, inactive_conns=n)
        for i, (a, n) in enumerate(conns)
    )
    return VirtualServerState(VirtualServer(key), reals, stats)


def test_per_virtual_server_stats() -> None:
    owner = Owner("default", "web", "http")
    cluster = vs_state(VS_KEY, Stats(conns=10, inpkts=100, outpkts=90, inbytes=5000, outbytes=70000), [(3, 1), (2, 4)])
    node_port = vs_state(ServiceKey(Protocol.TCP, ip("192.168.1.5"), 30080), Stats(conns=1), [])
    v6 = vs_state(ServiceKey(Protocol.UDP, ip("fd00::10"), 53), Stats(conns=2), [(0, 7)])
    fwmark = vs_state(ServiceKey(None, ip("0.0.0.0"), 0, fwmark=42), Stats(inbytes=9), [(1, 0)])
    dns = Owner("kube-system", "dns", "")
    m = Metrics()
    m.set_stats_source(lambda: [(owner, cluster), (owner, node_port), (dns, v6), (dns, fwmark), (owner, cluster)])

    web = {"namespace": "default", "service": "web", "port": "http", "protocol": "tcp"}
    cip = {**web, "address": "10.96.0.10", "vport": "80"}
    assert value(m, "ipvsctl_virtual_server_connections_total", **cip) == 10
    assert value(m, "ipvsctl_virtual_server_packets_total", **cip, direction="in") == 100
    assert value(m, "ipvsctl_virtual_server_packets_total", **cip, direction="out") == 90
    assert value(m, "ipvsctl_virtual_server_bytes_total", **cip, direction="in") == 5000
    assert value(m, "ipvsctl_virtual_server_bytes_total", **cip, direction="out") == 70000
    assert value(m, "ipvsctl_virtual_server_active_connections", **cip) == 5
    assert value(m, "ipvsctl_virtual_server_inactive_connections", **cip) == 5
    assert value(m, "ipvsctl_virtual_server_real_servers", **cip) == 2

    np = {**web, "address": "192.168.1.5", "vport": "30080"}
    assert value(m, "ipvsctl_virtual_server_connections_total", **np) == 1
    assert value(m, "ipvsctl_virtual_server_real_servers", **np) == 0

    udp6 = {
        "namespace": "kube-system",
        "service": "dns",
        "port": "",
        "protocol": "udp",
        "address": "fd00::10",
        "vport": "53",
    }
    assert value(m, "ipvsctl_virtual_server_connections_total", **udp6) == 2
    assert value(m, "ipvsctl_virtual_server_inactive_connections", **udp6) == 7

    fwm = {**udp6, "protocol": "fwmark", "address": "0.0.0.0", "vport": "42"}
    assert value(m, "ipvsctl_virtual_server_bytes_total", **fwm, direction="in") == 9
    assert value(m, "ipvsctl_virtual_server_active_connections", **fwm) == 1

    # The repeated entry is exported once: four virtual servers, four series.
    assert len(with_name(m, "ipvsctl_virtual_server_connections_total")) == 4
    assert len(with_name(m, "ipvsctl_virtual_server_packets_total")) == 8


def test_stats_source_is_read_at_each_scrape() -> None:
    calls: list[int] = []

    def source() -> list[tuple[Owner, VirtualServerState]]:
        calls.append(1)
        return [(Owner("a", "b", "c"), vs_state(VS_KEY, Stats(conns=len(calls)), []))]

    m = Metrics()
    m.set_stats_source(source)
    assert with_name(m, "ipvsctl_virtual_server_connections_total")[0].value == 1
    assert with_name(m, "ipvsctl_virtual_server_connections_total")[0].value == 2


def test_failing_stats_source_does_not_break_the_scrape() -> None:
    def broken() -> list[tuple[Owner, VirtualServerState]]:
        raise OSError("netlink socket closed")

    m = Metrics()
    m.count_repairs(5)
    m.set_stats_source(broken)
    with capture_logs() as logged:
        assert value(m, "ipvsctl_drift_repairs_total") == 5
        assert with_name(m, "ipvsctl_virtual_server_connections_total") == []
    assert any(e["log_level"] == "warning" and "netlink socket closed" in e["error"] for e in logged), logged

    m.set_stats_source(None)
    assert value(m, "ipvsctl_drift_repairs_total") == 5
