"""Benchmark: can the health checker keep N real servers on an interval? ``scripts/bench-checks``.

Runs in a network namespace of its own (``unshare --net``: only a loopback, so nothing leaves
the machine): a server process accepts TCP connections on 0.0.0.0:PORT there (HTTP with
``--kind http``), and the agent's ``Checker`` checks N targets 127.1.x.y:PORT, every one every
``--interval`` seconds, for ``--duration`` seconds. Prints, from the checker's own results:

- checks per second done, against N / interval wanted;
- the time between two checks of one server (p50, p99, max) against the interval: a checker
  that falls behind shows it here first;
- servers checked fewer times than the duration allows (missed rounds);
- check durations (p50, p99), the checker's CPU use, and how long the engine's ``verdict`` read
  takes while all this runs (the sync path: it must not wait for checks).
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from ipvsctl import logs
from ipvsctl.checks.runner import Checker
from ipvsctl.checks.spec import CheckSpec

PORT = 8080
INSIDE = "IPVSCTL_BENCH_CHECKS_NETNS"

SERVER = r"""
import asyncio, sys
kind = sys.argv[1]
async def handle(reader, writer):
    if kind == "http":
        await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        try:
            await writer.drain()
        except OSError:
            pass
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[2]), backlog=4096, reuse_address=True)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def targets(n: int) -> list[tuple[ipaddress.IPv4Address, int]]:
    """N loopback addresses, 127.1.0.1 onwards (Linux routes all of 127/8 to lo)."""
    base = int(ipaddress.IPv4Address("127.1.0.1"))
    return [(ipaddress.IPv4Address(base + i + i // 250 * 6), PORT) for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(n: int, interval: float, duration: float, kind: str, limit: int) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, kind, str(PORT)], stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        ends: dict[tuple[object, int], list[float]] = {}
        durations: list[float] = []
        failed = [0]
        lock = threading.Lock()

        def on_result(_ref: object, target: tuple[object, int], _kind: str, healthy: bool, took: float) -> None:
            now = time.monotonic()
            with lock:
                ends.setdefault(target, []).append(now)
                durations.append(took)
                if not healthy:
                    failed[0] += 1

        checker = Checker(lambda ref: None, limit=limit, on_result=on_result)
        spec = CheckSpec(kind, interval=interval, timeout=min(2.0, interval), failures=3)
        wanted = targets(n)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        # Services of 10 servers each, as the Service-sized bench uses
        for i in range(0, n, 10):
            checker.watch(("bench", f"svc-{i // 10}"), spec, wanted[i : i + 10])
        verdict_times: list[float] = []
        while time.monotonic() - started < duration:
            time.sleep(0.05)
            for address, port in wanted[:: max(1, n // 200)]:
                t0 = time.perf_counter()
                checker.verdict(("bench", "svc-0"), address, port)  # type: ignore[arg-type]
                verdict_times.append(time.perf_counter() - t0)
        elapsed = time.monotonic() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        up = sum(
            1 for i, (address, port) in enumerate(wanted) if checker.verdict(("bench", f"svc-{i // 10}"), address, port)
        )
        checker.close()
    finally:
        server.terminate()
        server.wait()
    with lock:
        # the first round is spread over one interval; count from the first check of each server
        periods = [b - a for times in ends.values() for a, b in itertools.pairwise(times)]
        settled = [times for times in ends.values() if times]
        rounds = [len(times) for times in settled]
        total = sum(rounds)
    # every server's checks after its first fit (elapsed - spread) / interval rounds at least
    expected_rounds = int((elapsed - interval) / interval)
    missed = sum(1 for times in ends.values() if len(times) < expected_rounds) + (n - len(settled))
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "servers": n,
        "interval_s": interval,
        "duration_s": round(elapsed, 2),
        "checks": total,
        "checks_per_s": round(total / elapsed, 1),
        "wanted_per_s": round(n / interval, 1),
        "steady_checks_per_s": round(len(periods) / max(1e-9, elapsed - interval), 1),
        "period_p50_s": round(statistics.median(periods), 3) if periods else float("nan"),
        "period_p99_s": round(percentile(periods, 0.99), 3),
        "period_max_s": round(max(periods), 3) if periods else float("nan"),
        "servers_missing_rounds": missed,
        "failed_checks": failed[0],
        "up_at_end": up,
        "check_p50_ms": round(1000 * statistics.median(durations), 2) if durations else float("nan"),
        "check_p99_ms": round(1000 * percentile(durations, 0.99), 2),
        "checker_cpu_percent": round(100 * cpu / elapsed, 1),
        "verdict_p99_us": round(1e6 * percentile(verdict_times, 0.99), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def enter_namespace() -> None:
    """Run again in a new network namespace with its loopback up (root), unless in one already."""
    if os.environ.get(INSIDE):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.geteuid() != 0 or not shutil.which("unshare"):
        sys.exit("bench-checks: needs root and unshare(1): it runs in a network namespace of its own")
    env = dict(os.environ, **{INSIDE: "1"})
    code = subprocess.call(
        ["unshare", "--net", "--", sys.executable, "-m", "ipvsctl.bench.checks", *sys.argv[1:]], env=env
    )
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-checks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of checking (default 30)")
    parser.add_argument("--kind", choices=("tcp", "http"), default="tcp")
    parser.add_argument("--limit", type=int, default=512, help="checks in flight at most (the agent's: 512)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    enter_namespace()
    logs.configure("console", "warning")  # not 10,000 "health changed" lines
    # one file descriptor per check in flight, plus the server's
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    figures = measure(args.servers, args.interval, args.duration, args.kind, args.limit)
    figures["kind"] = args.kind  # type: ignore[assignment]
    figures["cpus"] = os.cpu_count() or 0
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    behind = figures["period_p99_s"] > 1.2 * args.interval or figures["servers_missing_rounds"] > 0
    print("result: " + ("FELL BEHIND" if behind else f"kept {args.servers} servers on a {args.interval:g} s interval"))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 1 if behind else 0


if __name__ == "__main__":
    sys.exit(main())
