"""`ipvsctl agent` against a real kernel: one agent process watching a manifest directory, proven
with real connections from the client namespace and with what ipvsadm and /metrics show.

The module starts one agent (a child process, its JSON log in a file) on six Services, one per
test, plus a foreign virtual server made with ipvsadm before the agent starts; the restart test
replaces the process. Timing figures (flip to out of rotation, drift repair, drain) are printed
as ``MEASURED ...`` lines and recorded as properties; their bounds are generous because Python
in the test VM is 10-20x slower than on a host. Teardown removes the manifest files (the agent
must then delete its virtual servers and unbind its VIPs), stops the agent (it must exit 0 on
SIGTERM) and deletes the foreign virtual server; `ipvsctl cleanup` runs only if something of
ours is left behind (after a failure).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_support import (
    DRAIN_CHECK,
    DRAIN_TIMEOUT,
    NAMESPACE,
    SYNC_PERIOD,
    AgentProcess,
    EchoConnection,
    Ipvsadm,
    echo_servers,
    http_get,
    metric,
    parse_metrics,
    scrape,
    service_yaml,
    wait_for,
    write_atomically,
)
from netns import Client, Topology, run

BE = {"be1": "203.0.113.11", "be2": "203.0.113.12", "be3": "203.0.113.13", "be4": "203.0.113.14"}
ECHO_PORT = 8081  # the drain test's backends: echo servers (the name, then every line back)

# One Service per test, each on its own VIP (TCP port 80): name → (VIP, ready endpoints, target port).
SERVICES: dict[str, tuple[str, list[str], int]] = {
    "web": ("198.51.100.60", ["be1", "be2"], 8080),
    "flip": ("198.51.100.61", ["be1", "be2"], 8080),
    "drain": ("198.51.100.62", ["be3", "be4"], ECHO_PORT),
    "drift": ("198.51.100.63", ["be3", "be4"], 8080),
    "bad": ("198.51.100.64", ["be1"], 8080),
    "steady": ("198.51.100.65", ["be1", "be2"], 8080),
}
FOREIGN_VIP = "198.51.100.69"
FOREIGN = (
    ["-A", "-t", f"{FOREIGN_VIP}:80", "-s", "wlc"],
    ["-a", "-t", f"{FOREIGN_VIP}:80", "-r", "203.0.113.14:8080", "-m", "-w", "3"],
)
BOUND = 30.0  # upper bound for anything the agent should do "soon" (the VM is slow)


@dataclass
class Env:
    """The running agent and what the tests need around it."""

    agent: AgentProcess
    manifests: Path
    ipvsadm: Ipvsadm
    foreign: list[str]  # the foreign virtual server as `ipvsadm -Sn` showed it before the agent started

    def write(self, name: str, ready: dict[str, bool]) -> float:
        """Rewrite Service ``name``'s file with these endpoint readiness values; the monotonic time of the write."""
        vip, _, target = SERVICES[name]
        write_atomically(self.manifests / f"{name}.yaml", service_yaml(name, vip, ready, target_port=target))
        return time.monotonic()

    def reals(self, name: str) -> dict[str, tuple[int, int, int]] | None:
        """Service ``name``'s real servers by backend name → (weight, ActiveConn, InActConn); None if no VS."""
        reals = self.ipvsadm.reals(SERVICES[name][0], 80)
        if reals is None:
            return None
        by_address = {addr: be for be, addr in BE.items()}
        return {by_address.get(addr, addr): v for addr, v in reals.items()}

    def weights(self, name: str) -> dict[str, int] | None:
        reals = self.reals(name)
        return None if reals is None else {be: w for be, (w, _, _) in reals.items()}

    def wait_weights(self, name: str, want: dict[str, int], timeout: float = BOUND) -> None:
        wait_for(lambda: self.weights(name) == want, timeout, f"{name}: real server weights {want}",
                 describe=lambda: f"ipvsadm shows {self.reals(name)}")  # fmt: skip

    def leftovers(self) -> list[str]:
        """Our Services' virtual servers (`ipvsadm -Sn` lines) and VIPs bound on ipvsctl0 still there."""
        vips = [vip for vip, _, _ in SERVICES.values()]
        rules = [line for line in self.ipvsadm("-Sn").stdout.splitlines() if any(f"{v}:" in line for v in vips)]
        bound = run("ip", "-o", "-4", "addr", "show", "dev", "ipvsctl0", check=False).split()
        return rules + [f"{v} on ipvsctl0" for v in vips if f"{v}/32" in bound]

    def assert_foreign_intact(self) -> None:
        assert self.ipvsadm.saved(FOREIGN_VIP) == self.foreign


def measured(record_property: Callable[[str, object], None], capsys: pytest.CaptureFixture[str], name: str,
             seconds: float) -> None:  # fmt: skip
    """Show a measured figure on the terminal (past pytest's capture) and record it in the report."""
    record_property(name, round(seconds, 3))
    with capsys.disabled():
        print(f"\nMEASURED {name}: {seconds:.2f} s", flush=True)


@pytest.fixture(scope="module")
def agent_env(
    topology: Topology, ipvsadm: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Env]:
    """A foreign virtual server, echo servers on be3/be4, the six Services' manifests and one
    running agent; afterwards the agent must remove its virtual servers when the files go, exit 0
    on SIGTERM, and have left the foreign virtual server as it was."""
    tool = Ipvsadm(ipvsadm)
    base = tmp_path_factory.mktemp("agent")
    manifests, state = base / "manifests", base / "state"
    manifests.mkdir()
    for cmd in FOREIGN:
        tool(*cmd)
    agent = AgentProcess(state, manifests, base)
    env = Env(agent, manifests, tool, tool.saved(FOREIGN_VIP))
    echo_backends = {be: topology.backends[be].netns for be in SERVICES["drain"][1]}
    try:
        assert len(env.foreign) == 2, env.foreign
        with echo_servers(echo_backends, ECHO_PORT):
            for name, (_, ready, _) in SERVICES.items():
                env.write(name, {BE[be]: True for be in ready})
            first = agent.start()
            assert first["virtual_servers"] == len(SERVICES), first
            for name, (_, ready, _) in SERVICES.items():
                env.wait_weights(name, dict.fromkeys(ready, 1))
            assert sum(x.endswith("on ipvsctl0") for x in env.leftovers()) == len(SERVICES), env.leftovers()
            yield env
            # Removing the files removes what the agent made (cheaper than `ipvsctl cleanup`, whose
            # import costs ~20 s in the VM); that is checked too.
            for name in SERVICES:
                (manifests / f"{name}.yaml").unlink()
            wait_for(lambda: not env.leftovers(), BOUND, "the agent to remove its virtual servers and addresses",
                     interval=0.5, describe=lambda: f"left: {env.leftovers()}")  # fmt: skip
            assert scrape("ipvsctl_owned_virtual_servers") == 0
            _report_syncs(request, agent)
            code = agent.stop()
            assert code == 0, f"agent exit status {code} on SIGTERM; its log ends:\n{agent.tail()}"
            env.assert_foreign_intact()
    finally:
        agent.stop()
        if env.leftovers():
            _cleanup(state)
        tool("-D", "-t", f"{FOREIGN_VIP}:80", check=False)


def _report_syncs(request: pytest.FixtureRequest, agent: AgentProcess) -> None:
    """Print how long the (current) agent's syncs took, by kind, as it logged them."""
    by_kind: dict[str, list[float]] = {}
    for e in agent.events():
        if e.get("event") == "sync":
            by_kind.setdefault(str(e.get("kind")), []).append(float(e.get("seconds", 0.0)))
    text = "; ".join(
        f"{kind}: {len(times)} syncs, median {statistics.median(times):.3f} s, max {max(times):.3f} s"
        for kind, times in sorted(by_kind.items())
    )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nMEASURED agent sync durations since its last start (its log): {text}", flush=True)


def _cleanup(state: Path) -> None:
    """`ipvsctl cleanup` for the agent's state directory, in-process (Python starts slowly in the VM)."""
    from typer.testing import CliRunner

    from ipvsctl import cli

    result = CliRunner().invoke(cli.app, ["--state-dir", str(state), "cleanup"])
    assert result.exit_code == 0, result.output


@pytest.fixture
def env(agent_env: Env) -> Env:
    """The module's agent, checked to be still running before the test."""
    agent_env.agent.assert_running()
    return agent_env


def test_service_reaches_both_backends(env: Env, client: Client) -> None:
    """A Service with two ready endpoints in the watched directory becomes a virtual server whose
    connections reach both backends, round robin."""
    assert Counter(client.requests(SERVICES["web"][0], 80, 6)) == {"be1": 3, "be2": 3}


def test_metrics_and_healthz(env: Env, client: Client) -> None:
    """/healthz answers 200 "ok: ..."; /metrics has sync durations, the owned virtual servers and a
    per-virtual-server connection counter labelled with the Service's namespace and name."""
    status, body = http_get("/healthz")
    assert status == 200 and body.startswith("ok"), (status, body)
    vip = SERVICES["web"][0]
    client.requests(vip, 80, 2)
    labels = {"namespace": NAMESPACE, "service": "web", "port": "http", "protocol": "tcp", "address": vip,
              "vport": "80"}  # fmt: skip

    def agreed() -> float | None:
        """The metric once it counts our requests and equals ipvsadm's counter (the kernel folds its
        per-CPU counters into what it reports every ~2 s, so both may lag a little)."""
        kernel = env.ipvsadm.connections(vip, 80)
        value = scrape("ipvsctl_virtual_server_connections_total", **labels)
        return value if value is not None and value == kernel >= 2 else None

    wait_for(agreed, BOUND, "connections_total >= 2 and equal to ipvsadm's Conns", interval=0.5)
    status, body = http_get("/metrics")
    samples = parse_metrics(body)
    assert metric(samples, "ipvsctl_owned_virtual_servers") == len(SERVICES)
    assert (metric(samples, "ipvsctl_sync_duration_seconds_count", kind="full") or 0) >= 1
    assert metric(samples, "ipvsctl_virtual_server_real_servers", **labels) == 2
    foreign = [ls for n, ls, _ in samples if n == "ipvsctl_virtual_server_connections_total"
               and ls.get("address") == FOREIGN_VIP]  # fmt: skip
    assert not foreign, "a foreign virtual server is reported as owned"


def test_not_ready_endpoint_leaves_rotation(
    env: Env, client: Client, record_property: Callable[[str, object], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """Flipping an endpoint to not-ready in its file takes it out of rotation without any command:
    measured from the file write to the kernel showing weight 0 (or no real server), and to new
    connections all reaching the other backend."""
    vip = SERVICES["flip"][0]
    assert set(client.requests(vip, 80, 4)) == {"be1", "be2"}
    written = env.write("flip", {BE["be1"]: True, BE["be2"]: False})
    wait_for(lambda: (env.weights("flip") or {}).get("be2", 0) == 0, BOUND, "be2 at weight 0 or gone",
             interval=0.05, describe=lambda: f"ipvsadm shows {env.reals('flip')}")  # fmt: skip
    out_of_rotation = time.monotonic() - written
    batches: list[tuple[float, list[str]]] = []  # (seconds the batch took, answers)

    def batch() -> bool:
        started = time.monotonic()
        answers = client.requests(vip, 80, 6)
        batches.append((time.monotonic() - started, answers))
        return answers == ["be1"] * 6

    wait_for(batch, BOUND, "6 new connections all to be1", interval=0, describe=lambda: str(batches))
    all_elsewhere = time.monotonic() - written
    measured(record_property, capsys, "flip->out-of-rotation (kernel)", out_of_rotation)
    measured(record_property, capsys, "flip->6 new connections all elsewhere", all_elsewhere)
    spent = sum(t for t, _ in batches)
    measured(record_property, capsys, f"flip: the {len(batches)} batch(es) of 6 requests took", spent)
    assert out_of_rotation < 15, out_of_rotation
    # Back to ready: be2 takes connections again (its drain is cancelled, or it is added again).
    env.write("flip", {BE["be1"]: True, BE["be2"]: True})
    env.wait_weights("flip", {"be1": 1, "be2": 1})
    assert set(client.requests(vip, 80, 4)) == {"be1", "be2"}


def test_drain_keeps_held_connection(
    env: Env, client: Client, record_property: Callable[[str, object], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """A backend whose endpoint turns not-ready while it holds a TCP connection drains: at weight 0
    new connections go elsewhere while the held one still carries data both ways; once that
    connection is gone the real server is deleted, well before the drain timeout."""
    vip = SERVICES["drain"][0]
    held = EchoConnection(vip, 80)
    try:
        x = held.backend
        assert x in ("be3", "be4"), x
        y = "be4" if x == "be3" else "be3"
        assert held.exchange("before-flip") == "before-flip"
        flipped = env.write("drain", {BE[x]: False, BE[y]: True})
        wait_for(lambda: (env.reals("drain") or {}).get(x) == (0, 1, 0), BOUND, f"{x} draining at weight 0",
                 describe=lambda: f"ipvsadm shows {env.reals('drain')}")  # fmt: skip
        assert client.requests(vip, 80, 6) == [y] * 6  # (a) new connections go elsewhere
        assert held.exchange("after-flip") == "after-flip"  # (b) the held one still works, both ways
        time.sleep(3 * DRAIN_CHECK)  # let three drain checks pass while the connection is held ...
        assert (env.reals("drain") or {}).get(x) == (0, 1, 0), env.reals("drain")  # ... it is kept
        assert held.exchange("still-there") == "still-there"
        held.reset()
        closed = time.monotonic()
        wait_for(lambda: x not in (env.reals("drain") or {x: 0}), DRAIN_TIMEOUT + BOUND, f"{x} deleted",
                 interval=0.1, describe=lambda: f"ipvsadm shows {env.reals('drain')}")  # fmt: skip
        deleted = time.monotonic()
    finally:
        held.close()
    measured(record_property, capsys, "drain: connection reset->real server deleted", deleted - closed)
    measured(record_property, capsys, "drain: flip->real server deleted", deleted - flipped)
    # IPVS keeps a reset connection's entry 10 s in CLOSE (counted in InActConn); then a drain check deletes
    # the idle real server. The drain timeout (counted from the flip) must not be what fired.
    assert deleted - closed < 10 + 15 and deleted - flipped < DRAIN_TIMEOUT, (deleted - closed, deleted - flipped)
    assert env.weights("drain") == {y: 1}
    env.write("drain", {BE[x]: True, BE[y]: True})
    env.wait_weights("drain", {"be3": 1, "be4": 1})


def test_drift_is_repaired_and_foreign_left_alone(
    env: Env, client: Client, record_property: Callable[[str, object], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """A full resync puts back an owned virtual server deleted by hand (within one sync period plus
    slack) and an owned real server re-weighted by hand; /metrics counts the repairs; the foreign
    virtual server made before the agent started stays byte-identical."""
    vip = SERVICES["drift"][0]
    env.assert_foreign_intact()
    before = scrape("ipvsctl_drift_repairs_total") or 0.0
    env.ipvsadm("-D", "-t", f"{vip}:80")
    deleted = time.monotonic()
    env.wait_weights("drift", {"be3": 1, "be4": 1}, timeout=SYNC_PERIOD + BOUND)
    repaired = time.monotonic() - deleted
    assert set(client.requests(vip, 80, 4)) == {"be3", "be4"}
    env.ipvsadm("-e", "-t", f"{vip}:80", "-r", f"{BE['be3']}:8080", "-m", "-w", "5")
    edited = time.monotonic()
    env.wait_weights("drift", {"be3": 1, "be4": 1}, timeout=SYNC_PERIOD + BOUND)
    reweighted = time.monotonic() - edited
    measured(record_property, capsys, "drift: deleted virtual server->back", repaired)
    measured(record_property, capsys, "drift: re-weighted real server->restored", reweighted)
    assert repaired < SYNC_PERIOD + 10 and reweighted < SYNC_PERIOD + 10, (repaired, reweighted)
    # Put back: the virtual server and its two real servers, then the one real server's weight.
    after = wait_for(lambda: (v := scrape("ipvsctl_drift_repairs_total") or 0.0) >= before + 4 and v, BOUND,
                     "ipvsctl_drift_repairs_total to count 4 repairs",
                     describe=lambda: f"{scrape('ipvsctl_drift_repairs_total')} (was {before}); agent log ends:\n"
                                      f"{env.agent.tail(60)}")  # fmt: skip
    record_property("drift repairs counted", after - before)
    assert after - before == 4, (before, after)
    env.assert_foreign_intact()


def test_malformed_file_keeps_last_good_content(env: Env, client: Client) -> None:
    """Invalid YAML written over a good file leaves its last good content in force (virtual server
    kept through a full resync, traffic flows) and the agent logs an error naming the file; fixing
    the file applies the new content."""
    vip = SERVICES["bad"][0]
    path = env.manifests / "bad.yaml"
    mark = len(env.agent.events())
    write_atomically(path, "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: t\nspec: ][\n")
    error = env.agent.wait_event(lambda e: e.get("level") == "error" and e.get("file") == str(path), BOUND,
                                 "an error naming bad.yaml", after=mark)  # fmt: skip
    assert "bad.yaml" in str(error)
    at = env.agent.events().index(error)
    env.agent.wait_event(lambda e: e.get("event") == "sync" and e.get("kind") == "full", SYNC_PERIOD + BOUND,
                         "a full resync after the error", after=at)  # fmt: skip
    assert env.weights("bad") == {"be1": 1}
    assert client.requests(vip, 80, 3) == ["be1"] * 3
    env.write("bad", {BE["be1"]: True, BE["be2"]: True})
    env.wait_weights("bad", {"be1": 1, "be2": 1})
    assert set(client.requests(vip, 80, 4)) == {"be1", "be2"}


def test_restart_on_unchanged_state_writes_nothing(
    env: Env, client: Client, record_property: Callable[[str, object], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM stops the agent with exit 0 leaving IPVS as it is; the next start's first full sync
    makes no kernel operation, the virtual server's connection counter keeps counting from where it
    was (nothing was recreated), and a client looping through the restart sees no failure."""
    vip = SERVICES["steady"][0]
    # Nothing may be draining, or the first sync after the restart would legitimately delete it.
    wait_for(lambda: scrape("ipvsctl_draining_real_servers") == 0, DRAIN_TIMEOUT + BOUND, "no draining real server")
    assert Counter(client.requests(vip, 80, 4)) == {"be1": 2, "be2": 2}
    before = wait_for(lambda: env.ipvsadm.connections(vip, 80) >= 4 and env.ipvsadm.connections(vip, 80), BOUND,
                      "the connection counter to show 4", interval=0.5)  # fmt: skip
    assert before == 4

    answers: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            answers.extend(client.requests(vip, 80, 2))

    looper = threading.Thread(target=loop, name="client-loop", daemon=True)
    looper.start()
    try:
        wait_for(lambda: len(answers) >= 2, BOUND, "the client loop's first answers")
        code = env.agent.stop()
        assert code == 0, f"agent exit status {code} on SIGTERM; its log ends:\n{env.agent.tail()}"
        stopped = time.monotonic()
        during = len(answers)
        first = env.agent.start()
        restarted = time.monotonic() - stopped
        wait_for(lambda: len(answers) >= during + 4, BOUND, "client answers after the restart")
    finally:
        stop.set()
        looper.join(60)
    measured(record_property, capsys, "restart: SIGTERM exit->first full sync of the new agent", restarted)
    assert first["operations"] == 0 and first["repairs"] == 0, first
    assert all(a in ("be1", "be2") for a in answers), Counter(answers)
    operations = sum(v for n, _, v in parse_metrics(http_get("/metrics")[1]) if n == "ipvsctl_operations_total")
    assert operations == 0, "the restarted agent wrote to the kernel"
    want = before + len(answers)
    after = wait_for(lambda: env.ipvsadm.connections(vip, 80) >= want and env.ipvsadm.connections(vip, 80), BOUND,
                     f"the connection counter to reach {want}", interval=0.5)  # fmt: skip
    record_property("restart: connections before/loop/after", f"{before}/{len(answers)}/{after}")
    with capsys.disabled():
        print(f"\nMEASURED restart: counter {before} before, {len(answers)} loop requests "
              f"({during} before the SIGTERM), {after} after; first sync {first}", flush=True)  # fmt: skip
    assert after == want
    env.assert_foreign_intact()
