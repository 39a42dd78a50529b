"""Drain under load: a client loop holds and opens connections through one Service while a
backend is drained (its endpoint turns terminating) and another is removed from the slice, on a
real kernel, with `ipvsctl agent` doing the work.

One agent (its own state directory, manifest directory and drain timeout; no /metrics) serves
one TCP Service whose EndpointSlice lists three echo backends: A (be1) stays ready throughout,
B (be3) turns ``ready: false, serving: true, terminating: true``, C (be2) is then removed from
the slice. A load process in the client namespace (LOAD below) first opens held connections
until every backend holds HELD_PER_BACKEND of them (round robin: deterministic), then keeps
exchanging a line on each every HELD_INTERVAL seconds and, in NEW_THREADS threads, keeps opening
short connections (one exchange each, then close). Every connection goes as a JSON line into a
file: open time (CLOCK_MONOTONIC, the same clock as this process's time.monotonic), the backend
that answered, errors. A poller thread here reads the real servers with ipvsadm all along.

Timeline: flip B -> the kernel shows B at weight 0 (t_B0) -> load goes on for HOLD_AT_ZERO s (B's
held connections exchange at least HELD_EXCHANGES_AFTER lines more, NEW_PER_PHASE new ones open)
-> B's held connections are closed by the client (FIN) -> C leaves the slice -> C at weight 0
(t_C0) -> likewise, C's held connections are closed -> both real servers are deleted -> B leaves
the slice too -> a full resync later, the virtual server holds only A. Asserted: no error of
any kind on any held connection (including B's and C's while pinned to a weight-0 backend) nor on
any new connection; no new connection opened after t_B0 answered by B, nor after t_C0 by C;
enough traffic that none of this is vacuous.

A connection the client closes normally stays in IPVS's table in TIME_WAIT for 2 minutes
(InActConn; see docs/agent.md#drain), and so do the short connections B and C served before the
flip: a drained real server is then deleted when --drain-timeout has passed since the drain
began, not when idle. The test therefore uses a short drain timeout (DRAIN_TIMEOUT) and closes
the held connections well before it (a deletion while they were open would reset them, which
the zero-error assertion would catch).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agent_support import (
    SYNC_PERIOD,
    AgentProcess,
    Ipvsadm,
    echo_servers,
    ipvsctl_command,
    service_yaml,
    wait_for,
    write_atomically,
)
from netns import CLIENT_NETNS, CommandError, Topology, _readline, _terminate, run

NAME = "drainload"
VIP = "198.51.100.80"  # no other kernel test uses it
PORT = 80
ECHO_PORT = 8082  # test_agent.py's echo servers use 8081
BE = {"be1": "203.0.113.11", "be2": "203.0.113.12", "be3": "203.0.113.13"}
A, C, B = "be1", "be2", "be3"  # A stays, B turns terminating, C is removed from the slice
DRAIN_TIMEOUT = 25.0  # the agent's --drain-timeout: held connections are closed well before it
METRICS_ADDRESS = ""  # no /metrics: nothing here reads it (test_agent.py uses 9842, test_reliability.py 9843)
BOUND = 30.0  # upper bound for anything the agent should do "soon" (the VM is slow)
CLOSE_MARGIN = 8.0  # held connections must be closed this long before the drain timeout could fire

HELD_PER_BACKEND = 3  # held connections per backend (9 in all)
HELD_INTERVAL = 0.15  # seconds between two exchanges on a held connection
HELD_EXCHANGES_AFTER = 5  # exchanges each held connection on a drained backend makes after its weight 0
HOLD_AT_ZERO = 4.0  # seconds a drained backend keeps its held connections at weight 0 (4 drain checks)
NEW_THREADS = 2  # threads opening short connections, one after the other each
NEW_PAUSE = 0.02  # seconds between two short connections of one thread
NEW_PER_PHASE = 30  # short connections opened after each kernel change before the test moves on
HELD_EXCHANGES_MIN = 20  # exchanges every held connection must have made by the end

# The load, run in the client namespace:
#   LOAD VIP PORT OUT PER_BACKEND BACKEND,... HELD_INTERVAL NEW_THREADS NEW_PAUSE
# Prints "held <backend>..." once the held connections are open, then "running"; then answers
# commands on stdin, one line each: "stats SINCE" -> "stats <json>" (new connections opened at or
# after SINCE by backend, errors, each held connection's exchanges in all and since SINCE);
# "close BACKEND" -> closes that backend's held connections (FIN, then reads to EOF) -> "closed N";
# "stop" (or EOF) -> stops the short connections, closes every held one -> "done".
LOAD = r"""
import errno, json, socket, sys, threading, time
vip, port, out_path, per_backend = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
backends, held_interval = sys.argv[5].split(","), float(sys.argv[6])
new_threads, new_pause = int(sys.argv[7]), float(sys.argv[8])
TIMEOUT = 15.0
out = open(out_path, "w", buffering=1)
lock = threading.Lock()
def record(obj):
    with lock:
        out.write(json.dumps(obj) + "\n")
def error_name(exc):
    if isinstance(exc, TimeoutError):
        return "!timeout"
    return "!" + (errno.errorcode.get(exc.errno or 0) or type(exc).__name__)
def read_line(f, want=None):
    line = f.readline()
    if not line.endswith(b"\n"):
        return None, "!eof" if not line else "!short"
    if want is not None and line != want:
        return None, "!mismatch"
    return line.decode().strip(), None

class Held:
    def __init__(self, ident):
        self.id, self.times, self.errors, self.stop = ident, [], [], threading.Event()
        self.opened = time.monotonic()
        self.sock = socket.create_connection((vip, port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.backend, err = read_line(self.file)
        if err:
            raise OSError(0, "held connection: no name line: " + err)
    def loop(self):
        seq, close = 0, None
        try:
            while not self.stop.wait(held_interval):
                seq += 1
                msg = ("h%d-%d\n" % (self.id, seq)).encode()
                try:
                    self.sock.sendall(msg)
                    _, err = read_line(self.file, msg)
                except OSError as exc:
                    err = error_name(exc)
                if err:
                    self.errors.append([round(time.monotonic(), 3), err])
                    return
                self.times.append(round(time.monotonic(), 3))
            try:  # a normal close: FIN, then the server's FIN (EOF) with nothing before it
                self.sock.shutdown(socket.SHUT_WR)
                rest = self.file.read()
                close = "ok" if rest == b"" else "!data-before-eof"
            except OSError as exc:
                close = error_name(exc)
            if close != "ok":
                self.errors.append([round(time.monotonic(), 3), "close " + close])
        finally:
            self.file.close()
            self.sock.close()
            record({"kind": "held", "id": self.id, "backend": self.backend, "opened": round(self.opened, 3),
                    "closed": round(time.monotonic(), 3), "close": close, "exchanges": len(self.times),
                    "times": self.times, "errors": self.errors})

news = []  # (opened, backend, error)
stop_new = threading.Event()
def new_loop():
    while not stop_new.is_set():
        opened, backend, err = time.monotonic(), None, None
        sock = socket.socket()
        sock.settimeout(TIMEOUT)
        f = None
        try:
            sock.connect((vip, port))
            f = sock.makefile("rb")
            backend, err = read_line(f)
            if not err:
                sock.sendall(b"ping\n")
                _, err = read_line(f, b"ping\n")
        except OSError as exc:
            err = error_name(exc)
        finally:
            if f is not None:
                f.close()
            sock.close()
        news.append((opened, backend, err))
        record({"kind": "new", "opened": round(opened, 4), "done": round(time.monotonic(), 4),
                "backend": backend, "error": err})
        stop_new.wait(new_pause)

held = []
count = dict.fromkeys(backends, 0)
while min(count.values()) < per_backend:
    if len(held) >= 4 * per_backend * len(backends):
        print("error: held connections do not spread:", count, flush=True)
        sys.exit(1)
    h = Held(len(held))
    held.append(h)
    count[h.backend] = count.get(h.backend, 0) + 1
print("held", *(h.backend for h in held), flush=True)
threads = [threading.Thread(target=h.loop, daemon=True) for h in held]
loops = [threading.Thread(target=new_loop, daemon=True) for _ in range(new_threads)]
for t in threads + loops:
    t.start()
print("running", flush=True)
for line in sys.stdin:
    words = line.split()
    if words[:1] == ["stats"]:
        since = float(words[1])
        by = {}
        errors = 0
        for opened, backend, err in list(news):
            errors += err is not None
            if opened >= since:
                by[backend or "!none"] = by.get(backend or "!none", 0) + 1
        hs = [[h.id, h.backend, len(h.times), sum(t >= since for t in list(h.times)), len(h.errors)] for h in held]
        print("stats", json.dumps({"new": by, "new_errors": errors, "held": hs}), flush=True)
    elif words[:1] == ["close"]:
        mine = [(h, t) for h, t in zip(held, threads) if h.backend == words[1]]
        for h, _ in mine:
            h.stop.set()
        for _, t in mine:
            t.join()
        print("closed", len(mine), flush=True)
    elif words[:1] == ["stop"]:
        break
stop_new.set()
for t in loops:
    t.join()
for h in held:
    h.stop.set()
for t in threads:
    t.join()
out.close()
print("done", flush=True)
"""


class Load:
    """LOAD in the client namespace."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", CLIENT_NETNS, sys.executable, "-I", "-S", "-c", LOAD, VIP, str(PORT), str(out),
             str(HELD_PER_BACKEND), ",".join(BE), str(HELD_INTERVAL), str(NEW_THREADS), str(NEW_PAUSE)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            words = self._line(120.0)
            if words[:1] != ["held"]:
                raise CommandError(f"load: unexpected first line {words!r}")
            self.held = words[1:]
            assert self._line(60.0) == ["running"]
        except BaseException:
            self.kill()
            raise

    def _line(self, timeout: float) -> list[str]:
        return _readline(self.process, timeout).split()

    def _say(self, line: str, timeout: float = 60.0) -> list[str]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._line(timeout)

    def stats(self, since: float) -> dict[str, Any]:
        words = self._say(f"stats {since!r}")
        assert words[:1] == ["stats"], words
        return json.loads(" ".join(words[1:]))

    def close(self, backend: str) -> int:
        """Close the held connections on ``backend`` (normally: FIN); how many there were."""
        words = self._say(f"close {backend}")
        assert words[:1] == ["closed"], words
        return int(words[1])

    def stop(self) -> list[dict[str, Any]]:
        """Stop the load (held connections closed normally) and return its records."""
        assert self._say("stop", 120.0) == ["done"]
        self.process.wait(30)
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def kill(self) -> None:
        _terminate(self.process)


@dataclass
class Sample:
    """One reading of the virtual server's real servers: backend → (weight, ActiveConn, InActConn)."""

    before: float  # monotonic time just before ipvsadm ran
    after: float  # ... and just after it returned: what it shows was true at some point in between
    reals: dict[str, tuple[int, int, int]] | None


@dataclass
class Poller:
    """Reads the real servers with ipvsadm, one reading after the other, in a thread."""

    ipvsadm: Ipvsadm
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="ipvsadm-poller", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        by_address = {addr: be for be, addr in BE.items()}
        while not self.stop.wait(0.05):
            before = time.monotonic()
            reals = self.ipvsadm.reals(VIP, PORT)
            after = time.monotonic()
            named = None if reals is None else {by_address.get(a, a): v for a, v in reals.items()}
            self.samples.append(Sample(before, after, named))

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(60)

    def wait(self, what: str, condition: Callable[[dict[str, tuple[int, int, int]]], bool], since: float,
             timeout: float = BOUND) -> Sample:  # fmt: skip
        """The first reading that began after ``since`` and satisfies ``condition``."""

        def found() -> Sample | None:
            return next((s for s in self.samples if s.before >= since and s.reals is not None
                         and condition(s.reals)), None)  # fmt: skip

        return wait_for(found, timeout, what, describe=lambda: f"ipvsadm last showed {self.last()}")

    def last(self) -> dict[str, tuple[int, int, int]] | None:
        return self.samples[-1].reals if self.samples else None

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if s.before >= start and s.after <= end]


class DrainAgent(AgentProcess):
    """The suite's agent command with this module's drain timeout and no /metrics."""

    def argv(self) -> list[str]:
        argv = super().argv()
        argv[argv.index("--drain-timeout") + 1] = f"{DRAIN_TIMEOUT:g}s"
        argv[argv.index("--metrics-address") + 1] = METRICS_ADDRESS
        return argv


def manifest(ready: Sequence[str], terminating: Sequence[str] = ()) -> str:
    """The Service and its slice: ``ready`` endpoints, and ``terminating`` ones (ready: false,
    serving: true, terminating: true); backends in neither are not in the slice."""
    text = service_yaml(NAME, VIP, {BE[b]: b in ready for b in BE if b in ready or b in terminating},
                        port=PORT, target_port=ECHO_PORT)  # fmt: skip
    for b in terminating:
        old = f'["{BE[b]}"]\n    conditions: {{ready: false}}'
        assert old in text, text
        text = text.replace(old, f'["{BE[b]}"]\n    conditions: {{ready: false, serving: true, terminating: true}}')
    return text


@dataclass
class Env:
    agent: AgentProcess
    manifests: Path
    ipvsadm: Ipvsadm

    def write(self, ready: Sequence[str], terminating: Sequence[str] = ()) -> float:
        """Rewrite the Service's file; the monotonic time of the write."""
        write_atomically(self.manifests / f"{NAME}.yaml", manifest(ready, terminating))
        return time.monotonic()

    def leftovers(self) -> list[str]:
        """Our virtual server and our VIP on ipvsctl0, if still there."""
        left = [] if self.ipvsadm.reals(VIP, PORT) is None else [f"TCP {VIP}:{PORT}"]
        bound = run("ip", "-o", "-4", "addr", "show", "dev", "ipvsctl0", check=False).split()
        return left + ([f"{VIP} on ipvsctl0"] if f"{VIP}/32" in bound else [])


@pytest.fixture(scope="module")
def drain_env(topology: Topology, ipvsadm: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Echo servers on be1..be3, the Service with three ready endpoints, and an agent running on
    it; afterwards the agent must remove the virtual server when the file goes and exit 0."""
    tool = Ipvsadm(ipvsadm)
    base = tmp_path_factory.mktemp("drainload")
    manifests, state = base / "manifests", base / "state"
    manifests.mkdir()
    agent = DrainAgent(state, manifests, base)
    env = Env(agent, manifests, tool)
    try:
        with echo_servers({be: topology.backends[be].netns for be in BE}, ECHO_PORT):
            env.write(list(BE))
            agent.start()
            wait_for(lambda: tool.reals(VIP, PORT) == {addr: (1, 0, 0) for addr in BE.values()}, BOUND,
                     "three real servers at weight 1", describe=lambda: str(tool.reals(VIP, PORT)))  # fmt: skip
            yield env
            (manifests / f"{NAME}.yaml").unlink()
            wait_for(lambda: not env.leftovers(), BOUND, "the agent to remove its virtual server and address",
                     interval=0.5, describe=lambda: f"left: {env.leftovers()}")  # fmt: skip
            code = agent.stop()
            assert code == 0, f"agent exit status {code} on SIGTERM; its log ends:\n{agent.tail()}"
    finally:
        agent.stop()
        if env.leftovers():
            subprocess.run([*ipvsctl_command(), "--state-dir", str(state), "cleanup"], timeout=300, check=False)


def _report(capsys: pytest.CaptureFixture[str], record_property: Callable[[str, object], None], text: str) -> None:
    record_property("drain under load", text)
    with capsys.disabled():
        print(f"\nMEASURED drain under load: {text}", flush=True)


def test_drain_under_load(
    drain_env: Env,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    """While held connections keep exchanging and new ones keep opening, a terminating endpoint
    (B) and then an endpoint removed from the slice (C) drain: no error on any connection, held
    ones pinned to B or C included, and no new connection reaches B or C once the kernel shows
    it at weight 0; both are deleted by the drain timeout; B then leaves the slice as well."""
    env = drain_env
    env.agent.assert_running()
    poller = Poller(env.ipvsadm)
    load = Load(tmp_path / "load.jsonl")
    started = time.monotonic()
    marks: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    try:
        held = Counter(load.held)
        assert held == dict.fromkeys(BE, HELD_PER_BACKEND), load.held  # round robin: 3 each
        poller.start()

        def new_since(since: float, want: int, absent: str | None = None) -> Callable[[], bool]:
            def enough() -> bool:
                stats = load.stats(since)
                assert stats["new_errors"] == 0, stats
                assert absent is None or absent not in stats["new"], (absent, stats)
                return sum(stats["new"].values()) >= want

            return enough

        wait_for(lambda: (n := load.stats(started)["new"]).keys() == set(BE) and min(n.values()) >= 3, BOUND,
                 "new connections to all three backends", describe=lambda: str(load.stats(started)))  # fmt: skip

        def drain(backend: str, ready: Sequence[str], terminating: Sequence[str]) -> None:
            """Write the slice that takes ``backend`` out, wait for weight 0 in the kernel with its
            held connections still there, keep the load on, then close those connections."""
            written = marks[f"{backend} written"] = env.write(ready, terminating)
            zero = poller.wait(f"{backend} at weight 0", lambda r: backend in r and r[backend][0] == 0, written)
            marks[f"{backend} weight 0"] = zero.after
            assert zero.reals is not None and zero.reals[backend][1] >= HELD_PER_BACKEND, zero

            def pinned_exchanging() -> bool:
                stats = load.stats(zero.after)
                return all(n >= HELD_EXCHANGES_AFTER for _, be, _, n, _ in stats["held"] if be == backend)

            wait_for(pinned_exchanging, BOUND, f"{backend}'s held connections to keep exchanging at weight 0",
                     describe=lambda: str(load.stats(zero.after)))  # fmt: skip
            wait_for(new_since(zero.after, NEW_PER_PHASE, absent=backend), BOUND,
                     f"{NEW_PER_PHASE} new connections after {backend}'s weight 0", interval=0.2,
                     describe=lambda: str(load.stats(zero.after)))  # fmt: skip
            time.sleep(max(0.0, zero.after + HOLD_AT_ZERO - time.monotonic()))  # load on, drain checks pass
            late = time.monotonic() - written
            assert late < DRAIN_TIMEOUT - CLOSE_MARGIN, (
                f"too slow to test: {late:.1f} s after the flip the held connections on {backend} are still "
                f"open; the drain timeout ({DRAIN_TIMEOUT:g} s) could fire first"
            )
            last = poller.wait("a reading before the close", lambda r: True, time.monotonic())
            weight, active, _ = (last.reals or {}).get(backend, (None, 0, 0))
            assert weight == 0 and active >= HELD_PER_BACKEND, last  # still there, its held connections pinned
            marks[f"{backend} closing"] = time.monotonic()
            assert load.close(backend) == HELD_PER_BACKEND
            marks[f"{backend} closed"] = time.monotonic()

        drain(B, [A, C], [B])
        drain(C, [A], [B])
        gone: dict[str, Sample] = {}
        for backend in (B, C):
            gone[backend] = poller.wait(f"{backend} deleted", lambda r, b=backend: b not in r,
                                        marks[f"{backend} closed"], DRAIN_TIMEOUT + BOUND)  # fmt: skip
            marks[f"{backend} deleted"] = gone[backend].after
        # B leaves the slice too (already deleted in the kernel: nothing must come back), checked
        # after a full resync that began after the write, with the load still on.
        mark = len(env.agent.events())
        removed = marks[f"{B} removed"] = env.write([A])
        env.agent.wait_event(lambda e: e.get("event") == "sync" and e.get("kind") == "full", SYNC_PERIOD + BOUND,
                             "a full resync after B left the slice", after=mark)  # fmt: skip
        wait_for(new_since(removed, NEW_PER_PHASE, absent=B), BOUND,
                 f"{NEW_PER_PHASE} new connections after B left the slice", interval=0.2)  # fmt: skip
        final = poller.wait("the latest reading", lambda r: True, time.monotonic())
        assert final.reals is not None and set(final.reals) == {A} and final.reals[A][0] == 1, final
        records = load.stop()
        ended = time.monotonic()
    finally:
        poller.close()
        load.kill()
    env.agent.assert_running()

    news = [r for r in records if r["kind"] == "new"]
    helds = [r for r in records if r["kind"] == "held"]
    t_b0, t_c0 = marks[f"{B} weight 0"], marks[f"{C} weight 0"]
    errors = [r for r in news if r["error"]]
    to_b = [r for r in news if r["backend"] == B and r["opened"] >= t_b0]
    to_c = [r for r in news if r["backend"] == C and r["opened"] >= t_c0]
    held_errors = [r for r in helds if r["errors"] or r["close"] != "ok"]
    per_phase = {
        "before": Counter(r["backend"] for r in news if r["opened"] < marks[f"{B} written"]),
        "B at 0": Counter(r["backend"] for r in news if t_b0 <= r["opened"] < t_c0),
        "C at 0": Counter(r["backend"] for r in news if t_c0 <= r["opened"]),
    }
    exchanges = sorted(r["exchanges"] for r in helds)
    timeline = ", ".join(f"{k} +{t - started:.1f}" for k, t in sorted(marks.items(), key=lambda kv: kv[1]))
    summary = "\n  ".join([
        f"{len(news)} new connections in {ended - started:.1f} s, {len(errors)} failed; by phase (opened): "
        + "; ".join(f"{k}: {dict(sorted(v.items()))}" for k, v in per_phase.items()),
        f"{len(helds)} held connections ({dict(sorted(held.items()))}), {sum(exchanges)} exchanges, "
        f"min {exchanges[0] if exchanges else 0} per connection, {len(held_errors)} with an error",
        f"B (terminating): flip->weight 0 {t_b0 - marks[f'{B} written']:.2f} s, flip->deleted "
        f"{marks[f'{B} deleted'] - marks[f'{B} written']:.2f} s, last seen {_last_present(poller, B)}",
        f"C (removed): write->weight 0 {t_c0 - marks[f'{C} written']:.2f} s, write->deleted "
        f"{marks[f'{C} deleted'] - marks[f'{C} written']:.2f} s, last seen {_last_present(poller, C)}",
        f"timeline (s since the load started): {timeline}; {len(poller.samples)} ipvsadm readings",
    ])  # fmt: skip
    _report(capsys, record_property, summary)

    assert len(helds) == HELD_PER_BACKEND * len(BE), _brief(helds)
    assert not held_errors, f"held connections with errors: {_brief(held_errors)}; records in {load.out}"
    assert not errors, f"{len(errors)} new connections failed, e.g. {errors[:10]}; records in {load.out}"
    assert not to_b, f"{len(to_b)} new connections opened after B showed weight 0 reached B: {to_b[:10]}"
    assert not to_c, f"{len(to_c)} new connections opened after C showed weight 0 reached C: {to_c[:10]}"
    # Not vacuous: traffic to every backend before, enough after each change, every held connection
    # busy throughout, and the drained backends' held ones exchanging until the client closed them.
    assert set(per_phase["before"]) == set(BE), per_phase
    assert sum(per_phase["B at 0"].values()) >= NEW_PER_PHASE and set(per_phase["B at 0"]) <= {A, C}, per_phase
    assert sum(per_phase["C at 0"].values()) >= 2 * NEW_PER_PHASE and set(per_phase["C at 0"]) == {A}, per_phase
    for r in helds:
        assert r["exchanges"] >= HELD_EXCHANGES_MIN, _brief([r])
        if r["backend"] in (B, C):
            zero, closing = marks[f"{r['backend']} weight 0"], marks[f"{r['backend']} closing"]
            assert sum(zero <= t for t in r["times"]) >= HELD_EXCHANGES_AFTER, _brief([r])
            assert r["closed"] >= closing and max(r["times"]) >= closing - 3, _brief([r])  # exchanging until closed
        else:
            assert r["closed"] >= removed, _brief([r])  # A's held connections lasted the whole test
    # The kernel: B and C stayed at weight 0 (not deleted, never back at weight 1) from weight 0 until
    # the reading before the one that showed them deleted, and A stayed at weight 1 throughout.
    for backend in (B, C):
        window = poller.between(marks[f"{backend} weight 0"], gone[backend].before)
        wrong = [(round(s.after - started, 2), s.reals) for s in window if not s.reals or s.reals.get(backend, (9,))[0]]
        assert window and not wrong, f"{backend} not at weight 0 in {len(wrong)} of {len(window)} readings: {wrong[:5]}"
    assert all(s.reals and s.reals[A][0] == 1 for s in poller.samples), "A left weight 1"
    # The docs' promise: a drained real server is deleted once idle (ActiveConn + InActConn = 0) or
    # when the drain timeout has passed since its drain began (which is after the write). The
    # connections the client closed stay in TIME_WAIT (InActConn) for 2 minutes, so here only the
    # timeout may delete them: not before it, and soon after it.
    for backend in (B, C):
        took = marks[f"{backend} deleted"] - marks[f"{backend} written"]
        _, active, inactive = _shown(poller, backend)[-1]
        assert took <= DRAIN_TIMEOUT + 15, (backend, took)
        assert active == 0 and (inactive == 0 or took >= DRAIN_TIMEOUT), (backend, took, active, inactive)


def _shown(poller: Poller, backend: str) -> list[tuple[int, int, int]]:
    """(weight, ActiveConn, InActConn) of ``backend`` in every reading that showed it."""
    return [s.reals[backend] for s in poller.samples if s.reals and backend in s.reals]


def _last_present(poller: Poller, backend: str) -> str:
    shown = _shown(poller, backend)
    return f"(weight, active, inactive) = {shown[-1]}" if shown else "never"


def _brief(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without their (long) lists of exchange times, for failure messages."""
    return [{k: v for k, v in r.items() if k != "times"} for r in records]
