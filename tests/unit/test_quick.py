"""`ipvsctl diff` run without the CLI framework (quick.py) says and exits exactly what the CLI does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipvsctl import cli, quick
from ipvsctl.kernel.base import KernelUnavailable
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import Protocol, ServiceKey, VirtualServer
from ipvsctl.model.ops import AddService
from tests.conftest import ip

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BAD = "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: demo}\nspec: {ports: 7}\n"


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    directory = tmp_path / "m"
    shutil.copytree(EXAMPLES, directory)
    return directory


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> MemoryKernel:
    k = MemoryKernel(node_addresses=[ip("192.0.2.10")])
    monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: k)
    monkeypatch.setattr(quick, "KERNEL_FACTORY", lambda interface: k)
    return k


def both(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """(exit code, stdout, stderr) of the CLI and of quick.py for the same arguments."""
    result = CliRunner().invoke(cli.app, argv)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    capsys.readouterr()
    code = quick.main(argv)
    assert code is not None, f"quick.py left {argv} to the CLI"
    out, err = capsys.readouterr()
    return (result.exit_code, result.stdout, result.stderr), (code, out, err)


def test_the_same_diff_in_every_state(
    kernel: MemoryKernel, manifests: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pending changes (1), bad input beside them (3), a foreign virtual server in the way (4),
    nothing to do (0): same lines, same order, same code; with and without the caches."""
    node = ["--node-ip", "192.0.2.10", "--node-name", "node-a"]
    seen = set()
    argvs = [
        ["diff", "-f", str(manifests), *node],
        ["--log-level", "warning", "diff", f"--filename={manifests}", *node, "--no-cache", "--scheduler", "wlc"],
        ["--state-dir", str(tmp_path / "other"), "diff", "-f", str(manifests), "--node-ip=192.0.2.10", "--adopt"],
    ]
    for argv in argvs:
        cli_run, quick_run = both(argv, capsys)
        assert cli_run == quick_run
        seen.add(cli_run[0])
    (manifests / "bad.yaml").write_text(BAD)
    cli_run, quick_run = both(argvs[0], capsys)
    assert cli_run == quick_run and cli_run[0] == 3 and "bad.yaml" in cli_run[2]
    kernel.execute([AddService(VirtualServer(ServiceKey(Protocol.TCP, ip("198.51.100.10"), 80), "rr"))])
    cli_run, quick_run = both(argvs[0], capsys)
    assert cli_run == quick_run and cli_run[0] == 4
    kernel.execute([])
    (manifests / "bad.yaml").unlink()
    assert CliRunner().invoke(cli.app, ["apply", "-f", str(manifests), *node, "--adopt"]).exit_code == 0
    cli_run, quick_run = both(["diff", "-f", str(manifests), *node, "--adopt"], capsys)
    assert cli_run == quick_run == (0, "", "")
    assert seen == {1}


def test_no_ipvs_is_exit_5_either_way(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def unavailable(interface: str) -> MemoryKernel:
        raise KernelUnavailable("this kernel has no IPVS")

    monkeypatch.setattr(cli, "KERNEL_FACTORY", unavailable)
    monkeypatch.setattr(quick, "KERNEL_FACTORY", unavailable)
    cli_run, quick_run = both(["diff", "-f", str(EXAMPLES)], capsys)
    assert cli_run == quick_run and cli_run[0] == 5


@pytest.mark.parametrize(
    "argv",
    [
        ["diff", "--help"],
        ["diff"],
        ["diff", "-f", "x", "--bogus"],
        ["--log-format", "json", "diff", "-f", "x"],
        ["diff", "-f", "x", "--node-ip", "not-an-ip"],
        ["diff", "-f", "x", "--scheduler", "nope"],
        ["--log-level", "loud", "diff", "-f", "x"],
        ["diff", "-f"],
        ["apply", "-f", "x"],
        ["diff", "-fx"],
    ],
)
def test_anything_unusual_is_left_to_the_cli(argv: list[str]) -> None:
    assert quick.parse_diff(argv, {}) is None


def test_environment_defaults_are_the_clis() -> None:
    args = quick.parse_diff(["diff", "-f", "x"], {"IPVSCTL_STATE_DIR": "/tmp/s", "NODE_NAME": "n1"})
    assert args is not None and (str(args.state_dir), args.node_name) == ("/tmp/s", "n1")


def test_diff_loads_no_cli_framework_and_no_logging_library() -> None:
    """The console script's diff on this host (no IPVS: exit 5) imports neither typer, click nor
    structlog; the same check with `list` shows the check can see them."""
    probe = (
        "import sys\nfrom ipvsctl import entry\nsys.argv = ['ipvsctl', *sys.argv[1:]]\n"
        "try:\n    entry.main()\nexcept SystemExit as e:\n    code = e.code\n"
        "loaded = [m for m in ('typer', 'click', 'structlog', 'pyroute2', 'prometheus_client') if m in sys.modules]\n"
        "sys.stderr.write(f'\\nLOADED {loaded}\\n')\n"
    )

    def loaded(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
        )
        return done.stderr.rsplit("LOADED ", 1)[-1].strip()

    fake_kernel_args = ["diff", "-f", str(EXAMPLES), "--node-ip", "192.0.2.10", "--interface", "ipvsctl-test0"]
    assert loaded(*fake_kernel_args) == "[]"
    assert "typer" in loaded("list", "--interface", "ipvsctl-test0")
