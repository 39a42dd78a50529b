"""The agent's Prometheus metrics, kept in a registry of their own.

``Metrics`` holds every metric the agent exports: how its syncs went (duration, count, last
success), what it did to the kernel (operations by kind and errno, drift repaired, conntrack
entries flushed), what it owns, and, read from the kernel at scrape time, the traffic counters
of each virtual server it owns. Each instance has its own ``CollectorRegistry`` (never the
process-wide default), so tests can make as many as they like.

Methods are thread-safe (prometheus_client's metric objects are); the reconcile loop records,
the HTTP thread renders.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from ipvsctl import logs
from ipvsctl.kernel.base import KernelError
from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import ServiceKey, VirtualServerState
from ipvsctl.model.ops import (
    AddReal,
    AddService,
    BindAddress,
    DeleteReal,
    DeleteService,
    EditReal,
    EditService,
    Operation,
    UnbindAddress,
)

# "full": periodic resync that reads the whole kernel; "partial": changed Services only;
# "drain": the check that removes drained real servers.
SYNC_KINDS: tuple[str, ...] = ("full", "partial", "drain")

# From 1 ms (a partial sync of one Service) to a minute (a full resync of a very large table).
CHECK_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SYNC_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)

OPERATION_NAMES: dict[type, str] = {
    AddService: "add_service",
    EditService: "edit_service",
    DeleteService: "delete_service",
    AddReal: "add_real",
    EditReal: "edit_real",
    DeleteReal: "delete_real",
    BindAddress: "bind_address",
    UnbindAddress: "unbind_address",
}

StatsSource = Callable[[], Iterable[tuple[Owner, VirtualServerState]]]

VS_LABELS = ("namespace", "service", "port", "protocol", "address", "vport")


def operation_name(op: Operation) -> str:
    """The ``operation`` label of an operation: its class name in snake case."""
    name = OPERATION_NAMES.get(type(op))
    if name is None:  # an operation added to ops.py but not here: still count it
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(op).__name__).lower()
    return name


def result_name(error: KernelError | None) -> str:
    """The ``result`` label of an operation: "ok", or the kernel's errno name ("EEXIST")."""
    if error is None:
        return "ok"
    return errno.errorcode.get(error.errno, f"errno_{error.errno}")


def virtual_server_labels(owner: Owner, key: ServiceKey) -> list[str]:
    """Label values for one virtual server, in ``VS_LABELS`` order.

    A firewall-mark service has no protocol or port: it is labelled protocol="fwmark", address
    the family's zero address ("0.0.0.0" or "::") and vport the mark, so two marks stay apart.
    """
    if key.fwmark:
        return [owner.namespace, owner.name, owner.port_name, "fwmark", str(key.address), str(key.fwmark)]
    protocol = key.protocol.name.lower() if key.protocol else "unknown"
    return [owner.namespace, owner.name, owner.port_name, protocol, str(key.address), str(key.port)]


class _VirtualServerCollector:
    """Reads the owned virtual servers at scrape time and turns their counters into metrics."""

    def __init__(self) -> None:
        self.source: StatsSource | None = None

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        entries: list[tuple[Owner, VirtualServerState]] = []
        source = self.source
        if source is not None:
            try:
                entries = list(source())
            except Exception as exc:
                logs.get().warning("reading virtual server stats failed", error=repr(exc))
                entries = []
        connections, packets, bytes_, active, inactive, reals = families = self._families()
        seen: set[ServiceKey] = set()
        for owner, state in entries:
            key = state.server.key
            if key in seen:  # one series per virtual server, even if the source repeats one
                continue
            seen.add(key)
            labels = virtual_server_labels(owner, key)
            stats = state.stats
            connections.add_metric(labels, stats.conns)
            packets.add_metric([*labels, "in"], stats.inpkts)
            packets.add_metric([*labels, "out"], stats.outpkts)
            bytes_.add_metric([*labels, "in"], stats.inbytes)
            bytes_.add_metric([*labels, "out"], stats.outbytes)
            active.add_metric(labels, sum(r.active_conns for r in state.real_servers))
            inactive.add_metric(labels, sum(r.inactive_conns for r in state.real_servers))
            reals.add_metric(labels, len(state.real_servers))
        yield from families

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        directed = [*VS_LABELS, "direction"]
        return (
            CounterMetricFamily(
                "ipvsctl_virtual_server_connections",
                "Connections scheduled by an owned virtual server (kernel counter).",
                labels=VS_LABELS,
            ),
            CounterMetricFamily(
                "ipvsctl_virtual_server_packets",
                "Packets through an owned virtual server, by direction (kernel counter).",
                labels=directed,
            ),
            CounterMetricFamily(
                "ipvsctl_virtual_server_bytes",
                "Bytes through an owned virtual server, by direction (kernel counter).",
                labels=directed,
            ),
            GaugeMetricFamily(
                "ipvsctl_virtual_server_active_connections",
                "Active connections of an owned virtual server (sum over its real servers).",
                labels=VS_LABELS,
            ),
            GaugeMetricFamily(
                "ipvsctl_virtual_server_inactive_connections",
                "Inactive connections of an owned virtual server (sum over its real servers).",
                labels=VS_LABELS,
            ),
            GaugeMetricFamily(
                "ipvsctl_virtual_server_real_servers",
                "Real servers of an owned virtual server, draining ones included.",
                labels=VS_LABELS,
            ),
        )


class Metrics:
    """Every metric the agent exports, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._sync_duration = Histogram(
            "ipvsctl_sync_duration_seconds",
            "Time a sync took, by kind (full resync, partial sync of changed Services, drain check).",
            ["kind"],
            buckets=SYNC_BUCKETS,
            registry=r,
        )
        self._syncs = Counter(
            "ipvsctl_syncs_total",
            "Syncs run, by kind and result (ok, error).",
            ["kind", "result"],
            registry=r,
        )
        self._last_success = Gauge(
            "ipvsctl_last_successful_sync_timestamp_seconds",
            "When the last successful sync of any kind finished (Unix time).",
            registry=r,
        )
        self._operations = Counter(
            "ipvsctl_operations_total",
            "Operations sent to the kernel, by operation and result (ok or the errno name).",
            ["operation", "result"],
            registry=r,
        )
        self._repairs = Counter(
            "ipvsctl_drift_repairs_total",
            "Owned objects a full resync found changed or missing in the kernel and put back.",
            registry=r,
        )
        self._conntrack = Counter(
            "ipvsctl_conntrack_entries_deleted_total",
            "Conntrack entries ipvsctl deleted (stale flows to real servers it removed).",
            registry=r,
        )
        self._owned_vs = Gauge("ipvsctl_owned_virtual_servers", "Virtual servers ipvsctl owns.", registry=r)
        self._owned_rs = Gauge(
            "ipvsctl_owned_real_servers",
            "Real servers in the virtual servers ipvsctl owns.",
            registry=r,
        )
        self._draining = Gauge(
            "ipvsctl_draining_real_servers",
            "Owned real servers at weight 0, waiting to be removed.",
            registry=r,
        )
        self._problems = Gauge(
            "ipvsctl_input_problems",
            "Problems found in the input (Services or endpoints ipvsctl could not use).",
            registry=r,
        )
        self._check_up = Gauge(
            "ipvsctl_real_server_up",
            "Health check state of a checked real server (standalone agent): 1 up, 0 down.",
            ["namespace", "service", "address", "port"],
            registry=r,
        )
        self._check_duration = Histogram(
            "ipvsctl_health_check_duration_seconds",
            "Time one health check took, by kind and result (ok, failed).",
            ["kind", "result"],
            buckets=CHECK_BUCKETS,
            registry=r,
        )
        self._collector = _VirtualServerCollector()
        r.register(self._collector)
        # Start the series a dashboard rates over at zero, so the first error is an increase.
        for kind in SYNC_KINDS:
            self._sync_duration.labels(kind=kind)
            for result in ("ok", "error"):
                self._syncs.labels(kind=kind, result=result)
        for name in OPERATION_NAMES.values():
            self._operations.labels(operation=name, result="ok")

    def observe_sync(self, kind: str, seconds: float, ok: bool, now: float) -> None:
        """Record one sync: its duration, its result, and (if ok) ``now`` (epoch seconds) as the last success."""
        if kind not in SYNC_KINDS:
            raise ValueError(f"unknown sync kind {kind!r}: expected one of {', '.join(SYNC_KINDS)}")
        self._sync_duration.labels(kind=kind).observe(seconds)
        self._syncs.labels(kind=kind, result="ok" if ok else "error").inc()
        if ok:
            self._last_success.set(now)

    def count_operations(self, ops: Sequence[Operation], results: Sequence[KernelError | None]) -> None:
        """Count executed operations; ``results`` is what ``Kernel.execute`` returned for ``ops``."""
        if len(ops) != len(results):
            raise ValueError(f"{len(ops)} operations but {len(results)} results")
        for op, error in zip(ops, results, strict=True):
            self._operations.labels(operation=operation_name(op), result=result_name(error)).inc()

    def count_repairs(self, n: int) -> None:
        """Count owned objects a full resync found changed or missing in the kernel and put back."""
        self._repairs.inc(n)

    def count_conntrack_flushed(self, n: int) -> None:
        self._conntrack.inc(n)

    def set_owned(self, virtual_servers: int, real_servers: int, draining: int) -> None:
        self._owned_vs.set(virtual_servers)
        self._owned_rs.set(real_servers)
        self._draining.set(draining)

    def observe_check(self, kind: str, healthy: bool, seconds: float) -> None:
        self._check_duration.labels(kind=kind, result="ok" if healthy else "failed").observe(seconds)

    def set_check_state(self, service: tuple[str, str], address: object, port: int, healthy: bool | None) -> None:
        """A checked real server's state; None (no longer checked, or not yet decided) removes its series."""
        labels = (service[0], service[1], str(address), str(port))
        if healthy is None:
            with contextlib.suppress(KeyError):
                self._check_up.remove(*labels)
            return
        self._check_up.labels(*labels).set(1 if healthy else 0)

    def set_input_problems(self, n: int) -> None:
        self._problems.set(n)

    def set_stats_source(self, fn: StatsSource | None) -> None:
        """Export per-virtual-server counters read by ``fn`` at each scrape.

        ``fn`` runs on the HTTP thread and must be safe to call from it; it yields the owned
        virtual servers as read from the kernel, each with the Service port that owns it. If it
        raises, the error is logged and the scrape goes on without these series.
        """
        self._collector.source = fn

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
