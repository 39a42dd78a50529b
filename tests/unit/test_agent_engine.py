"""The agent's engine on the in-memory kernel with a controllable clock: incremental apply,
drift repair, drain timing, restart with zero writes, clashes, retries, held input."""

from __future__ import annotations

import errno
import textwrap
from pathlib import Path

import pytest
import yaml

from ipvsctl.agent.engine import DEEP_EVERY, Engine
from ipvsctl.agent.world import World
from ipvsctl.errors import Origin
from ipvsctl.kernel.base import KernelUnavailable
from ipvsctl.kernel.memory import Fault, MemoryKernel
from ipvsctl.model.ipvs import Protocol, RealKey, RealServer, ServiceKey, VirtualServer
from ipvsctl.model.ops import AddReal, AddService, DeleteReal, DeleteService, EditReal, EditService
from ipvsctl.settings import Settings
from ipvsctl.sources.files import parse_object
from ipvsctl.state import Store
from tests.conftest import ip

NODE = ip("192.0.2.10")


def service(name: str, vip: str, port: int = 80, *, proto: str = "TCP", annotations: str = "") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo{", annotations: {" + annotations + "}" if annotations else ""}}}
spec:
  clusterIP: {vip}
  ports: [{{name: p, port: {port}, protocol: {proto}, targetPort: 8080}}]
"""


def endpoints(name: str, ready: dict[str, bool], proto: str = "TCP") -> str:
    eps = ", ".join(f"{{addresses: [{a}], conditions: {{ready: {str(r).lower()}}}}}" for a, r in ready.items())
    return f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: demo, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: p, port: 8080, protocol: {proto}}}]
endpoints: [{eps}]
"""


class Harness:
    def __init__(self, tmp: Path, kernel: MemoryKernel | None = None, **settings: object) -> None:
        self.kernel = kernel or MemoryKernel(node_addresses=[NODE])
        self.store = Store(tmp / "state")
        self.world = World()
        self.now = 1000.0
        self.settings = Settings(node_name="node-a", **settings)  # type: ignore[arg-type]
        self.engine = self.restart()
        self.dumps = 0
        original = self.kernel.dump

        def counting_dump(reals: bool = True):  # type: ignore[no-untyped-def]
            self.dumps += 1
            return original(reals)

        self.kernel.dump = counting_dump  # type: ignore[method-assign]

    def restart(self) -> Engine:
        self.engine = Engine(self.kernel, self.store, self.settings, self.world, clock=lambda: self.now)
        return self.engine

    def put(self, text: str) -> None:
        for index, doc in enumerate(yaml.safe_load_all(textwrap.dedent(text))):
            parsed = parse_object(Origin("t.yaml", index), "", doc)
            o = parsed.origin
            assert o is not None
            key = ("t", o.kind, o.namespace, o.name)
            if parsed.failed:
                self.world.report(key, list(parsed.problems))
            else:
                self.world.put(key, parsed.values)

    def remove(self, kind: str, name: str) -> None:
        self.world.remove(("t", kind, "demo", name))

    def sync(self) -> object:
        changes = self.world.take()
        return self.engine.sync(changes.services)


def tcp(vip: str, port: int = 80) -> ServiceKey:
    return ServiceKey(Protocol.TCP, ip(vip), port)


def real(addr: str, weight: int = 1) -> RealServer:
    return RealServer(RealKey(ip(addr), 8080), weight)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def weights(k: MemoryKernel, key: ServiceKey) -> dict[str, int]:
    state = k.get(key)
    assert state is not None
    return {str(r.server.key.address): r.server.weight for r in state.real_servers}


def test_first_resync_programs_everything(h: Harness) -> None:
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True, "203.0.113.2": True}))
    h.put(service("b", "10.0.0.2"))
    report = h.engine.resync(h.world.take().services, retranslate=True)
    assert report.ok
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1, "203.0.113.2": 1}
    assert h.kernel.get(tcp("10.0.0.2")) is not None
    assert report.repairs == 0  # new input is not drift


def test_an_endpoint_change_touches_only_its_service_and_never_dumps(h: Harness) -> None:
    """Incremental apply: the other Services' virtual servers get no operation, no full dump is read."""
    for n in range(20):
        h.put(service(f"s{n}", f"10.0.1.{n}") + "---" + endpoints(f"s{n}", {"203.0.113.1": True}))
    h.engine.resync(h.world.take().services, retranslate=True)
    h.kernel.reset_writes()
    h.kernel.executed.clear()
    dumps = h.dumps
    h.put(endpoints("s7", {"203.0.113.1": True, "203.0.113.2": True}))
    report = h.sync()
    assert h.dumps == dumps
    assert h.kernel.executed == [AddReal(tcp("10.0.1.7"), real("203.0.113.2"))]
    assert report.services == 1 and report.virtual_servers == 1  # type: ignore[attr-defined]


def test_drift_is_repaired_by_a_full_resync_and_foreign_servers_stay(h: Harness) -> None:
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True, "203.0.113.2": True}))
    h.put(service("b", "10.0.0.2", annotations="ipvsctl.io/scheduler: lc"))
    h.engine.resync(h.world.take().services, retranslate=True)
    foreign = tcp("10.9.9.9")
    h.kernel.execute([AddService(VirtualServer(foreign, "wlc")), AddReal(foreign, real("203.0.113.9", 3))])
    # by hand: delete one owned virtual server, re-weight a real server, change a scheduler
    h.kernel.execute(
        [
            DeleteReal(tcp("10.0.0.1"), RealKey(ip("203.0.113.2"), 8080)),
            EditReal(tcp("10.0.0.1"), real("203.0.113.1", 7)),
            EditService(VirtualServer(tcp("10.0.0.2"), "rr")),
        ]
    )
    before = h.kernel.get(foreign)
    report = h.engine.resync()
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1, "203.0.113.2": 1}
    state = h.kernel.get(tcp("10.0.0.2"))
    assert state is not None and state.server.scheduler == "lc"
    assert report.repairs == 3
    assert h.kernel.get(foreign) == before
    h.kernel.execute([DeleteService(tcp("10.0.0.2"))])
    assert h.engine.resync().repairs == 1
    assert h.kernel.get(tcp("10.0.0.2")) is not None
    # Translating everything again (as after a failed full sync) is not a change of input:
    # what it puts back is still drift, and counted.
    h.kernel.execute([EditReal(tcp("10.0.0.1"), real("203.0.113.1", 5))])
    assert h.engine.resync(retranslate=True).repairs == 1
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1, "203.0.113.2": 1}


def test_drain_timing_and_return(h: Harness) -> None:
    """A leaving TCP real server drains at weight 0; it goes when idle, or at the timeout;
    an endpoint that comes back gets its weight again without delete+add."""
    key = tcp("10.0.0.1")
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True, "203.0.113.2": True}))
    h.engine.resync(h.world.take().services, retranslate=True)
    gone = RealKey(ip("203.0.113.2"), 8080)
    h.kernel.set_conns(key, gone, active=2)
    h.put(endpoints("a", {"203.0.113.1": True, "203.0.113.2": False}))
    h.sync()
    assert weights(h.kernel, key) == {"203.0.113.1": 1, "203.0.113.2": 0}
    assert h.engine.draining
    # back to ready while draining: weight 1 again by an edit
    h.kernel.executed.clear()
    h.put(endpoints("a", {"203.0.113.1": True, "203.0.113.2": True}))
    h.sync()
    assert h.kernel.executed == [EditReal(key, real("203.0.113.2"))]
    assert not h.engine.draining
    # leave again; still busy after 30 s; idle → deleted at the next drain check
    h.put(endpoints("a", {"203.0.113.1": True}))
    h.sync()
    h.now += 30
    h.engine.drain()
    assert weights(h.kernel, key) == {"203.0.113.1": 1, "203.0.113.2": 0}
    h.kernel.set_conns(key, gone, active=0)
    h.engine.drain()
    assert weights(h.kernel, key) == {"203.0.113.1": 1}
    assert not h.engine.draining


def test_drain_timeout_deletes_a_busy_real_server(h: Harness) -> None:
    key = tcp("10.0.0.1")
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True, "203.0.113.2": True}))
    h.engine.resync(h.world.take().services, retranslate=True)
    h.kernel.set_conns(key, RealKey(ip("203.0.113.2"), 8080), active=5)
    h.put(endpoints("a", {"203.0.113.1": True}))
    h.sync()
    h.now += 59
    h.engine.drain()
    assert "203.0.113.2" in weights(h.kernel, key)
    h.now += 1
    h.engine.drain()
    assert weights(h.kernel, key) == {"203.0.113.1": 1}


def test_udp_real_servers_are_deleted_at_once(h: Harness) -> None:
    key = ServiceKey(Protocol.UDP, ip("10.0.0.53"), 53)
    h.put(
        service("dns", "10.0.0.53", 53, proto="UDP")
        + "---"
        + endpoints("dns", {"203.0.113.1": True, "203.0.113.2": True}, "UDP")
    )
    h.engine.resync(h.world.take().services, retranslate=True)
    h.kernel.set_conns(key, RealKey(ip("203.0.113.2"), 8080), active=3)
    h.put(endpoints("dns", {"203.0.113.1": True}, "UDP"))
    h.sync()
    assert weights(h.kernel, key) == {"203.0.113.1": 1}


def test_restart_on_unchanged_state_writes_nothing(h: Harness) -> None:
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True}))
    h.put(service("dns", "10.0.0.53", 53, proto="UDP"))
    h.engine.resync(h.world.take().services, retranslate=True)
    h.kernel.reset_writes()
    h.restart()
    report = h.engine.resync(retranslate=True)
    assert report.ops == ()
    assert h.kernel.writes == 0


def test_restart_restores_a_weight_left_at_zero(h: Harness) -> None:
    """kube-proxy's stuck-at-zero bug (k8s #92019): a ready endpoint at weight 0 gets its weight back."""
    key = tcp("10.0.0.1")
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True, "203.0.113.2": True}))
    h.engine.resync(h.world.take().services, retranslate=True)
    h.kernel.set_conns(key, RealKey(ip("203.0.113.2"), 8080), active=1)
    h.put(endpoints("a", {"203.0.113.1": True}))
    h.sync()
    assert weights(h.kernel, key)["203.0.113.2"] == 0
    # the agent stops; meanwhile the endpoint is ready again; a new agent starts
    h.put(endpoints("a", {"203.0.113.1": True, "203.0.113.2": True}))
    h.world.take()
    h.restart()
    h.engine.resync(retranslate=True)
    assert weights(h.kernel, key) == {"203.0.113.1": 1, "203.0.113.2": 1}
    assert not h.engine.draining


def test_a_clash_gives_the_virtual_server_to_the_first_service_and_back(h: Harness) -> None:
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True}))
    h.put(service("b", "10.0.0.1") + "---" + endpoints("b", {"203.0.113.2": True}))
    report = h.engine.resync(h.world.take().services, retranslate=True)
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1}
    assert any("already used by demo/a:p" in str(c) for c in report.conflicts)
    h.remove("Service", "a")
    h.sync()
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.2": 1}
    assert h.engine.owned.services[tcp("10.0.0.1")].name == "b"


def test_a_failed_service_is_retried_with_backoff_and_others_apply(h: Harness) -> None:
    h.kernel.fail_next(lambda op: isinstance(op, AddService) and op.server.key == tcp("10.0.0.1"), errno.ENOMEM)
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True}))
    h.put(service("b", "10.0.0.2") + "---" + endpoints("b", {"203.0.113.1": True}))
    report = h.engine.resync(h.world.take().services, retranslate=True)
    assert report.failed == (("demo", "a"),)
    assert h.kernel.get(tcp("10.0.0.1")) is None
    assert h.kernel.get(tcp("10.0.0.2")) is not None
    due = h.engine.next_retry()
    assert due is not None
    assert h.engine.due_retries(due - 0.01) == set()
    assert h.engine.due_retries(due) == {("demo", "a")}
    assert h.engine.sync({("demo", "a")}).ok  # type: ignore[attr-defined]
    assert h.kernel.get(tcp("10.0.0.1")) is not None
    assert h.engine.next_retry() is None


def test_a_rejected_service_keeps_its_virtual_servers(h: Harness) -> None:
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True}))
    h.engine.resync(h.world.take().services, retranslate=True)
    h.put(service("a", "10.0.0.1", annotations="ipvsctl.io/scheduler: nope"))
    h.sync()
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1}
    assert any("unknown scheduler" in str(p) for p in h.engine.input_problems())


def test_nothing_is_deleted_while_a_source_is_incomplete(h: Harness) -> None:
    h.put(service("a", "10.0.0.1"))
    h.engine.resync(h.world.take().services, retranslate=True)
    h.restart()
    h.remove("Service", "a")
    h.world.set_incomplete("files", True)
    h.engine.resync(h.world.take().services, retranslate=True)
    assert h.kernel.get(tcp("10.0.0.1")) is not None
    h.world.set_incomplete("files", False)
    h.engine.resync()
    assert h.kernel.get(tcp("10.0.0.1")) is None


def test_addresses_shared_by_services_stay_bound_until_the_last_goes(h: Harness) -> None:
    h.put(service("a", "10.0.0.1", 80))
    h.put(service("b", "10.0.0.1", 443))
    h.engine.resync(h.world.take().services, retranslate=True)
    assert ip("10.0.0.1") in h.kernel.bound_addresses()
    h.remove("Service", "a")
    h.sync()
    assert ip("10.0.0.1") in h.kernel.bound_addresses()
    h.remove("Service", "b")
    h.sync()
    assert ip("10.0.0.1") not in h.kernel.bound_addresses()
    assert h.engine.owned.addresses == frozenset()


def test_partial_syncs_append_to_the_journal_and_a_restart_reads_the_same_record(h: Harness) -> None:
    """A partial sync costs a journal line, not a rewrite of the whole record; the record a
    restarted agent loads equals the live one; the next full resync folds the journal in."""
    for n in range(5):
        h.put(service(f"s{n}", f"10.0.2.{n}") + "---" + endpoints(f"s{n}", {"203.0.113.1": True, "203.0.113.2": True}))
    h.engine.resync(h.world.take().services, retranslate=True)
    snapshot = h.store.path.read_bytes()
    assert not h.store.journal.exists()
    key = tcp("10.0.2.3")
    h.kernel.set_conns(key, RealKey(ip("203.0.113.2"), 8080), active=1)
    h.put(endpoints("s3", {"203.0.113.1": True, "203.0.113.2": False}))  # starts draining: recorded
    h.sync()
    h.remove("Service", "s4")
    h.remove("EndpointSlice", "s4-1")
    h.sync()
    assert h.store.path.read_bytes() == snapshot
    assert len(h.store.journal.read_text().splitlines()) >= 2
    live = h.engine.owned
    assert set(live.draining) == {(key, RealKey(ip("203.0.113.2"), 8080))}
    assert tcp("10.0.2.4") not in live.services and ip("10.0.2.4") not in live.addresses
    assert Store(h.store.directory).load() == live
    h.engine.resync()
    assert not h.store.journal.exists()
    assert Store(h.store.directory).load() == h.engine.owned == live


def _idle(h: Harness, subnet: str, count: int) -> None:
    """``count`` Services of one endpoint each, programmed, then read back by a second resync
    (the first resync's cache was advanced, not read, so it keeps no digests or summaries)."""
    for n in range(count):
        h.put(service(f"s{n}", f"{subnet}.{n}") + "---" + endpoints(f"s{n}", {"203.0.113.1": True}))
    h.engine.resync(h.world.take().services, retranslate=True)
    h.engine.resync()


def _record_reads(h: Harness) -> list[tuple[ServiceKey, bool]]:
    """From now on, every ``real_servers`` call: its virtual server, and whether it decoded nothing."""
    calls: list[tuple[ServiceKey, bool]] = []
    original = h.kernel.real_servers

    def recording(server: VirtualServer, known: bytes = b"") -> tuple[bytes, object]:
        digest, reals = original(server, known)
        calls.append((server.key, reals is None))
        return digest, reals

    h.kernel.real_servers = recording  # type: ignore[method-assign]
    return calls


def test_a_resync_decodes_only_what_the_kernel_reports_changed_and_still_repairs_drift(h: Harness) -> None:
    """A full resync hands the kernel the digest it read each virtual server's real servers
    with last time; unchanged ones are carried over without decoding, and drift in either the
    real servers or the virtual server's own configuration is still seen and repaired. (Here
    the kernel gives no summaries, as one without /proc/net/ip_vs: every resync asks.)"""
    h.kernel.summarize = False
    _idle(h, "10.0.3", 5)
    calls = _record_reads(h)
    assert h.engine.resync().ops == ()
    assert [carried for _, carried in calls] == [True] * 5
    calls.clear()
    h.kernel.execute(
        [EditReal(tcp("10.0.3.2"), real("203.0.113.1", 7)), EditService(VirtualServer(tcp("10.0.3.3"), "wlc"))]
    )
    report = h.engine.resync()
    assert report.repairs == 2
    assert sorted(carried for _, carried in calls) == [False] + [True] * 4, (
        "only the re-weighted one is decoded; the re-scheduled one is carried"
    )
    assert weights(h.kernel, tcp("10.0.3.2")) == {"203.0.113.1": 1}
    state = h.kernel.get(tcp("10.0.3.3"))
    assert state is not None and state.server.scheduler == "rr"
    # A partial sync changes the cache as the kernel did: that entry is read afresh next time.
    h.put(endpoints("s1", {"203.0.113.1": True, "203.0.113.2": True}))
    h.sync()
    calls.clear()
    assert h.engine.resync().ops == ()
    carried = [c for _, c in calls]
    assert carried.count(False) >= 2 and carried.count(True) <= 3


def test_a_resync_asks_only_for_changed_summaries_and_one_in_deep_every_in_turn(h: Harness) -> None:
    """With the kernel's summaries, an idle resync asks netlink for no virtual server whose
    summary is unchanged, except one in DEEP_EVERY in turn: over DEEP_EVERY resyncs each is
    asked for exactly once. A weight edited by hand changes the summary and is repaired at the
    next resync; a threshold (not in the summary) within DEEP_EVERY resyncs."""
    count = 40
    _idle(h, "10.0.4", count)
    calls = _record_reads(h)
    per_resync = []
    for _ in range(DEEP_EVERY):
        before = len(calls)
        assert h.engine.resync().ops == ()
        per_resync.append(len(calls) - before)
    asked = [key for key, _ in calls]
    assert sorted(asked, key=str) == sorted((tcp(f"10.0.4.{n}") for n in range(count)), key=str), per_resync
    assert max(per_resync) < count

    h.kernel.execute([EditReal(tcp("10.0.4.7"), real("203.0.113.1", 5))])
    report = h.engine.resync()
    assert report.repairs == 1 and weights(h.kernel, tcp("10.0.4.7")) == {"203.0.113.1": 1}

    key = tcp("10.0.4.9")
    h.kernel.execute([EditReal(key, RealServer(RealKey(ip("203.0.113.1"), 8080), 1, upper_threshold=3))])
    for _ in range(DEEP_EVERY):
        report = h.engine.resync()
        state = h.kernel.get(key)
        assert state is not None
        if state.real_servers[0].server.upper_threshold == 0:
            assert report.repairs == 1
            break
    else:
        raise AssertionError(f"a hand-set threshold was not repaired in {DEEP_EVERY} resyncs")


def test_new_input_is_not_counted_as_drift_after_a_resync_that_failed_reading(h: Harness) -> None:
    """A resync translates before it reads the real servers back; when that read fails, the
    retry finds the translation already done, and must still not call the new input drift."""
    h.put(service("a", "10.0.0.1") + "---" + endpoints("a", {"203.0.113.1": True}))
    h.engine.resync(h.world.take().services, retranslate=True)
    h.put(endpoints("a", {"203.0.113.1": True, "203.0.113.2": True}))
    h.kernel.inject(Fault(errno.EIO, "dump", service=tcp("10.0.0.1"), times=1))
    with pytest.raises(KernelUnavailable):
        h.engine.resync(h.world.take().services)
    report = h.engine.resync(retranslate=True)
    assert report.ops == (AddReal(tcp("10.0.0.1"), real("203.0.113.2")),)
    assert report.repairs == 0
    assert weights(h.kernel, tcp("10.0.0.1")) == {"203.0.113.1": 1, "203.0.113.2": 1}
