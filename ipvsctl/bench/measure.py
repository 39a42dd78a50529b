"""The measurements, run as root on a kernel with IPVS (the test VM): they empty and reload
IPVS, so never run them on a machine whose IPVS matters.

Every measure returns a ``Timing``; one that fails (a tool exits non-zero, the kernel ends up
different from the rule set, a wait times out) carries the reason instead of a time, and the
benchmark goes on with the next one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ipvsctl.agent.engine import Engine
from ipvsctl.agent.world import World
from ipvsctl.apply import observe
from ipvsctl.bench import rules
from ipvsctl.bench.results import Timing, failed
from ipvsctl.kernel.netlink import NetlinkKernel
from ipvsctl.model.ipvs import IPAddress, Protocol, ServiceKey, address_sort_key
from ipvsctl.plan import plan
from ipvsctl.settings import Settings
from ipvsctl.sources import directory
from ipvsctl.sources.files import load
from ipvsctl.state import Store
from ipvsctl.translate import translate

INTERFACE = "ipvsctl0"
METRICS_ADDRESS = "127.0.0.1:19842"
POLL = 0.02  # seconds between cheap kernel polls
EVENT_POLL = 0.01
SEEN = "_bench_seen"  # the key under which Agent stores when it read a log line
FLIPS = 11  # endpoint flips (and ipvsadm -e runs) per size: single flips range from 10 to 90 ms here


class BenchError(Exception):
    """The benchmark cannot go on (the kernel cannot be emptied, a tool is missing)."""


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def run(argv: Sequence[str], *, stdin: Any = None, timeout: float = 3600.0) -> subprocess.CompletedProcess[str]:
    stdin = subprocess.DEVNULL if stdin is None else stdin
    return subprocess.run(list(argv), stdin=stdin, capture_output=True, text=True, timeout=timeout, check=False)


def tail(text: str, lines: int = 8) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


# --- the kernel: empty it, read it --------------------------------------------------------------


def ip_vs_modules() -> list[str]:
    """Loaded IPVS modules, the schedulers (and other ip_vs_* helpers) before ip_vs itself."""
    names = [line.split()[0] for line in Path("/proc/modules").read_text().splitlines()]
    return sorted(n for n in names if n.startswith("ip_vs_")) + [n for n in names if n == "ip_vs"]


def reset_kernel() -> str:
    """Empty IPVS, remove ipvsctl's dummy interface, and reload ip_vs so the kernel's trash list
    of deleted destinations is empty too. Returns how it was done ("module reload", or a
    fallback to ``ipvsadm -C`` with the reason)."""
    run(["ipvsadm", "-C"])
    if Path(f"/sys/class/net/{INTERFACE}").exists():
        proc = run(["ip", "link", "del", INTERFACE])
        if proc.returncode != 0:
            raise BenchError(f"cannot delete {INTERFACE}: {tail(proc.stderr)}")
    how = "module reload"
    modules = ip_vs_modules()
    proc = run(["modprobe", "-r", *modules]) if modules else None
    if proc is not None and (proc.returncode != 0 or "ip_vs" in ip_vs_modules()):
        how = f"ipvsadm -C only (modprobe -r failed: {tail(proc.stderr, 2) or 'ip_vs still loaded'})"
    load_proc = run(["modprobe", "ip_vs"])
    if load_proc.returncode != 0:
        raise BenchError(f"modprobe ip_vs failed: {tail(load_proc.stderr)}")
    run(["ipvsadm", "-C"])
    left = saved_rules()
    if left:
        raise BenchError(f"IPVS is not empty after the reset: {left[:3]}")
    return how


def saved_rules() -> list[str]:
    """``ipvsadm -Sn``, sorted: the kernel's IPVS table in a form any two tools can be compared in."""
    proc = run(["ipvsadm", "-Sn"])
    if proc.returncode != 0:
        raise BenchError(f"ipvsadm -Sn failed: {tail(proc.stderr)}")
    return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())


def difference(expected: Sequence[str], actual: Sequence[str]) -> str | None:
    """None when the sorted rule lists are equal, else a short description of how they differ."""
    if list(expected) == list(actual):
        return None
    want, have = set(expected), set(actual)
    missing = sorted(want - have)
    extra = sorted(have - want)
    return (
        f"kernel state differs from the rule set ({len(actual)} lines, expected {len(expected)}; "
        f"{len(missing)} missing, e.g. {missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]})"
    )


def verified(timing: Timing, expected: Sequence[str], tool: str) -> Timing:
    """``timing`` if the kernel now holds exactly ``expected``; a failure otherwise (no time)."""
    if not timing.ok:
        return timing
    problem = difference(expected, saved_rules())
    if problem:
        say(f"MISMATCH after {tool}: {problem}; its time is not reported")
        return failed(f"{tool}: {problem}")
    return timing


# --- cold programming ---------------------------------------------------------------------------


def timed_process(
    argv: Sequence[str],
    *,
    stdin_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600.0,
) -> Timing:
    """Wall time of one process from start to exit; a failure if it exits non-zero."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        started = time.perf_counter()
        proc = subprocess.run(list(argv), stdin=stdin, capture_output=True, env=env, timeout=timeout, check=False)
        elapsed = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        return failed(f"{argv[0]} did not finish within {timeout:g} s")
    finally:
        if stdin_path:
            stdin.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        return failed(f"{' '.join(argv[:3])}… exited {proc.returncode}: {tail(err)}")
    return Timing((elapsed,))


def cold_ipvsctl(
    ipvsctl: Sequence[str], state_dir: Path, manifests: Path, env: Mapping[str, str], timeout: float = 3600.0
) -> tuple[Timing, Timing]:
    """``ipvsctl apply`` from start to exit, and the part of it spent programming the kernel
    (the ``program`` phase of its ``applied`` log line: netlink batches, addresses, record)."""
    argv = [*ipvsctl, "--log-format", "json", "--state-dir", str(state_dir), "apply", "-f", str(manifests)]
    try:
        started = time.perf_counter()
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=timeout, check=False
        )
        elapsed = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        problem = failed(f"ipvsctl apply did not finish within {timeout:g} s")
        return problem, problem
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        problem = failed(f"ipvsctl apply exited {proc.returncode}: {tail(err)}")
        return problem, problem
    return Timing((elapsed,)), applied_phase(err, "program")


def applied_phase(log: str, phase: str) -> Timing:
    """One phase's seconds from the ``applied`` line of ``ipvsctl apply``'s JSON log."""
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "applied":
                took = event.get("seconds", {}).get(phase)
                if isinstance(took, int | float):
                    return Timing((float(took),))
    return failed(f"no {phase!r} phase in ipvsctl apply's log: {tail(log)}")


def cold_ipvsadm(rules_file: Path) -> Timing:
    return timed_process(["ipvsadm", "-R"], stdin_path=rules_file)


def service_key(svc: rules.BenchService) -> ServiceKey:
    return ServiceKey(Protocol.TCP, ipaddress.ip_address(svc.vip), rules.PORT)


def cold_keepalived(
    config: Path,
    workdir: Path,
    services: Sequence[rules.BenchService],
    expected: Sequence[str],
    timeout: float = 3600.0,
) -> Timing:
    """keepalived's checker process from its start until every virtual server with all its real
    servers is in the kernel (the moment a poll sees it: up to one poll interval late); verified
    against ``expected`` before keepalived is stopped."""
    log_path = workdir / "keepalived.log"
    argv = [
        "keepalived", "--check", "--dont-fork", "--dont-respawn", "--log-console", "--no-syslog",
        "-f", str(config), "-p", str(workdir / "keepalived.pid"), "-c", str(workdir / "checkers.pid"),
    ]  # fmt: skip
    last = service_key(services[-1])
    want_reals = len(services[-1].endpoints)
    with NetlinkKernel(interface=INTERFACE) as kernel, open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            done_at: float | None = None
            while done_at is None:
                state = kernel.get(last)
                now = time.perf_counter()
                complete = state is not None and len(state.real_servers) >= want_reals
                if complete and len(kernel.dump(reals=False)) >= len(services):
                    done_at = now
                    break
                if proc.poll() is not None:
                    log_text = log_path.read_text("utf-8", "replace")
                    return failed(f"keepalived exited {proc.returncode} early: {tail(log_text)}")
                if now - started > timeout:
                    return failed(f"keepalived did not program {len(services)} virtual servers within {timeout:g} s")
                time.sleep(POLL)
            result = verified(Timing((done_at - started,)), expected, "keepalived")
        finally:
            stop_group(proc, 600.0)
    return result


def stop_group(proc: subprocess.Popen[Any], wait: float) -> int:
    """SIGTERM a process (and its group, if it leads one), then SIGKILL if it does not exit in time."""
    for sig, grace in ((signal.SIGTERM, wait), (signal.SIGKILL, 30.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig) if _leads_group(proc) else proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    return proc.wait()


def _leads_group(proc: subprocess.Popen[Any]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


# --- no-op resync -------------------------------------------------------------------------------


def list_ipvsadm(repeats: int = 3) -> Timing:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run(
            ["ipvsadm", "-Ln"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
        )
        samples.append(time.perf_counter() - started)
        if proc.returncode != 0:
            return failed(f"ipvsadm -Ln exited {proc.returncode}: {tail(proc.stderr.decode(errors='replace'))}")
    return Timing(tuple(samples))


def diff_process(
    ipvsctl: Sequence[str], state_dir: Path, manifests: Path, env: Mapping[str, str], repeats: int = 3
) -> Timing:
    """``ipvsctl diff`` as a whole process on the state the cold apply left, as a user or a
    monitoring script runs it: after that apply its caches are warm. Each run must exit 0 and
    print nothing (nothing to change)."""
    argv = [*ipvsctl, "--state-dir", str(state_dir), "diff", "-f", str(manifests)]
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=3600, check=False)
        samples.append(time.perf_counter() - started)
        if proc.returncode != 0 or proc.stdout:
            out = (proc.stdout + proc.stderr).decode(errors="replace")
            return failed(f"ipvsctl diff exited {proc.returncode} on an unchanged kernel: {tail(out)}")
    return Timing(tuple(samples))


def version_process(ipvsctl: Sequence[str], env: Mapping[str, str], repeats: int = 5) -> Timing:
    """``ipvsctl version`` as a whole process."""
    samples = []
    for _ in range(repeats):
        timing = timed_process([*ipvsctl, "version"], env=env, timeout=600)
        if not timing.ok:
            return timing
        samples.extend(timing.samples)
    return Timing(tuple(samples))


def dump_diff(state_dir: Path, manifests: Path, repeats: int = 3) -> tuple[Timing, Timing]:
    """ipvsctl's full read of the kernel and its diff against the desired state, two ways:

    - warm: the agent's own periodic full resync, ``Engine.resync()``, in process, on the
      engine's long-lived kernel connection and cache, as the agent runs it (the manifests are
      read and translated once, untimed, and the engine's first resync is not counted). A
      virtual server whose real servers the kernel reports unchanged (same digest) is not
      decoded again;
    - fresh: ``observe`` + ``plan`` on a new connection, which decodes every destination (the
      first resync after a start, or virtual servers carrying traffic, whose counters move).

    Both must find nothing to do."""
    with NetlinkKernel(interface=INTERFACE) as kernel:
        first = observe(kernel)
        node_ips: tuple[IPAddress, ...] = tuple(sorted(first.local, key=address_sort_key))
        del first
        settings = replace(Settings(state_dir=state_dir, set_sysctls=False), node_ips=node_ips)
        desired = translate(load([str(manifests)]), settings)
        if desired.problems:
            problem = failed(f"the manifests have problems: {desired.problems[0]}")
            return problem, problem
        owned = Store(state_dir).load()
        world = World()
        world.expect(directory.SOURCE)
        directory.DirectorySource([str(manifests)], world, threading.Event()).scan()
        world.mark_ready(directory.SOURCE)
        engine = Engine(kernel, Store(state_dir), settings, world)
        report = engine.resync(world.take().services, retranslate=True)

        def fresh_read() -> float | str:
            with NetlinkKernel(interface=INTERFACE) as k:
                started = time.perf_counter()
                observed = observe(k)
                p = plan(
                    desired,
                    observed,
                    owned,
                    adopt=settings.adopt,
                    now=time.time(),
                    drain_timeout=settings.drain_timeout,
                )
                took = time.perf_counter() - started
            if p.ops or p.conflicts:
                return (
                    f"plan() wants {len(p.ops)} operations and sees {len(p.conflicts)} conflicts on an unchanged kernel"
                )
            return took

        warm: list[float] = []
        fresh: list[float] = []
        for _ in range(repeats + 1):
            if report.ops or report.conflicts:
                why = f"the agent's resync made {len(report.ops)} operations and saw {len(report.conflicts)} conflicts"
                return failed(why), failed(why)
            if len(warm) == repeats:
                break
            report = engine.resync()
            warm.append(report.seconds)
            result = fresh_read()
            if isinstance(result, str):
                return failed(result), failed(result)
            fresh.append(result)
    return Timing(tuple(warm)), Timing(tuple(fresh))


# --- one endpoint flip --------------------------------------------------------------------------


def edit_ipvsadm(svc: rules.BenchService, repeats: int = FLIPS) -> Timing:
    """One ``ipvsadm -e`` process setting a real server's weight to 0 (restored after each, untimed)."""
    target = ["-t", f"{svc.vip}:{rules.PORT}", "-r", f"{svc.endpoints[0]}:{rules.TARGET_PORT}", "-m"]
    samples = []
    for _ in range(repeats):
        timing = timed_process(["ipvsadm", "-e", *target, "-w", "0"])
        if not timing.ok:
            return timing
        samples.extend(timing.samples)
        restore = run(["ipvsadm", "-e", *target, "-w", str(rules.WEIGHT)])
        if restore.returncode != 0:
            return failed(f"restoring the weight failed: {tail(restore.stderr)}")
    return Timing(tuple(samples))


def manifests_source(manifests: Path) -> list[str]:
    return ["--manifests", str(manifests)]


def kubernetes_source(kubeconfig: Path, node_name: str) -> list[str]:
    return ["--kubernetes", "--kubeconfig", str(kubeconfig), "--node-name", node_name]


class Agent:
    """``ipvsctl agent`` on a source (``manifests_source``, ``kubernetes_source``), its JSON log
    lines collected as they come, each event with the ``time.perf_counter()`` it was read at
    (``SEEN``); ``started`` is the ``perf_counter`` just before the process was started."""

    def __init__(
        self, ipvsctl: Sequence[str], state_dir: Path, source: Sequence[str], log_path: Path, env: Mapping[str, str]
    ) -> None:
        argv = [
            *ipvsctl, "--state-dir", str(state_dir), "--log-format", "json", "agent", *source,
            "--min-sync-period", "0", "--sync-period", "1h", "--metrics-address", METRICS_ADDRESS,
        ]  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._log.write(line)
            with self._lock:
                self.lines.append(line.rstrip("\n"))
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        event[SEEN] = time.perf_counter()
                        self.events.append(event)
        self._log.close()

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def since(self, after: int) -> list[dict[str, Any]]:
        """The events read after the first ``after``."""
        with self._lock:
            return self.events[after:]

    def find(self, match: Callable[[dict[str, Any]], bool], after: int = 0) -> dict[str, Any] | None:
        with self._lock:
            return next((e for e in self.events[after:] if match(e)), None)

    def tail(self, lines: int = 10) -> str:
        with self._lock:
            return " | ".join(self.lines[-lines:])

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str, after: int = 0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(match, after)
            if found is not None:
                return found
            if not self.running():
                raise BenchError(f"the agent exited {self.process.returncode} waiting for {what}: {self.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:g} s waiting for {what}: {self.tail()}")
            time.sleep(0.05)

    def peak_rss_bytes(self) -> int | None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def stop(self) -> int:
        code = stop_group(self.process, 120.0)
        self._reader.join(30)
        return code


def is_sync(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e.get("event") == "sync" and e.get("kind") == kind and (kind == "full" or e.get("operations", 0) >= 1)
    )


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one rename (a dot name without .yaml: the agent ignores the temporary)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Flip:
    """One endpoint of one Service turning not ready (``ready`` False) or ready again."""

    service: rules.BenchService
    endpoint: int
    ready: bool


def flip_plan(services: Sequence[rules.BenchService], count: int = FLIPS) -> list[Flip]:
    """``count`` flips of endpoint 0, alternating between Services a quarter, half and three quarters
    into the rule set: A down, B down, A up, B up, C down, …"""
    n = len(services)
    picks = list(dict.fromkeys(services[(n * k) // 4] for k in (1, 2, 3)))
    out: list[Flip] = []
    start = 0
    while len(out) < count:
        pair = dict.fromkeys((picks[start % len(picks)], picks[(start + 1) % len(picks)]))
        out.extend(Flip(svc, 0, ready) for ready in (False, True) for svc in pair)
        start += 2
    return out[:count]


def kernel_shows(kernel: NetlinkKernel, flip: Flip) -> bool:
    """True once the kernel holds the flip's outcome: the real server gone (or quiescent at weight 0)
    when it went not ready, present at full weight when it came back."""
    state = kernel.get(service_key(flip.service))
    if state is None:
        return False
    address = flip.service.endpoints[flip.endpoint]
    weights = {str(r.server.key.address): r.server.weight for r in state.real_servers}
    if flip.ready:
        return weights.get(address) == rules.WEIGHT
    return weights.get(address, 0) == 0


def wait_for_flip(
    agent: Agent, kernel: NetlinkKernel, flip: Flip, after: int, started: float, timeout: float
) -> tuple[float, dict[str, Any]]:
    """Poll until the kernel shows ``flip`` and the agent has logged its partial sync: the
    ``time.monotonic()`` the kernel was first seen changed, and that log line."""
    changed_at: float | None = None
    event: dict[str, Any] | None = None
    while changed_at is None or event is None:
        if changed_at is None and kernel_shows(kernel, flip):
            changed_at = time.monotonic()
        if event is None:
            event = agent.find(is_sync("partial"), after)
        if not agent.running():
            raise BenchError(f"the agent exited {agent.process.returncode} during a flip: {agent.tail()}")
        if time.monotonic() - started > timeout:
            what = "the kernel to change" if changed_at is None else "the agent's sync log line"
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}: {agent.tail()}")
        time.sleep(EVENT_POLL)
    return changed_at, event


def _say_flip(flip: Flip, event: dict[str, Any], took: float, what: str) -> None:
    state = "ready" if flip.ready else "not ready"
    say(
        f"  flip {flip.service.name} endpoint {flip.endpoint} → {state}: agent sync {event['seconds']:.4f} s, "
        f"{event.get('operations')} operations; {what} {took:.3f} s"
    )


def flips(
    agent: Agent, manifests: Path, services: Sequence[rules.BenchService], count: int = FLIPS, timeout: float = 600.0
) -> tuple[Timing, Timing]:
    """(the agent's own sync seconds, file write → kernel changed) for ``count`` endpoint flips."""
    sync_samples: list[float] = []
    e2e_samples: list[float] = []
    down: dict[str, set[int]] = {}
    with NetlinkKernel(interface=INTERFACE) as kernel:
        for flip in flip_plan(services, count):
            now_down = down.setdefault(flip.service.name, set())
            (now_down.discard if flip.ready else now_down.add)(flip.endpoint)
            after = agent.mark()
            started = time.monotonic()
            write_atomically(manifests / flip.service.file_name, rules.manifest(flip.service, now_down))
            changed_at, event = wait_for_flip(agent, kernel, flip, after, started, timeout)
            sync_samples.append(float(event["seconds"]))
            e2e_samples.append(changed_at - started)
            _say_flip(flip, event, changed_at - started, "end to end")
    return Timing(tuple(sync_samples)), Timing(tuple(e2e_samples))


# --- the agent's start, from either source ------------------------------------------------------


def kernel_complete(kernel: NetlinkKernel, services: Sequence[rules.BenchService]) -> bool:
    """A cheap first look: the last Service has all its real servers and there are N virtual servers."""
    state = kernel.get(service_key(services[-1]))
    if state is None or len(state.real_servers) < len(services[-1].endpoints):
        return False
    return len(kernel.dump(reals=False)) >= len(services)


def agent_start(
    agent: Agent,
    services: Sequence[rules.BenchService],
    expected: Sequence[str],
    timeout: float = 3600.0,
    settle: float = 60.0,
) -> tuple[Timing, Timing]:
    """(process start → kernel complete, the first full sync's own logged seconds).

    The agent logs a sync after the kernel has acknowledged every change of it, so after each
    sync line the kernel is checked (``kernel_complete``, then ``ipvsadm -Sn`` equal to
    ``expected``), and the first line after which it holds the whole rule set gives the time:
    the moment the benchmark read that line, less ``agent.started``. A kernel still not complete
    ``settle`` seconds after the last sync line (nothing more is coming) is a failure with the
    difference, not a time."""
    seen = 0
    first: dict[str, Any] | None = None
    problem = "no sync yet"
    last_sync = time.monotonic()
    deadline = time.monotonic() + timeout
    with NetlinkKernel(interface=INTERFACE) as kernel:
        while True:
            for event in agent.since(seen):
                seen += 1
                if event.get("event") != "sync":
                    continue
                last_sync = time.monotonic()
                if first is None and event.get("kind") == "full":
                    first = event
                if not kernel_complete(kernel, services):
                    problem = "the kernel does not hold every virtual server with all its real servers"
                    continue
                mismatch = difference(expected, saved_rules())
                if mismatch is None:
                    start = Timing((event[SEEN] - agent.started,))
                    sync = Timing((float(first["seconds"]),)) if first else failed("no full sync was logged")
                    return start, sync
                problem = mismatch
            if not agent.running():
                raise BenchError(f"the agent exited {agent.process.returncode} while starting: {agent.tail()}")
            now = time.monotonic()
            if first is not None and now - last_sync > settle:
                why = f"{settle:g} s after its last sync: {problem}"
                say(f"MISMATCH after the agent's start: {why}; its time is not reported")
                return failed(why), failed(why)
            if now > deadline:
                why = f"the agent did not complete the kernel within {timeout:g} s ({problem}): {agent.tail()}"
                return failed(why), failed(why)
            time.sleep(0.05)


def since_start(agent: Agent, event: str) -> Timing:
    """Process start → the first log line ``event``, as the benchmark read it."""
    found = agent.find(lambda e: e.get("event") == event)
    if found is None:
        return failed(f"the agent never logged {event!r}")
    return Timing((found[SEEN] - agent.started,))


# --- the Kubernetes source: the test API server ---------------------------------------------------


def write_kubeconfig(path: Path, url: str) -> None:
    """A kubeconfig whose only cluster is the test API server (plain HTTP on 127.0.0.1, no user)."""
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: bench, cluster: {{server: '{url}'}}}}]\n"
        "contexts: [{name: bench, context: {cluster: bench}}]\n"
        "current-context: bench\n"
    )


class ApiServer:
    """``python -m ipvsctl.bench.apiserver N`` (tests/fakeapi.py holding the rule set), driven
    one JSON line at a time over its stdin and stdout."""

    def __init__(self, count: int, env: Mapping[str, str], log_path: Path, timeout: float = 3600.0) -> None:
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ipvsctl.bench.apiserver", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(env),
        )
        hello = self._answer(timeout, "the test API server to load the rule set")
        self.url = str(hello["url"])

    def _answer(self, timeout: float, what: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            code = self.process.poll()
            raise BenchError(f"no answer from the test API server waiting for {what} (exit status {code})")
        answer = json.loads(line)
        if not isinstance(answer, dict) or "error" in answer:
            raise BenchError(f"the test API server: {answer}")
        return answer

    def _ask(self, command: dict[str, Any], what: str, timeout: float = 600.0) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()
        return self._answer(timeout, what)

    def change_slice(self, index: int, not_ready: Sequence[int]) -> float:
        """Service ``index``'s EndpointSlice with ``not_ready`` endpoints; the ``time.monotonic()``
        at which the server held it."""
        return float(self._ask({"slice": index, "not_ready": list(not_ready)}, "an EndpointSlice change")["applied"])

    def requests(self) -> dict[str, dict[str, int]]:
        return dict(self._ask({"requests": True}, "its request counts")["requests"])

    def stop(self) -> int:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            code = stop_group(self.process, 10.0)
        self._log.close()
        return code


def describe_lists(requests: Mapping[str, Mapping[str, int]], paths: Mapping[str, str]) -> tuple[str, str | None]:
    """A line on the agent's LIST requests per resource, and a problem if any LIST lacked ``limit``
    (the agent must list in chunks, as against a real API server)."""
    parts: list[str] = []
    problem = None
    for name, path in paths.items():
        counts = requests.get(path, {})
        lists, limited = counts.get("list", 0), counts.get("limit", 0)
        parts.append(
            f"{name}: {lists} LIST requests ({limited} with limit, {counts.get('continue', 0)} with continue), "
            f"{counts.get('watch', 0)} WATCH"
        )
        if lists == 0 or limited < lists:
            problem = f"{name}: {lists - limited} of {lists} LIST requests without limit"
    return "; ".join(parts), problem


def kube_flips(
    agent: Agent, api: ApiServer, services: Sequence[rules.BenchService], count: int = FLIPS, timeout: float = 600.0
) -> tuple[Timing, Timing]:
    """(the agent's own sync seconds, the API server holds the change → the kernel shows it) for
    ``count`` EndpointSlice changes, each turning one endpoint not ready or ready again."""
    index = {svc.name: i for i, svc in enumerate(services)}
    sync_samples: list[float] = []
    e2e_samples: list[float] = []
    down: dict[str, set[int]] = {}
    with NetlinkKernel(interface=INTERFACE) as kernel:
        for flip in flip_plan(services, count):
            now_down = down.setdefault(flip.service.name, set())
            (now_down.discard if flip.ready else now_down.add)(flip.endpoint)
            after = agent.mark()
            applied = api.change_slice(index[flip.service.name], sorted(now_down))
            changed_at, event = wait_for_flip(agent, kernel, flip, after, applied, timeout)
            sync_samples.append(float(event["seconds"]))
            e2e_samples.append(changed_at - applied)
            _say_flip(flip, event, changed_at - applied, "API → kernel")
    return Timing(tuple(sync_samples)), Timing(tuple(e2e_samples))
