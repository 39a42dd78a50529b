"""Reliability against a real kernel: kill -9 anywhere, foreign rules (keepalived's and ipvsadm's),
tampering by hand, and two ipvsctl processes at once.

What "nothing lost, nothing touched" means here, checked after every scenario:
- the foreign part of `ipvsadm -Sn` is line for line what it was before ipvsctl ran;
- the owned part is exactly the desired state (virtual servers, schedulers, real servers, weights);
- after `ipvsctl cleanup`, nothing of ipvsctl's is left: no virtual server, no address on ipvsctl0
  (an object created but never recorded would survive cleanup: that is a leak).

These tests start the installed console script as a child process (a SIGKILL needs a process);
Python starts slowly in the VM, so each scenario is built to need as few starts as it can.
"""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_support import (
    AgentProcess,
    Ipvsadm,
    ipvsctl_command,
    metric,
    parse_metrics,
    wait_for,
    write_atomically,
)
from netns import NODE_CLIENT_V4, Client, Topology, run
from typer.testing import CliRunner

from ipvsctl import cli

BE = {"be1": "203.0.113.11", "be2": "203.0.113.12", "be3": "203.0.113.13", "be4": "203.0.113.14"}
CRASH_SERVICES = 1000
CRASH_POINTS = 20
RUN_TIMEOUT = 600.0


def services_yaml(names_vips: list[tuple[str, str]], backends: list[str], port: int = 80) -> str:
    """Services (ClusterIP, TCP ``port`` → 8080) with one EndpointSlice each, all endpoints ready."""
    endpoints = "".join(f'\n  - addresses: ["{a}"]\n    conditions: {{ready: true}}' for a in backends)
    docs = []
    for name, vip in names_vips:
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: r}}\n"
            f'spec:\n  clusterIP: "{vip}"\n  ports: [{{name: http, protocol: TCP, port: {port}, targetPort: 8080}}]\n'
            f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata: {{name: {name}-1, namespace: r, labels: {{kubernetes.io/service-name: {name}}}}}\n"
            f"addressType: IPv4\nports: [{{name: http, protocol: TCP, port: 8080}}]\nendpoints:{endpoints}\n"
        )
    return "---\n".join(docs)


def rules(ipvsadm: Ipvsadm) -> list[str]:
    return sorted(line for line in ipvsadm("-Sn").stdout.splitlines() if line.strip())


def bound_addresses(prefix: str) -> list[str]:
    """Addresses starting with ``prefix`` on ipvsctl's dummy interface."""
    out = run("ip", "-o", "addr", "show", "dev", "ipvsctl0", check=False)
    found = (line.split()[3] for line in out.splitlines() if line.split()[2:3] in (["inet"], ["inet6"]))
    return sorted(a for a in found if a.startswith(prefix))


def proc_ipvs() -> str:
    """The kernel's IPVS table as /proc/net/ip_vs shows it (cheap to read: no Python netlink)."""
    with open("/proc/net/ip_vs") as f:
        return f.read()


def weights(ipvs: Ipvsadm, vip: str, port: int = 80) -> dict[str, int] | None:
    reals = ipvs.reals(vip, port)
    return None if reals is None else {address: w for address, (w, _, _) in reals.items()}


def proc_ipvs_lines() -> int:
    """Virtual and real servers in the kernel (lines of /proc/net/ip_vs after its header)."""
    with open("/proc/net/ip_vs") as f:
        return max(sum(1 for _ in f) - 3, 0)


def lock_held(state: Path) -> bool:
    """Whether some process holds the state directory's lock (flock), asked without waiting."""
    with open(state / "lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


class Cli:
    """The installed `ipvsctl` with a private state directory, as child processes."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def argv(self, *args: str) -> list[str]:
        return [*ipvsctl_command(), "--state-dir", str(self.state), *args]

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


@pytest.fixture
def ipvs(topology: Topology, ipvsadm: str) -> Ipvsadm:
    return Ipvsadm(ipvsadm)


@pytest.fixture
def states(tmp_path: Path) -> Iterator[list[Path]]:
    """State directories a test used: whatever the test left (it may fail half-way) is removed
    afterwards with `ipvsctl cleanup` on each, in-process (no slow interpreter start)."""
    used: list[Path] = []
    yield used
    for state in used:
        if (state / "owned.json").exists() or (state / "owned.journal").exists():
            result = CliRunner().invoke(cli.app, ["--state-dir", str(state), "cleanup"])
            assert result.exit_code == 0, result.output


@pytest.fixture
def foreign(ipvs: Ipvsadm) -> Iterator[list[str]]:
    """Virtual servers made with ipvsadm before ipvsctl runs (one TCP with two real servers,
    one UDP without); they are removed with ipvsadm after the test. Yields their -Sn lines."""
    made = [
        ("-A", "-t", "10.239.0.1:80", "-s", "wrr"),
        ("-a", "-t", "10.239.0.1:80", "-r", f"{BE['be3']}:8080", "-m", "-w", "3"),
        ("-a", "-t", "10.239.0.1:80", "-r", f"{BE['be4']}:8080", "-m", "-w", "7"),
        ("-A", "-u", "10.239.0.2:53", "-s", "sh", "-p", "120"),
    ]
    for args in made:
        ipvs(*args)
    yield [line for line in rules(ipvs) if "10.239.0." in line]
    ipvs("-D", "-t", "10.239.0.1:80", check=False)
    ipvs("-D", "-u", "10.239.0.2:53", check=False)


def cleanup_leaves_nothing(cli_: Cli, ipvs: Ipvsadm, prefix: str, foreign: list[str]) -> None:
    """`ipvsctl cleanup` exits 0 and leaves no virtual server or address under ``prefix`` (an object
    created but never recorded would survive it: a leak); the foreign virtual servers stay."""
    cleaned = cli_("cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not [line for line in rules(ipvs) if prefix in line], "cleanup left a virtual server: a leak"
    assert bound_addresses(prefix) == [], "addresses leaked on ipvsctl0"
    assert [line for line in rules(ipvs) if "10.239.0." in line] == foreign


def test_kill_9_anywhere_in_apply_loses_and_leaks_nothing(
    ipvs: Ipvsadm,
    foreign: list[str],
    client: Client,
    states: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ipvsctl apply` SIGKILLed at 20 or more points while it creates 1,000 Services, moves all of
    them to other backends, deletes half of them and creates them again; each next run resumes
    from what the last one left. Half of the kills land before a run's first kernel change
    (start-up, parsing, the kernel dump, binding addresses, writing the intent), half as soon as
    a kernel change shows (between netlink batches, in the outcome write). At the end the kernel
    is exactly the desired state (diff: nothing to do), the record was always usable (no exit
    6), the foreign virtual servers are untouched, and cleanup leaves no virtual server or address."""
    names = [(f"s{i}", f"10.240.{i // 250}.{i % 250 + 1}") for i in range(CRASH_SERVICES)]
    phases = [
        ("create", CRASH_SERVICES, ("be1", "be2")),
        ("move", CRASH_SERVICES, ("be3", "be4")),
        ("delete-half", CRASH_SERVICES // 2, ("be3", "be4")),
        ("recreate", CRASH_SERVICES, ("be1", "be2")),
    ]
    manifest = tmp_path / "many.yaml"
    states.append(tmp_path / "state")
    cli_ = Cli(tmp_path / "state")
    apply_args = ("apply", "-f", str(manifest), "--node-ip", NODE_CLIENT_V4, "--no-sysctls")
    first_change = 0.0  # seconds from a run's start to its first kernel change (the shortest measured)
    kills: list[str] = []
    attempt = 0  # runs started: odd ones are killed at a time, even ones at their first kernel change
    # Phases repeat until there are enough kills: how many land in one visit depends on timing (a
    # run that finishes before its kill ends the visit), so a fixed number of visits can fall short.
    for phase, count, backends in phases * 8:
        if len(kills) >= CRASH_POINTS:
            break
        manifest.write_text(services_yaml(names[:count], [BE[b] for b in backends]))
        wanted = (count, backends)
        done = False
        visit = 0  # kills in this visit of the phase
        while not done and visit < 8:
            before = proc_ipvs()
            proc = cli_.start(*apply_args)
            started = time.monotonic()
            attempt += 1
            try:
                # Alternating by run, not by kill: a timed run that finished first would otherwise
                # make every later run a timed one, and a phase with less to do never be killed.
                if attempt % 2 == 0 and first_change:
                    at = started + first_change * (0.35, 0.6, 0.8, 0.9, 0.97)[attempt // 2 % 5]
                    wait_for(lambda p=proc, a=at: time.monotonic() >= a or p.poll() is not None, RUN_TIMEOUT,
                             "the kill time")  # fmt: skip
                else:
                    deadline = started + RUN_TIMEOUT
                    # Poll without pausing: the whole kernel part of a run lasts a fraction of a second.
                    while proc.poll() is None and proc_ipvs() == before and time.monotonic() < deadline:
                        pass
                    if proc.poll() is None:
                        took = time.monotonic() - started
                        first_change = min(first_change, took) if first_change else took
            finally:
                proc.send_signal(signal.SIGKILL)
                _, err = proc.communicate()
            if proc.returncode == 0:
                done = True  # this run finished its phase before the kill
                continue
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, err)
            kills.append(f"{phase}@{time.monotonic() - started:.1f}s")
            visit += 1
        if not done:
            resumed = cli_(*apply_args)
            assert resumed.returncode == 0, f"after {phase}: {resumed.stderr}"
    assert len(kills) >= CRASH_POINTS, ", ".join(kills)
    diff = cli_("diff", "-f", str(manifest), "--node-ip", NODE_CLIENT_V4)
    assert diff.returncode == 0, diff.stdout
    count, backends = wanted
    owned = [line for line in rules(ipvs) if "10.240." in line]
    assert len(owned) == 3 * count, (len(owned), 3 * count)
    assert sum(line.startswith("-A -t 10.240.") and line.endswith("-s rr") for line in owned) == count
    assert sum(line.startswith("-a -t 10.240.") and line.endswith("-m -w 1") for line in owned) == 2 * count
    assert all(BE[backends[0]] in line or BE[backends[1]] in line for line in owned if line.startswith("-a"))
    assert len(bound_addresses("10.240.")) == count
    assert [line for line in rules(ipvs) if "10.239.0." in line] == foreign
    assert sorted(client.requests("10.240.1.250", 80, 4)) == sorted(backends * 2)
    cleanup_leaves_nothing(cli_, ipvs, "10.240.", foreign)
    with capsys.disabled():
        print(f"\nMEASURED apply kill -9 points (phase@time after start): {' '.join(kills)}", flush=True)


ROW_SERVICES = 1000
ROW_ENDPOINTS = 10
ROW_KILLS = 8


def endpoint_sets() -> tuple[list[str], list[str]]:
    """Two sets of ten endpoint addresses: be1 and be2 (they answer) and eight that never do."""
    first = [BE["be1"], BE["be2"], *(f"198.18.0.{i}" for i in range(1, ROW_ENDPOINTS - 1))]
    second = [BE["be3"], BE["be4"], *(f"198.18.0.{i}" for i in range(101, 100 + ROW_ENDPOINTS - 1))]
    return first, second


def survivors(manifests: Path) -> list[int]:
    """Processes whose command line names ``manifests`` (an apply, or a reader child it forked)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if str(manifests).encode() in cmdline and stat[0] != "Z":
            found.append(int(entry.name))
    return found


def write_per_service(directory: Path, names_vips: list[tuple[str, str]], backends: list[str]) -> None:
    """One file per Service (enough files that apply reads them on two CPUs, with a forked child)."""
    for old in directory.glob("*.yaml"):
        old.unlink()
    for name, vip in names_vips:
        write_atomically(directory / f"{name}.yaml", services_yaml([(name, vip)], backends))


def test_kill_9_many_times_in_a_row_then_one_clean_apply_converges(
    ipvs: Ipvsadm, foreign: list[str], states: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ipvsctl apply` of 1,000 Services x 10 endpoints (one file each) is SIGKILLed 8 times in a
    row, with no clean run in between, while the input switches between two endpoint sets and
    half of the Services; kills land in start-up and reading, at the first kernel change, in
    the middle of programming and near its end. After each kill the write lock is free at once
    (no reader child outlives its parent holding it). Then one clean apply exits 0 and the
    kernel is exactly the manifests: every virtual server and real server, nothing more, the
    foreign virtual servers untouched; diff finds nothing and cleanup leaves nothing."""
    first, second = endpoint_sets()
    names = [(f"k{i}", f"10.241.{i // 250}.{i % 250 + 1}") for i in range(ROW_SERVICES)]
    inputs = [(names, first), (names, second), (names[: ROW_SERVICES // 2], first)]
    manifests = tmp_path / "m"
    manifests.mkdir()
    state = tmp_path / "state"
    states.append(state)
    cli_ = Cli(state)
    apply_args = ("apply", "-f", str(manifests), "--node-ip", NODE_CLIENT_V4, "--no-sysctls")
    first_change = 0.0  # seconds from start to the first kernel change, measured by the first kill
    kills: list[str] = []
    for n in range(ROW_KILLS):
        chosen, backends = inputs[n % len(inputs)]
        write_per_service(manifests, chosen, backends)
        before = proc_ipvs()
        proc = cli_.start(*apply_args)
        started = time.monotonic()
        mode = "first-change" if n == 0 else ("early", "programming", "first-change", "late")[n % 4]
        try:
            if mode == "early":  # start-up, reading the files, the kernel dump, planning
                at = started + first_change * (0.2, 0.5, 0.8)[n // 4 % 3]
                wait_for(
                    lambda p=proc, a=at: time.monotonic() >= a or p.poll() is not None, RUN_TIMEOUT, "the kill time"
                )
            else:
                deadline = started + RUN_TIMEOUT
                while proc.poll() is None and proc_ipvs() == before and time.monotonic() < deadline:
                    pass  # no pause: programming lasts about a second in the VM
                if n == 0:
                    first_change = time.monotonic() - started
                if mode in ("programming", "late"):
                    time.sleep(0.3 if mode == "programming" else 1.0)
        finally:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
        killed = time.monotonic()
        outcome = "killed" if proc.returncode == -signal.SIGKILL else f"finished({proc.returncode})"
        assert proc.returncode in (-signal.SIGKILL, 0), (proc.returncode, err)
        kills.append(f"{mode}@{killed - started:.1f}s:{outcome}:{proc_ipvs_lines()}")
        # Nothing left behind holds the lock: the next run must not wait for a dead one's child.
        # (A reader child that outlived its parent held it for the rest of its files: seconds.)
        wait_for(lambda: not lock_held(state) and not survivors(manifests), 2, "the lock free after the kill",
                 describe=lambda: f"processes still reading {manifests}: {survivors(manifests)}")  # fmt: skip
    assert sum(":killed:" in k for k in kills) >= ROW_KILLS - 2, kills
    write_per_service(manifests, names, first)
    clean = cli_(*apply_args)
    assert clean.returncode == 0, f"after kills {' '.join(kills)}: {clean.stderr}"
    want = sorted(
        [f"-A -t {vip}:80 -s rr" for _, vip in names]
        + [f"-a -t {vip}:80 -r {b}:8080 -m -w 1" for _, vip in names for b in first]
    )
    got = [line for line in rules(ipvs) if "10.241." in line]
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, f"missing {len(missing)} {missing[:5]}, extra {len(extra)} {extra[:5]}"
    assert len(bound_addresses("10.241.")) == ROW_SERVICES
    assert [line for line in rules(ipvs) if "10.239.0." in line] == foreign
    diff = cli_("diff", "-f", str(manifests), "--node-ip", NODE_CLIENT_V4)
    assert diff.returncode == 0, diff.stdout
    cleanup_leaves_nothing(cli_, ipvs, "10.241.", foreign)
    with capsys.disabled():
        print(f"\nMEASURED apply kills in a row (mode@time:outcome:objects): {' '.join(kills)}", flush=True)


KEEPALIVED_CONF = """\
global_defs {{
    router_id ipvsctl-test
}}
virtual_server 10.238.0.1 80 {{
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server {be1} 8080 {{
        weight 2
    }}
    real_server {be2} 8080 {{
        weight 5
    }}
}}
virtual_server 10.238.0.9 80 {{
    lb_algo lc
    lb_kind NAT
    protocol TCP
    real_server {be3} 8080 {{
        weight 1
    }}
}}
"""


@pytest.fixture
def keepalived(ipvs: Ipvsadm, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """keepalived's checker process (no VRRP) programming two virtual servers; stopped after."""
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF.format(**BE))
    log = (tmp_path / "keepalived.log").open("wb")
    proc = subprocess.Popen(
        ["keepalived", "--check", "--dont-fork", "--dont-respawn", "--log-console", "--no-syslog", "-f", str(conf),
         "-p", str(tmp_path / "k.pid"), "-c", str(tmp_path / "c.pid")],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        wait_for(lambda: len([line for line in rules(ipvs) if "10.238.0." in line]) == 5 or proc.poll() is not None,
                 120, "keepalived's virtual servers")  # fmt: skip
        assert proc.poll() is None, (tmp_path / "keepalived.log").read_text(errors="replace")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_keepalived_and_ipvsadm_rules_survive_apply_agent_tampering_and_cleanup(
    ipvs: Ipvsadm,
    foreign: list[str],
    keepalived: subprocess.Popen[bytes],
    client: Client,
    states: list[Path],
    tmp_path: Path,
) -> None:
    """With keepalived running its own virtual servers and more made with ipvsadm, one at a
    VIP:port ipvsctl is asked for too: apply reports the clash (exit 4) and programs the rest;
    the agent does the same, puts back its own virtual server deleted, re-weighted and
    re-scheduled by hand (and counts the repairs); cleanup removes only its own. keepalived's
    and ipvsadm's rules are line for line the same before and after."""
    theirs_before = [line for line in rules(ipvs) if "10.238.0." in line or "10.239.0." in line]
    manifests = tmp_path / "m"
    manifests.mkdir()
    write_atomically(manifests / "clash.yaml", services_yaml([("clash", "10.238.0.9")], [BE["be4"]]))
    write_atomically(manifests / "mine.yaml", services_yaml([("mine", "10.237.0.1")], [BE["be1"], BE["be2"]]))

    def theirs() -> list[str]:
        return [line for line in rules(ipvs) if "10.238.0." in line or "10.239.0." in line]

    states += [tmp_path / "state", tmp_path / "agent-state"]
    cli = Cli(tmp_path / "state")
    applied = cli("apply", "-f", str(manifests), "--node-ip", NODE_CLIENT_V4, "--no-sysctls")
    assert applied.returncode == 4, applied.stderr
    assert "10.238.0.9:80" in applied.stderr and "r/clash" in applied.stderr, applied.stderr
    assert sorted(client.requests("10.237.0.1", 80, 4)) == ["be1", "be1", "be2", "be2"]
    assert theirs() == theirs_before
    assert cli("cleanup").returncode == 0
    assert theirs() == theirs_before
    assert ipvs.reals("10.237.0.1", 80) is None

    agent = AgentProcess(tmp_path / "agent-state", manifests, tmp_path)
    agent.argv = lambda: [  # type: ignore[method-assign]
        *ipvsctl_command(), "--log-format", "json", "--state-dir", str(agent.state_dir), "agent",
        "--manifests", str(manifests), "--node-ip", NODE_CLIENT_V4, "--no-sysctls", "--min-sync-period", "0.2s",
        "--sync-period", "2s", "--metrics-address", "127.0.0.1:9843",
    ]  # fmt: skip
    try:
        agent.start()
        agent.wait_event(lambda e: e.get("event") == "conflict" and "10.238.0.9" in str(e.get("problem")), 60,
                         "the agent to report the clash")  # fmt: skip
        mine = {BE["be1"]: 1, BE["be2"]: 1}
        wait_for(lambda: weights(ipvs, "10.237.0.1") == mine, 60, "the agent to program its own")

        def repairs() -> float:
            from agent_support import http_get

            return metric(parse_metrics(http_get("/metrics", "127.0.0.1:9843")[1]), "ipvsctl_drift_repairs_total") or 0

        before = repairs()
        ipvs("-D", "-t", "10.237.0.1:80")
        wait_for(lambda: ipvs.reals("10.237.0.1", 80) is not None and len(ipvs.reals("10.237.0.1", 80) or {}) == 2,
                 60, "the deleted virtual server back")  # fmt: skip
        ipvs("-e", "-t", "10.237.0.1:80", "-r", f"{BE['be1']}:8080", "-m", "-w", "9")
        ipvs("-E", "-t", "10.237.0.1:80", "-s", "wlc")
        wait_for(lambda: ipvs.saved("-A -t 10.237.0.1:80") == ["-A -t 10.237.0.1:80 -s rr"]
                 and weights(ipvs, "10.237.0.1") == mine, 60, "weight and scheduler put back")  # fmt: skip
        # Put back: the virtual server and its two real servers, a weight, a scheduler.
        wait_for(lambda: repairs() >= before + 5, 30, "five repairs counted",
                 describe=lambda: f"{repairs() - before}; agent log ends:\n{agent.tail(40)}")  # fmt: skip
        assert repairs() - before == 5
        assert theirs() == theirs_before
    finally:
        code = agent.stop()
    assert code == 0, agent.tail()
    assert theirs() == theirs_before
    cleaned = Cli(tmp_path / "agent-state")("cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert theirs() == theirs_before
    assert ipvs.reals("10.237.0.1", 80) is None
    assert bound_addresses("10.23") == []


def test_two_ipvsctl_at_once_lock_and_converge(
    ipvs: Ipvsadm, foreign: list[str], states: list[Path], tmp_path: Path
) -> None:
    """While one apply is in the middle of programming (held there with SIGSTOP), a second with
    --lock-timeout 0 fails at once with exit 6 naming the lock, and a third that may wait does;
    once the first finishes the third applies its own input, and the kernel ends in the third's
    desired state."""
    first = tmp_path / "first.yaml"
    # Enough Services that programming them takes seconds, not one poll's time: binds and IPVS
    # requests run side by side, and 300 Services were sometimes all done before the SIGSTOP.
    first.write_text(services_yaml([(f"a{i}", f"10.236.{i // 250}.{i % 250 + 1}") for i in range(2000)], [BE["be1"]]))
    last = tmp_path / "last.yaml"
    last.write_text(services_yaml([("z", "10.236.9.1")], [BE["be2"]]))
    states.append(tmp_path / "state")
    cli = Cli(tmp_path / "state")
    common = ("--node-ip", NODE_CLIENT_V4, "--no-sysctls")
    base = proc_ipvs_lines()
    one = cli.start("apply", "-f", str(first), *common)
    three: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: proc_ipvs_lines() > base or one.poll() is not None, RUN_TIMEOUT, "the first to program")
        one.send_signal(signal.SIGSTOP)
        assert one.poll() is None, "the first apply finished before it could be paused"
        assert lock_held(tmp_path / "state"), "the first apply was paused after it let go of the lock"
        three = cli.start("apply", "-f", str(last), *common, "--lock-timeout", str(RUN_TIMEOUT))
        two = cli("apply", "-f", str(last), *common, "--lock-timeout", "0")
        assert two.returncode == 6, (two.returncode, two.stderr)
        assert "lock" in two.stderr and "Traceback" not in two.stderr, two.stderr
        assert three.poll() is None, "the third did not wait for the lock"
        paused = proc_ipvs_lines()
        one.send_signal(signal.SIGCONT)
        _, err1 = one.communicate(timeout=RUN_TIMEOUT)
        assert one.returncode == 0, err1
        assert proc_ipvs_lines() >= paused
        _, err3 = three.communicate(timeout=RUN_TIMEOUT)
        assert three.returncode == 0, err3
    finally:
        for proc in (one, three):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.communicate()
    # The third ran after the first: its input, which lacks the first's Services, is what the
    # kernel holds now.
    owned = [line for line in rules(ipvs) if "10.236." in line]
    assert owned == sorted(["-A -t 10.236.9.1:80 -s rr", f"-a -t 10.236.9.1:80 -r {BE['be2']}:8080 -m -w 1"]), owned
    assert [line for line in rules(ipvs) if "10.239.0." in line] == foreign
    assert cli("cleanup").returncode == 0
    assert bound_addresses("10.236.") == []


AGENT_SERVICES = 200


def test_kill_9_of_the_agent_mid_sync_loses_and_leaks_nothing(
    ipvs: Ipvsadm,
    foreign: list[str],
    client: Client,
    states: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The agent SIGKILLed 6 times: 3 times in its first full sync of 200 Services (right at its
    first kernel change, and twice before it), 3 times in partial syncs (as soon as a change to
    50 Services' files reached the kernel; a partial sync records a journal line). Each
    restart converges; at the end `ipvsctl diff` with the agent's record finds nothing to do,
    the foreign rules are untouched, and cleanup leaves nothing behind."""
    manifests = tmp_path / "m"
    manifests.mkdir()
    state = tmp_path / "state"
    states.append(state)
    vips = {f"g{i}": f"10.235.{i // 250}.{i % 250 + 1}" for i in range(AGENT_SERVICES)}

    def write(names: list[str], backends: list[str]) -> None:
        for name in names:
            write_atomically(manifests / f"{name}.yaml", services_yaml([(name, vips[name])], backends))

    write(list(vips), [BE["be1"], BE["be2"]])
    argv = [
        *ipvsctl_command(), "--log-format", "json", "--state-dir", str(state), "agent", "--manifests", str(manifests),
        "--node-ip", NODE_CLIENT_V4, "--no-sysctls", "--min-sync-period", "0s", "--sync-period", "30s",
        "--metrics-address", "",
    ]  # fmt: skip
    kills: list[str] = []
    logs: list[Path] = []

    def start() -> subprocess.Popen[bytes]:
        logs.append(tmp_path / f"agent-{len(logs) + 1}.log")
        with logs[-1].open("wb") as log:
            return subprocess.Popen(argv, stdout=log, stderr=log)

    def log_tail() -> str:
        return "agent log ends:\n" + "\n".join(logs[-1].read_text(errors="replace").splitlines()[-30:])

    def fully_synced() -> bool:
        # The agent's first full sync is logged after its signal handlers are in place. A
        # restarted agent can find its change already in the kernel (the killed one finished
        # it), so the kernel alone cannot tell that the new process is past start-up.
        for line in logs[-1].read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "sync" and entry.get("kind") == "full":
                return True
        return False

    def kill(proc: subprocess.Popen[bytes], what: str) -> None:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL, f"the agent ended by itself before the kill {what}: {log_tail()}"
        kills.append(f"{what}:{proc_ipvs_lines() - base}/{total}")

    base = proc_ipvs_lines()
    total = AGENT_SERVICES * 3
    proc = None
    try:
        # The first full sync: killed as soon as its first kernel change shows (the kernel part
        # of a sync lasts a fraction of a second), then twice before it gets there (in start-up
        # and in reading the manifests, timed from the first run).
        first_change = 0.0
        for fraction in (None, 0.5, 0.9):
            before = proc_ipvs_lines()
            proc = start()
            started = time.monotonic()
            if fraction is None:
                while proc.poll() is None and proc_ipvs_lines() == before and time.monotonic() < started + 300:
                    pass
                first_change = time.monotonic() - started
                kill(proc, "full@first-change")
            else:
                wait_for(lambda p=proc, a=started + first_change * fraction: time.monotonic() >= a
                         or p.poll() is not None, 300, "the kill time")  # fmt: skip
                kill(proc, f"full@{first_change * fraction:.1f}s")
        proc = start()
        wait_for(lambda: proc_ipvs_lines() - base == total or proc.poll() is not None, 300, "the full sync",
                 describe=log_tail)  # fmt: skip
        for round_, backends in enumerate(([BE["be2"], BE["be3"]], [BE["be3"], BE["be4"]], [BE["be1"], BE["be4"]])):
            names = [f"g{i}" for i in range(round_ * 50, round_ * 50 + 50)]
            write(names, backends)
            vip = vips[names[0]]
            wait_for(lambda v=vip, b=backends[1], p=proc: b in str(ipvs.reals(v, 80)) or p.poll() is not None,
                     300, "a partial sync to start", describe=log_tail)  # fmt: skip
            kill(proc, f"partial{round_ + 1}")
            proc = start()
            wait_for(lambda v=vips[names[-1]], b=backends, p=proc: set(ipvs.reals(v, 80) or {}) >= set(b)
                     or p.poll() is not None, 300, "the restarted agent to finish the change",
                     describe=log_tail)  # fmt: skip
            wait_for(lambda p=proc: fully_synced() or p.poll() is not None, 300, "the restarted agent's full sync",
                     describe=log_tail)  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_tail()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    cli = Cli(state)
    final = cli("diff", "-f", str(manifests), "--node-ip", NODE_CLIENT_V4)
    # Draining real servers (weight 0, deleted once idle) are the only difference allowed: the
    # agent was stopped before its drain checks ran. diff shows them as deletes, nothing else.
    changes = [line for line in final.stdout.splitlines() if line.strip()]
    assert final.returncode in (0, 1) and all(line.startswith("- delete real server") for line in changes), changes
    owned = [line for line in rules(ipvs) if "10.235." in line]
    assert sum(line.startswith("-A -t 10.235.") for line in owned) == AGENT_SERVICES
    assert sorted(client.requests(vips["g10"], 80, 4)) == ["be2", "be2", "be3", "be3"]
    assert [line for line in rules(ipvs) if "10.239.0." in line] == foreign
    cleaned = cli("cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not [line for line in rules(ipvs) if "10.235." in line], "cleanup left a virtual server: a leak"
    assert bound_addresses("10.235.") == [], "addresses leaked on ipvsctl0"
    assert [line for line in rules(ipvs) if "10.239.0." in line] == foreign
    with capsys.disabled():
        print(f"\nMEASURED agent kill -9 points (when:objects in the kernel): {' '.join(kills)}", flush=True)
