"""The checker's states in health.json, and `ipvsctl list` showing them (HEALTH, -o json)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from ipvsctl.checks import report
from ipvsctl.checks.report import Health, Table
from ipvsctl.checks.runner import Checker
from ipvsctl.checks.spec import CheckSpec
from ipvsctl.kernel.memory import MemoryKernel
from tests.conftest import ip
from tests.unit.test_cli import EXAMPLES, NODE, kernel, run  # noqa: F401  (the fixture)

WEB_1, WEB_2 = ip("203.0.113.11"), ip("203.0.113.12")


def write_file(directory: Path, servers: dict[report.HealthKey, Health], pid: int | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    payload = report.encode(servers, os.getpid() if pid is None else pid, time.time())
    (directory / report.FILE).write_text(json.dumps(payload))


def test_round_trip_and_what_is_not_trusted(tmp_path: Path) -> None:
    servers = {
        ("demo", "web", WEB_1, 8080): Health("http", 8081, "up", "status 200", 1.0),
        ("demo", "web", WEB_2, 8080): Health("http", 8081, "down", "status 500", 2.0),
    }
    write_file(tmp_path, servers)
    assert report.read(tmp_path) == servers
    with subprocess.Popen(["true"]) as child:  # a pid that has exited: its file is stale
        child.wait()
    write_file(tmp_path, servers, pid=child.pid)
    assert report.read(tmp_path) is None
    (tmp_path / report.FILE).write_text("{not json")
    assert report.read(tmp_path) is None
    (tmp_path / report.FILE).write_text(json.dumps({"version": 99, "pid": os.getpid(), "servers": []}))
    assert report.read(tmp_path) is None
    (tmp_path / report.FILE).write_text(
        json.dumps({"version": 1, "pid": os.getpid(), "servers": [{"namespace": "demo", "address": "x"}]})
    )
    assert report.read(tmp_path) is None
    assert report.read(tmp_path / "missing") is None


def test_a_direct_routing_real_server_is_found_by_its_address() -> None:
    table = Table({("demo", "web", WEB_1, 8080): Health("tcp", 8080, "up")})
    assert table.get("demo", "web", WEB_1, 8080) == Health("tcp", 8080, "up")
    assert table.get("demo", "web", WEB_1, 80) == Health("tcp", 8080, "up")  # the kernel has the VIP's port
    assert table.get("demo", "other", WEB_1, 8080) is None
    assert report.summary([Health("tcp", 1, "up"), Health("tcp", 1, "down"), None, Health("tcp", 1, "up")]) == (
        "2 up, 1 down"
    )
    assert report.summary([None]) == "-"


def test_the_checker_writes_its_states_and_removes_the_file(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    flag.touch()
    path = tmp_path / report.FILE
    checker = Checker(lambda ref: None, report_path=path)
    spec = CheckSpec("exec", command=f"test -e {flag}", interval=0.1, timeout=0.1, failures=1, retry_delay=0.05)
    ref = ("demo", "web")
    try:
        checker.watch(ref, spec, [(WEB_1, 8080)])

        def states() -> dict[report.HealthKey, Health] | None:
            return report.read(tmp_path)

        deadline = time.monotonic() + 10
        while (got := states()) is None or got[("demo", "web", WEB_1, 8080)].state != "up":
            assert time.monotonic() < deadline, got
            time.sleep(0.02)
        flag.unlink()
        while (got := states()) is None or got[("demo", "web", WEB_1, 8080)].state != "down":
            assert time.monotonic() < deadline, got
            time.sleep(0.02)
        assert got[("demo", "web", WEB_1, 8080)] == Health(
            "exec", 8080, "down", "exit status 1", got[("demo", "web", WEB_1, 8080)].since
        )
        assert got[("demo", "web", WEB_1, 8080)].since > 0
    finally:
        checker.close()
    assert not path.exists()


def test_list_shows_health_only_with_a_running_agents_checks(kernel: MemoryKernel, tmp_path: Path) -> None:  # noqa: F811
    run("apply", "-f", str(EXAMPLES / "web.yaml"), *NODE)
    _, out, _ = run("list")
    assert "HEALTH" not in out  # no checks: the table as it always was
    state = tmp_path / "state"
    write_file(state, {
        ("demo", "web", WEB_1, 8080): Health("http", 8080, "up", "status 200", 1.0),
        ("demo", "web", WEB_2, 8080): Health("http", 8080, "down", "status 500", 2.0),
    })  # fmt: skip
    _, out, _ = run("list")
    header, row = out.splitlines()[0], next(line for line in out.splitlines() if "demo/web:http" in line)
    assert header.split()[-1] == "HEALTH" and row.endswith("1 up, 1 down")
    _, out, _ = run("list", "-o", "wide")
    lines = out.splitlines()
    assert any("-> 203.0.113.12:8080" in line and "down (status 500)" in line for line in lines), out
    assert any("-> 203.0.113.11:8080" in line and line.split()[-1] == "up" for line in lines), out
    code, out, _ = run("list", "-o", "json")
    assert code == 0
    web = next(o for o in json.loads(out) if o["address"] == "198.51.100.10")
    assert [r["health"] for r in web["real_servers"]] == [
        {"check": "http", "check_port": 8080, "state": "up", "reason": "status 200", "since": 1.0},
        {"check": "http", "check_port": 8080, "state": "down", "reason": "status 500", "since": 2.0},
    ]
    with subprocess.Popen(["true"]) as child:
        child.wait()
    write_file(state, {("demo", "web", WEB_1, 8080): Health("http", 8080, "down", "x", 1.0)}, pid=child.pid)
    _, out, _ = run("list")
    assert "HEALTH" not in out  # the agent that wrote it is gone


def test_the_check_benchmark_targets_are_distinct_loopback_addresses() -> None:
    from ipvsctl.bench.checks import targets

    got = targets(10_000)
    assert len(set(got)) == 10_000
    assert all(a.is_loopback and a.packed[3] not in (0, 255) for a, _ in got)
