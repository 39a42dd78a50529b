"""The kernel refuses an operation (errno injected into the in-memory kernel): the Service it
belongs to reports the error, every other Service applies fully, the agent retries the failed
one with growing delays and converges once the fault is gone, nothing owned is leaked and
nothing foreign is touched. A table of errno x operation kind, through `ipvsctl apply` and
through the agent's engine, each against a fault-free run of the same three steps."""

from __future__ import annotations

import errno
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs
from typer.testing import CliRunner

from ipvsctl import cli
from ipvsctl.agent import engine as engine_module
from ipvsctl.agent.engine import RETRY_BASE, Engine
from ipvsctl.agent.loop import Agent
from ipvsctl.agent.metrics import OPERATION_NAMES, Metrics
from ipvsctl.agent.world import World
from ipvsctl.errors import Origin
from ipvsctl.kernel.base import KernelUnavailable
from ipvsctl.kernel.memory import Fault, MemoryKernel
from ipvsctl.model.ipvs import IPAddress, Protocol, RealKey, RealServer, ServiceKey, VirtualServer
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
from ipvsctl.settings import Settings
from ipvsctl.sources.files import parse_object
from ipvsctl.state import Store
from tests.conftest import ip

NODE = ip("192.0.2.10")
A = ServiceKey(Protocol.TCP, ip("10.96.0.1"), 80)
B = ServiceKey(Protocol.TCP, ip("10.96.0.2"), 80)
C = ServiceKey(Protocol.UDP, ip("10.96.0.3"), 53)
FOREIGN = ServiceKey(Protocol.TCP, ip("10.96.0.99"), 80)
BUSY = RealKey(ip("203.0.113.1"), 8080)  # leaves Service a at step 2 with connections: drained (weight 0)


def service(name: str, vip: str, port: int, proto: str = "TCP", scheduler: str | None = None) -> str:
    annotations = f", annotations: {{ipvsctl.io/scheduler: {scheduler}}}" if scheduler else ""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo{annotations}}}
spec:
  clusterIP: {vip}
  ports: [{{name: p, port: {port}, protocol: {proto}, targetPort: 8080}}]
"""


def endpoints(name: str, addresses: list[str], proto: str = "TCP") -> str:
    eps = ", ".join(f"{{addresses: [{a}]}}" for a in addresses)
    return f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: p, port: 8080, protocol: {proto}}}]
endpoints: [{eps}]
"""


# Three steps; each touches Service a with one family of operations, and the others change too.
# 1: create a (add service, add reals, bind its address), b and c.
# 2: a's scheduler changes (edit service), 203.0.113.1 leaves busy (edit real to weight 0),
#    203.0.113.6 leaves idle (delete real); b gains a real server.
# 3: a goes (delete service, unbind address); c gains a real server.
STEPS: dict[int, list[str]] = {
    1: [
        service("a", "10.96.0.1", 80),
        endpoints("a", ["203.0.113.1", "203.0.113.2", "203.0.113.6"]),
        service("b", "10.96.0.2", 80),
        endpoints("b", ["203.0.113.3"]),
        service("c", "10.96.0.3", 53, "UDP"),
        endpoints("c", ["203.0.113.4"], "UDP"),
    ],
    2: [
        service("a", "10.96.0.1", 80, scheduler="lc"),
        endpoints("a", ["203.0.113.2"]),
        service("b", "10.96.0.2", 80),
        endpoints("b", ["203.0.113.3", "203.0.113.5"]),
        service("c", "10.96.0.3", 53, "UDP"),
        endpoints("c", ["203.0.113.4"], "UDP"),
    ],
    3: [
        service("b", "10.96.0.2", 80),
        endpoints("b", ["203.0.113.3", "203.0.113.5"]),
        service("c", "10.96.0.3", 53, "UDP"),
        endpoints("c", ["203.0.113.4", "203.0.113.7"], "UDP"),
    ],
}
STEP_OF = {
    AddService: 1,
    AddReal: 1,
    BindAddress: 1,
    EditService: 2,
    EditReal: 2,
    DeleteReal: 2,
    DeleteService: 3,
    UnbindAddress: 3,
}
ERRNOS = [errno.EEXIST, errno.ENOENT, errno.ENOMEM, errno.EINVAL]
CASES = [(code, op) for op in STEP_OF for code in ERRNOS]
IDS = [f"{errno.errorcode[code]}-{op.__name__}" for code, op in CASES]


def fault_for(code: int, op: type) -> Fault:
    """The fault on Service a's operations of this kind (its address, for bind and unbind), until cleared."""
    if op in (BindAddress, UnbindAddress):
        return Fault(code, op, address=A.address)
    return Fault(code, op, service=A)


def new_kernel() -> MemoryKernel:
    """A kernel holding someone else's virtual server (it must come through every step unchanged)."""
    k = MemoryKernel(node_addresses=[NODE])
    k.execute([AddService(VirtualServer(FOREIGN, "wlc")), AddReal(FOREIGN, RealServer(RealKey(ip("10.9.9.9"), 80), 7))])
    return k


Snapshot = tuple[dict[ServiceKey, Any], frozenset[IPAddress]]


def snapshot(k: MemoryKernel) -> Snapshot:
    """The kernel's virtual servers (configuration and real servers) and its bound addresses."""
    services = {s.server.key: (s.server, frozenset(r.server for r in s.real_servers)) for s in k.dump()}
    return services, frozenset(k.bound_addresses())


def without_a(snap: Snapshot) -> Snapshot:
    services, bound = snap
    return {key: v for key, v in services.items() if key != A}, bound - {A.address}


def record(store: Store) -> tuple[dict[ServiceKey, Any], frozenset[IPAddress], frozenset[Any]]:
    owned = store.load()
    return dict(owned.services), owned.addresses, frozenset(owned.draining)


def assert_nothing_leaked_or_touched(k: MemoryKernel, store: Store, foreign: Any) -> None:
    """Everything of ours in the kernel is in the record (never created-but-unknown); the foreign
    virtual server is exactly as it was and never recorded as ours."""
    services, addresses, _ = record(store)
    in_kernel = {s.server.key for s in k.dump()}
    assert in_kernel - {FOREIGN} <= set(services), (in_kernel, services)
    assert k.bound_addresses() <= addresses
    assert FOREIGN not in services
    assert snapshot(k)[0][FOREIGN] == foreign


# --- through the CLI -----------------------------------------------------------------------------


class CliRun:
    """`ipvsctl apply` on one kernel and state directory, manifests rewritten per step."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kernel = new_kernel()
        self.state = tmp / "state"
        self.manifests = tmp / "m.yaml"
        self.monkeypatch = monkeypatch
        self.store = Store(self.state)

    def apply(self, step: int) -> tuple[int, str]:
        if step == 2 and self.kernel.get(A) is not None:
            self.kernel.set_conns(A, BUSY, active=3)
        self.manifests.write_text("---".join(STEPS[step]))
        self.monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: self.kernel)
        self.monkeypatch.setenv("IPVSCTL_STATE_DIR", str(self.state))
        result = CliRunner().invoke(cli.app, ["apply", "-f", str(self.manifests), "--node-ip", str(NODE)])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Snapshot, Any]]:
    """The kernel and the record after each step of a run without faults."""
    with pytest.MonkeyPatch.context() as mp:
        run = CliRun(tmp_path_factory.mktemp("reference"), mp)
        out = []
        for step in STEPS:
            code, err = run.apply(step)
            assert code == 0, err
            out.append((snapshot(run.kernel), record(run.store)))
    return out


def test_the_steps_use_every_operation_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step sends Service a exactly the operation kinds the table injects faults into at that step."""
    run = CliRun(tmp_path, monkeypatch)
    for step in STEPS:
        run.kernel.reset_writes()
        assert run.apply(step)[0] == 0
        kinds = {type(op) for op in run.kernel.executed if fault_for(errno.EIO, type(op)).matches(op)}
        assert kinds == {op for op, s in STEP_OF.items() if s == step}


@pytest.mark.parametrize(("code", "op"), CASES, ids=IDS)
def test_cli_reports_the_failed_service_and_applies_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_reference: list[tuple[Snapshot, Any]], code: int, op: type
) -> None:
    """A refused operation of Service a: exit 4, each error line names demo/a and the errno; b, c and the
    foreign virtual server are exactly as without the fault; once the fault is gone the next apply
    converges to the fault-free state and record (nothing lost), and later steps match too."""
    run = CliRun(tmp_path, monkeypatch)
    foreign = snapshot(run.kernel)[0][FOREIGN]
    for step in STEPS:
        expected_kernel, expected_record = cli_reference[step - 1]
        if step == STEP_OF[op]:
            fault = run.kernel.inject(fault_for(code, op))
            exit_code, err = run.apply(step)
            assert exit_code == 4, err
            lines = [line for line in err.splitlines() if line.startswith("error:")]
            assert lines and all(line.startswith("error: demo/a:p: ") for line in lines), err
            assert f"({errno.errorcode[code]})" in err
            assert run.kernel.fault_hits[fault] >= 1
            assert without_a(snapshot(run.kernel)) == without_a(expected_kernel)
            assert_nothing_leaked_or_touched(run.kernel, run.store, foreign)
            run.kernel.clear(fault)
        exit_code, err = run.apply(step)
        assert exit_code == 0, err
        assert snapshot(run.kernel) == expected_kernel
        assert record(run.store) == expected_record
        assert_nothing_leaked_or_touched(run.kernel, run.store, foreign)


def test_cli_a_failed_dump_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel failing to list IPVS (ENOMEM on the dump): exit 5 in one line, not one write; the next
    apply does everything."""
    run = CliRun(tmp_path, monkeypatch)
    run.kernel.reset_writes()
    run.kernel.inject(Fault(errno.ENOMEM, "dump", times=1))
    exit_code, err = run.apply(1)
    assert (exit_code, err.strip()) == (5, "error: IPVS dump failed: Cannot allocate memory")
    assert run.kernel.writes == 0
    assert run.apply(1)[0] == 0
    assert {A, B, C} <= set(snapshot(run.kernel)[0])


# --- through the agent's engine ------------------------------------------------------------------


@dataclass
class Clock:
    now: float = 5000.0


class AgentRun:
    """The agent's engine on a World fed step by step; first sync full, later ones partial, as the loop does."""

    def __init__(self, tmp: Path) -> None:
        self.kernel = new_kernel()
        self.store = Store(tmp / "state")
        self.world = World()
        self.engine = Engine(self.kernel, self.store, Settings(node_name="node-a"), self.world, clock=lambda: 1000.0)
        self.metrics = Metrics()
        self.step = 0

    def feed(self, step: int) -> None:
        if step == 2 and self.kernel.get(A) is not None:
            self.kernel.set_conns(A, BUSY, active=3)
        for index, doc in enumerate(yaml.safe_load_all(textwrap.dedent("---".join(STEPS[step])))):
            parsed = parse_object(Origin("t.yaml", index), "", doc)
            assert parsed.origin is not None and not parsed.failed
            key = ("t", parsed.origin.kind, parsed.origin.namespace, parsed.origin.name)
            self.world.put(key, parsed.values)
        if step == 3:
            self.world.remove(("t", "Service", "demo", "a"))
            self.world.remove(("t", "EndpointSlice", "demo", "a-1"))
        self.step = step

    def sync(self) -> Any:
        changes = self.world.take()
        if self.step == 1 and not self.engine.entries:
            report = self.engine.resync(changes.services, retranslate=True)
        else:
            report = self.engine.sync(changes.services)
        self.metrics.count_operations(report.ops, list(report.results))
        return report


@pytest.fixture(scope="module")
def agent_reference(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Snapshot, Any]]:
    run = AgentRun(tmp_path_factory.mktemp("agent-reference"))
    out = []
    for step in STEPS:
        run.feed(step)
        assert run.sync().ok
        out.append((snapshot(run.kernel), record(run.store)))
    return out


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """The engine's monotonic clock (retry due times), under the test's control."""
    c = Clock()
    fake = types.SimpleNamespace(monotonic=lambda: c.now, time=lambda: 1000.0)
    monkeypatch.setattr(engine_module, "time", fake)
    yield c


def operations(metrics: Metrics, op: type, result: str) -> float:
    name = OPERATION_NAMES[op]
    value = metrics.registry.get_sample_value("ipvsctl_operations_total", {"operation": name, "result": result})
    return value or 0.0


@pytest.mark.parametrize(("code", "op"), CASES, ids=IDS)
def test_agent_retries_the_failed_service_with_backoff_and_converges(
    tmp_path: Path, clock: Clock, agent_reference: list[tuple[Snapshot, Any]], code: int, op: type
) -> None:
    """A refused operation of Service a in the agent: the sync reports a as failed (log line naming it,
    operations counted by errno), b, c and the foreign virtual server are as without the fault; while the
    fault lasts a is retried after 1, 2, 4 s; once it is gone the next retry converges to the fault-free
    kernel and record, the journal agrees, and the later steps match too. A refused unbind has no
    Service left to retry: the address stays recorded as owned and the next full resync unbinds it."""
    run = AgentRun(tmp_path)
    foreign = snapshot(run.kernel)[0][FOREIGN]
    for step in STEPS:
        expected_kernel, expected_record = agent_reference[step - 1]
        run.feed(step)
        if step == STEP_OF[op]:
            fault = run.kernel.inject(fault_for(code, op))
            with capture_logs() as logged:
                report = run.sync()
            assert not report.ok and run.kernel.fault_hits[fault] >= 1
            assert {e.errno for e in report.errors} >= {code}
            refused = [e for e in logged if e["event"] == "kernel refused an operation"]
            assert refused and all(e["service"] == "demo/a:p" for e in refused), logged
            assert operations(run.metrics, op, errno.errorcode[code]) >= 1
            assert without_a(snapshot(run.kernel)) == without_a(expected_kernel)
            assert_nothing_leaked_or_touched(run.kernel, run.store, foreign)
            if op is UnbindAddress:
                assert report.failed == () and run.engine.next_retry() is None
                assert A.address in run.engine.owned.addresses
                run.kernel.clear(fault)
                assert run.engine.resync().ok
            else:
                assert report.failed == (("demo", "a"),)
                delays = []
                for _ in range(3):
                    due = run.engine.next_retry()
                    assert due is not None
                    delays.append(due - clock.now)
                    clock.now = due - 0.001
                    assert run.engine.due_retries(clock.now) == set()
                    clock.now = due
                    assert run.engine.due_retries(clock.now) == {("demo", "a")}
                    retry = run.engine.sync(run.engine.due_retries(clock.now))
                    assert retry.failed == (("demo", "a"),)
                    assert without_a(snapshot(run.kernel)) == without_a(expected_kernel)
                assert delays == [RETRY_BASE, 2 * RETRY_BASE, 4 * RETRY_BASE]
                run.kernel.clear(fault)
                clock.now = run.engine.next_retry() or clock.now
                assert run.engine.sync(run.engine.due_retries(clock.now)).ok
                assert run.engine.next_retry() is None
        else:
            assert run.sync().ok
        assert snapshot(run.kernel) == expected_kernel
        assert record(run.store) == expected_record
        owned = run.engine.owned
        assert (dict(owned.services), owned.addresses, frozenset(owned.draining)) == expected_record
        assert_nothing_leaked_or_touched(run.kernel, run.store, foreign)


@pytest.mark.parametrize("read", ["dump", "get"])
def test_agent_a_failed_read_is_a_failed_sync_and_writes_nothing(tmp_path: Path, read: str) -> None:
    """The kernel failing a read (ENOMEM on a full dump, or on reading one virtual server back in a partial
    sync) fails that sync as 'IPVS unavailable' without a write; the changes are kept and the next sync
    applies them."""
    run = AgentRun(tmp_path)
    agent = Agent(run.engine, run.world, run.metrics)
    run.feed(1)
    if read == "get":
        assert run.sync().ok
        run.feed(2)
    run.kernel.reset_writes()
    run.kernel.inject(Fault(errno.ENOMEM, read, times=1))
    changes = run.world.take()
    if read == "dump":
        ok = agent._run("full", lambda: run.engine.resync(changes.services, retranslate=True))
    else:
        ok = agent._run("partial", lambda: run.engine.sync(changes.services))
    assert ok is False
    what = "IPVS dump failed" if read == "dump" else "IPVS GET_SERVICE failed"
    assert agent.status.last_error == f"IPVS unavailable: {what}: Cannot allocate memory"
    assert run.kernel.writes == 0
    run.world.touch(changes.services)  # what the loop does after a failed step
    assert run.sync().ok
    assert {A, B, C} <= set(snapshot(run.kernel)[0])
    state = run.kernel.get(A)
    assert state is not None and state.server.scheduler == ("rr" if read == "dump" else "lc")


def test_memory_kernel_faults_match_narrowly_and_count() -> None:
    """A fault refuses only what it names (kind, service, address, real), as often as told, changes
    nothing when it refuses, and is gone once used up or cleared."""
    k = MemoryKernel()
    other = ServiceKey(Protocol.TCP, ip("10.96.0.2"), 80)
    once = k.inject(Fault(errno.ENOMEM, AddService, service=A, times=1))
    twice = k.inject(Fault(errno.EINVAL, AddReal, real=BUSY, times=2))
    results = k.execute(
        [
            AddService(VirtualServer(other)),
            AddService(VirtualServer(A)),
            AddService(VirtualServer(A)),
            AddReal(A, RealServer(BUSY)),
            AddReal(A, RealServer(RealKey(ip("203.0.113.2"), 8080))),
            AddReal(other, RealServer(BUSY)),
            AddReal(other, RealServer(BUSY)),
        ]
    )
    assert [r.errno if r else 0 for r in results] == [0, errno.ENOMEM, 0, errno.EINVAL, 0, errno.EINVAL, 0]
    assert (k.fault_hits[once], k.fault_hits[twice]) == (1, 2)
    state = k.get(A)
    assert state is not None and [r.server.key for r in state.real_servers] == [RealKey(ip("203.0.113.2"), 8080)]
    always = k.inject(Fault(errno.EEXIST, BindAddress, address=A.address))
    for _ in range(3):
        assert k.execute([BindAddress(A.address)])[0].errno == errno.EEXIST  # type: ignore[union-attr]
    assert k.bound_addresses() == set()
    k.clear(always)
    assert k.execute([BindAddress(A.address)]) == [None]
    k.inject(Fault(errno.ESRCH, "get", service=A))
    assert k.get(A) is None and k.get(other) is not None
    k.clear()
    assert k.get(A) is not None
    with pytest.raises(ValueError):
        k.inject(Fault(errno.EIO, "flush"))
    k.inject(Fault(errno.EPERM, "dump"))
    with pytest.raises(KernelUnavailable, match="CAP_NET_ADMIN"):
        k.dump()
