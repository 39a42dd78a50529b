"""Agent configuration (defaults < file < environment < flags) and `ipvsctl agent` end to end on
the in-memory kernel: start, serve, stop on SIGTERM leaving IPVS as it is, clear errors."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipvsctl import cli
from ipvsctl.agent.config import AgentConfig, ConfigError, build, parse_duration
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.state import Store
from tests.conftest import ip

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_durations() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120
    assert parse_duration("1.5") == 1.5
    assert parse_duration(3) == 3.0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_file_then_flags_win(tmp_path: Path) -> None:
    conf = tmp_path / "agent.yaml"
    conf.write_text("manifests: [/etc/m]\nmin-sync-period: 500ms\nsync-period: 1m\nscheduler: lc\nnode-ip: 192.0.2.1\n")
    cfg = build(conf, {"scheduler": "sh", "sync_period": None, "drain_timeout": "5s"})
    assert cfg == AgentConfig(
        manifests=("/etc/m",),
        min_sync_period=0.5,
        sync_period=60.0,
        scheduler="sh",
        drain_timeout=5.0,
        node_ip=(ip("192.0.2.1"),),
    )


def test_health_check_defaults_come_from_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "agent.yaml"
    conf.write_text("manifests: [/m]\nhealth-check-defaults: {interval: 10s, failures: 5, insecure: true}\n")
    cfg = build(conf, {})
    assert dict(cfg.health_check_defaults) == {"interval": "10s", "failures": "5", "insecure": "true"}


def test_a_config_file_that_is_not_utf_8_is_a_config_error(tmp_path: Path) -> None:
    conf = tmp_path / "agent.yaml"
    conf.write_bytes(b"manifests: [/m]\nscheduler: \xe9\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml: not UTF-8 \(line 2, column 12\): byte 0xe9"):
        build(conf, {})


@pytest.mark.parametrize(
    ("text", "flags", "message"),
    [
        ("manifests: [/m]\nsync-perod: 1s\n", {}, "sync-perod: unknown option"),
        ("manifests: [/m]\nsync-period: soon\n", {}, "sync-period: 'soon' is not a duration"),
        ("manifests: [/m]\nkubernetes: yes please\n", {}, "kubernetes: must be true or false"),
        ("- a\n", {}, "must be a mapping"),
        ("manifests: [/m\n", {}, r"invalid YAML \(line 2, column 1\)"),
        ("manifests: " + "[" * 100_000, {}, "nests deeper than 256 levels"),
        ("manifests: [/m]\n---\nmanifests: [/n]\n", {}, "holds 2 YAML documents, not one"),
        ("manifests: [/m]\n", {"kubernetes": True}, "exactly one source"),
        ("manifests: [/m]\nscheduler: fastest\n", {}, "unknown 'fastest'"),
        ("manifests: [/m]\nmetrics-address: nowhere\n", {}, "metrics-address"),
        ("manifests: [/m]\n", {"node_ip": ["300.1.1.1"]}, "--node-ip"),
        ("manifests: [/m]\nhealth-check-defaults: 5s\n", {}, "health-check-defaults: must be a mapping"),
        ("manifests: [/m]\nhealth-check-defaults: {interval: soon}\n", {}, "health-check-defaults: interval: 'soon'"),
        ("manifests: [/m]\nhealth-check-defaults: {colour: red}\n", {}, "colour: unknown health-check setting"),
    ],
)
def test_config_mistakes_name_file_and_key(tmp_path: Path, text: str, flags: dict[str, object], message: str) -> None:
    conf = tmp_path / "agent.yaml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        build(conf, flags)
    if "--" not in message:
        assert str(conf) in str(err.value)


# --- the command ---


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MemoryKernel:
    k = MemoryKernel(node_addresses=[ip("192.0.2.10")])
    monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: k)
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(tmp_path / "state"))
    return k


def run_agent(args: list[str], during: object = None, timeout: float = 20.0) -> tuple[int, str]:
    """Run `ipvsctl agent` in this (main) thread; ``during(port)`` runs in another, then SIGTERM."""
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            if callable(during):
                during()
        except BaseException as err:  # reported by the test below
            errors.append(err)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Timer(0.3, drive)
    timer.start()
    result = CliRunner().invoke(cli.app, args)
    timer.join(timeout)
    if errors:
        raise errors[0]
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def wait_for(url: str, timeout: float = 10.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_agent_applies_serves_and_leaves_ipvs_on_sigterm(kernel: MemoryKernel, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(EXAMPLES, d)
    seen: dict[str, str] = {}

    def during() -> None:
        deadline = time.monotonic() + 10
        while len(kernel.dump()) < 14 and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["healthz"] = wait_for("http://127.0.0.1:19843/healthz")[1]
        seen["metrics"] = wait_for("http://127.0.0.1:19843/metrics")[1]

    code, err = run_agent(
        ["agent", "--manifests", str(d), "--node-name", "node-a", "--metrics-address", "127.0.0.1:19843"], during
    )
    assert code == 0, err
    assert len(kernel.dump()) == 14  # left as it was
    assert seen["healthz"].startswith("ok")
    assert "ipvsctl_owned_virtual_servers 14.0" in seen["metrics"]
    assert any(
        line.startswith("ipvsctl_virtual_server_connections_total{")
        and 'namespace="demo"' in line
        and 'service="web"' in line
        for line in seen["metrics"].splitlines()
    )
    assert "stopping; IPVS is left as it is" in err


def test_agent_restart_writes_nothing(kernel: MemoryKernel, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(EXAMPLES, d)
    args = ["agent", "--manifests", str(d), "--node-name", "node-a", "--metrics-address", ""]

    def until_programmed() -> None:
        deadline = time.monotonic() + 10
        while len(kernel.dump()) < 14 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert run_agent(args, until_programmed)[0] == 0
    kernel.reset_writes()
    code, err = run_agent(args, lambda: time.sleep(1.0))
    assert code == 0, err
    assert kernel.writes == 0


def test_config_error_is_a_usage_error(kernel: MemoryKernel, tmp_path: Path) -> None:
    conf = tmp_path / "a.yaml"
    conf.write_text("manifests: [/m]\nsync-period: never\n")
    result = CliRunner().invoke(cli.app, ["agent", "--config", str(conf)])
    assert result.exit_code == 2
    assert f"{conf}: sync-period: 'never' is not a duration" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_agent_fails_clearly_on_the_lock(kernel: MemoryKernel, tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    with store.locked(1):
        result = CliRunner().invoke(
            cli.app, ["agent", "--manifests", str(tmp_path), "--lock-timeout", "0.2", "--metrics-address", ""]
        )
    assert result.exit_code == 6
    assert "another ipvsctl" in result.stderr


def test_sighup_reloads_the_config_file(kernel: MemoryKernel, tmp_path: Path) -> None:
    """A new default scheduler in the config file takes effect on SIGHUP, by an in-place edit."""
    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(EXAMPLES / "web.yaml", d)
    conf = tmp_path / "agent.yaml"
    conf.write_text(f"manifests: [{d}]\nscheduler: rr\nmetrics-address: ''\nnode-name: node-a\n")

    def schedulers() -> set[str]:
        return {s.server.scheduler for s in kernel.dump()}

    def during() -> None:
        deadline = time.monotonic() + 10
        while schedulers() != {"rr"} and time.monotonic() < deadline:
            time.sleep(0.05)
        conf.write_text(conf.read_text().replace("scheduler: rr", "scheduler: lc"))
        kernel.executed.clear()
        os.kill(os.getpid(), signal.SIGHUP)
        while schedulers() != {"lc"} and time.monotonic() < deadline:
            time.sleep(0.05)

    code, err = run_agent(["agent", "--config", str(conf)], during)
    assert code == 0, err
    assert schedulers() == {"lc"}
    assert kernel.executed and all(type(op).__name__ == "EditService" for op in kernel.executed)
    assert "configuration reloaded" in err
