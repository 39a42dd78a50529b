"""`ipvsctl agent` read without the CLI framework (agent/argv.py) calls the agent exactly as the CLI does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ipvsctl import cli, logs
from ipvsctl.agent import argv, command

ENV_NAMES = sorted({"IPVSCTL_CONFIG", "IPVSCTL_STATE_DIR", *(n for key in argv.FLAG_KEYS for n in argv.env_names(key))})

# (arguments, environment): each is read by agent/argv.py, and must give what the CLI gives
UNDERSTOOD: list[tuple[list[str], dict[str, str]]] = [
    (["agent"], {}),
    (["agent", "--manifests", "/etc/m", "--manifests=/srv/more", "--no-adopt", "--sysctls"], {}),
    (["--log-format", "json", "--log-level=debug", "--state-dir", "/tmp/s", "agent", "--kubernetes"], {}),
    (["agent", "--kubernetes", "--kubeconfig", "/k", "--node-name", "a", "--node-name", "b"], {"NODE_NAME": "c"}),
    (["agent", "--node-ip", "192.0.2.1", "--node-ip=2001:db8::1", "--scheduler", "wrr", "--interface", "d0"], {}),
    (["agent", "--min-sync-period", "0", "--sync-period=1h", "--drain-timeout", "5s", "--drain-check", "1s"], {}),
    (["agent", "--metrics-address", "", "--lock-timeout", "3s", "--config", "/etc/ipvsctl/agent.yaml"], {}),
    (["agent", "--metrics-address="], {"IPVSCTL_METRICS_ADDRESS": "127.0.0.1:1"}),
    (["agent"], {"NODE_NAME": "from-downward-api", "IPVSCTL_STATE_DIR": "/var/run/x", "IPVSCTL_CONFIG": "/c"}),
    (["agent"], {"NODE_NAME": "z", "IPVSCTL_NODE_NAME": "w", "IPVSCTL_SCHEDULER": "sh", "IPVSCTL_SYNC_PERIOD": "9s"}),
    (["agent"], {"NODE_NAME": "z", "IPVSCTL_NODE_NAME": "", "IPVSCTL_METRICS_ADDRESS": "", "IPVSCTL_CONFIG": ""}),
    (["agent", "--sync-period", "not a duration", "--scheduler", "nonsense"], {}),  # run() rejects these
    (["--state-dir=/s", "agent", "--adopt", "--no-adopt", "--kubernetes", "--kubernetes"], {}),
]

# left to the CLI: help, typos, values it converts or refuses itself
LEFT: list[tuple[list[str], dict[str, str]]] = [
    (["agent", "--help"], {}),
    (["--help", "agent"], {}),
    (["agent", "--manifest", "/m"], {}),
    (["agent", "--manifests"], {}),
    (["agent", "--kubernetes=yes"], {}),
    (["agent", "extra"], {}),
    (["agent", "--", "--manifests", "/m"], {}),
    (["--log-level", "loud", "agent"], {}),
    (["--log-format", "xml", "agent"], {}),
    (["--version", "agent"], {}),
    (["--state-dir", "agent"], {}),
    (["apply", "-f", "agent"], {}),
    (["agent", "--config", ""], {}),
    (["agent"], {"IPVSCTL_MANIFESTS": "/a /b"}),
    (["agent"], {"IPVSCTL_KUBERNETES": "1"}),
    (["agent"], {"IPVSCTL_NODE_IP": "192.0.2.1"}),
    (["agent"], {"IPVSCTL_SYSCTLS": "false"}),
]


def via_cli(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    seen: list[tuple[Any, ...]] = []
    configured: list[tuple[str, str]] = []

    def run(config: Any, flags: Any, state_dir: Any, _open: Any) -> int:
        seen.append((config, flags, state_dir))
        return 0

    monkeypatch.setattr(command, "run", run)
    monkeypatch.setattr(logs, "configure", lambda fmt, level: configured.append((fmt, level)))
    full_env: dict[str, str | None] = dict.fromkeys(ENV_NAMES)
    full_env.update(env)
    result = CliRunner().invoke(cli.app, args, env=full_env)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1 and len(configured) == 1
    return (*seen[0], *configured[0])


@pytest.mark.parametrize(("args", "env"), UNDERSTOOD)
def test_the_same_call_as_the_cli(args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = argv.parse(args, env)
    assert parsed is not None, f"agent/argv.py left {args} to the CLI"
    ours = (parsed.config, dict(parsed.flags), parsed.state_dir, parsed.log_format, parsed.log_level)
    assert ours == via_cli(args, env, monkeypatch)


@pytest.mark.parametrize(("args", "env"), LEFT)
def test_anything_else_goes_to_the_cli(args: list[str], env: dict[str, str]) -> None:
    assert argv.parse(args, env) is None


def test_the_kernel_opens_on_the_interface_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(logs, "configure", lambda fmt, level: None)
    monkeypatch.setattr(command, "run", lambda config, flags, state_dir, open_kernel: open_kernel() and 7)
    cases: list[tuple[list[str], dict[str, str]]] = [(["agent"], {}), (["agent", "--interface", "lb0"], {})]
    for args, env in [*cases, (["agent"], {"IPVSCTL_INTERFACE": "lb1"})]:
        assert argv.main(args, env, lambda name: opened.append(name) or True) == 7  # type: ignore[func-returns-value]
    assert opened == ["ipvsctl0", "lb0", "lb1"]


CHILD = r"""
import sys
from ipvsctl import entry
sys.argv = ["ipvsctl", "--state-dir", sys.argv[1], "agent", "--manifests", sys.argv[2], "--sync-period", "soon"]
try:
    entry.main()
except SystemExit as exc:
    print(exc.code, *(name in sys.modules for name in ("typer", "click", "pydantic", "rich")))
"""


def test_the_console_script_runs_the_agent_without_typer(tmp_path: Path) -> None:
    """A mistake in a flag is reported as the CLI reports it, and typer, pydantic and rich never load."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "state"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.stdout.split() == ["2", "False", "False", "False", "False"], child.stderr
    args = ["--state-dir", str(tmp_path / "state"), "agent", "--manifests", str(tmp_path), "--sync-period", "soon"]
    runner = CliRunner().invoke(cli.app, args)
    assert runner.exit_code == 2
    assert child.stderr == runner.stderr and child.stderr.startswith("error: ")
