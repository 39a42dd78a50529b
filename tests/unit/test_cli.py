"""The CLI end to end on the in-memory kernel: apply, diff, list, cleanup, validate, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipvsctl import cli
from ipvsctl.kernel.base import KernelUnavailable
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import Protocol, RealKey, RealServer, ServiceKey, VirtualServer
from ipvsctl.model.ops import AddReal, AddService
from tests.conftest import ip

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE = ["--node-ip", "192.0.2.10", "--node-name", "node-a"]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MemoryKernel:
    k = MemoryKernel(node_addresses=[ip("192.0.2.10")])
    monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: k)
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(tmp_path / "state"))
    return k


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_apply_examples_then_second_apply_writes_nothing(kernel: MemoryKernel) -> None:
    """apply programs every example Service; a second apply makes zero kernel writes."""
    code, _, err = run("apply", "-f", str(EXAMPLES), *NODE)
    assert code == 0, err
    assert len(kernel.dump()) == 14
    assert kernel.sysctls["net.ipv4.vs.conntrack"] == "1"
    kernel.reset_writes()
    code, _, err = run("apply", "-f", str(EXAMPLES), *NODE)
    assert code == 0, err
    assert kernel.writes == 0


def test_diff_exit_codes(kernel: MemoryKernel) -> None:
    """diff exits 1 with the pending operations before apply, 0 with no output after."""
    code, out, _ = run("diff", "-f", str(EXAMPLES), *NODE)
    assert code == 1
    assert "+ add virtual server TCP 198.51.100.10:80 scheduler=rr" in out
    assert "(demo/web:http)" in out
    assert kernel.writes == 0
    run("apply", "-f", str(EXAMPLES), *NODE)
    assert run("diff", "-f", str(EXAMPLES), *NODE) == (0, "", "")


def test_list_json_maps_back_to_services(kernel: MemoryKernel) -> None:
    """list -o json names each virtual server's Service and port, with the documented fields."""
    run("apply", "-f", str(EXAMPLES), *NODE)
    code, out, _ = run("list", "-o", "json")
    assert code == 0
    objs = json.loads(out)
    web = next(o for o in objs if o["address"] == "198.51.100.10")
    assert web["service"] == {"namespace": "demo", "name": "web", "port_name": "http"}
    assert web["owner"] == "ipvsctl" and web["scheduler"] == "rr" and web["protocol"] == "TCP"
    assert [(r["address"], r["port"], r["weight"], r["forward"]) for r in web["real_servers"]] == [
        ("203.0.113.11", 8080, 1, "masq"),
        ("203.0.113.12", 8080, 1, "masq"),
    ]
    assert set(web) >= {"fwmark", "flags", "persistence_timeout", "stats"}
    legacy = next(o for o in objs if o["address"] == "198.51.100.101")
    assert legacy["flags"] == ["persistent"] and legacy["persistence_timeout"] == 600


def test_list_table_and_foreign(kernel: MemoryKernel) -> None:
    """The table shows namespace/service:port; foreign virtual servers only with --all, marked."""
    foreign = ServiceKey(Protocol.TCP, ip("198.51.100.200"), 80)
    real = RealServer(RealKey(ip("203.0.113.50"), 80))
    kernel.execute([AddService(VirtualServer(foreign, "wlc")), AddReal(foreign, real)])
    run("apply", "-f", str(EXAMPLES / "web.yaml"), *NODE)
    _, out, _ = run("list")
    assert out.splitlines()[0].split() == [
        "NAME",
        "PROTO",
        "VIRTUAL",
        "SCHEDULER",
        "REAL",
        "SERVERS",
        "ACTIVE",
        "INACTIVE",
    ]
    assert "demo/web:http" in out and "203.0.113.11:8080*1,203.0.113.12:8080*1" in out
    assert "<foreign>" not in out
    _, out, _ = run("list", "--all", "-o", "wide", "--stats", "--rate")
    assert "<foreign>" in out and "198.51.100.200:80" in out and "CPS" in out


def test_foreign_survives_apply_and_cleanup(kernel: MemoryKernel) -> None:
    """A virtual server made by someone else at a VIP we want is a conflict (exit 4), never changed or deleted."""
    key = ServiceKey(Protocol.TCP, ip("198.51.100.10"), 80)
    real = RealServer(RealKey(ip("203.0.113.50"), 80), 7)
    kernel.execute([AddService(VirtualServer(key, "wlc")), AddReal(key, real)])
    before = kernel.get(key)
    code, _, err = run("apply", "-f", str(EXAMPLES), *NODE)
    assert code == 4
    assert "demo/web" in err and "not created by ipvsctl" in err
    assert kernel.get(key) == before
    code, out, _ = run("cleanup")
    assert code == 0 and "delete virtual server" in out
    assert [s.server.key for s in kernel.dump()] == [key]
    assert kernel.get(key) == before
    assert kernel.bound_addresses() == set()


def test_adopt_takes_over(kernel: MemoryKernel) -> None:
    """--adopt takes over an existing virtual server the manifests describe."""
    key = ServiceKey(Protocol.TCP, ip("198.51.100.10"), 80)
    kernel.execute([AddService(VirtualServer(key, "wlc"))])
    code, _, err = run("apply", "-f", str(EXAMPLES / "web.yaml"), "--adopt", *NODE)
    assert code == 0, err
    state = kernel.get(key)
    assert state is not None and state.server.scheduler == "rr" and len(state.real_servers) == 2


def test_bad_input_applies_the_rest(kernel: MemoryKernel, tmp_path: Path) -> None:
    """One broken Service is reported with file, object and field; the valid ones are applied; exit 3."""
    shutil.copytree(EXAMPLES, tmp_path / "m")
    (tmp_path / "m" / "broken.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: broken, namespace: demo}\n"
        "spec: {clusterIP: 198.51.100.99, ports: [{port: 99999}]}\n"
    )
    code, _, err = run("apply", "-f", str(tmp_path / "m"), *NODE)
    assert code == 3
    assert "broken.yaml: document 1: Service demo/broken: spec.ports[0].port: must be between 1 and 65535" in err
    assert "Traceback" not in err
    assert len(kernel.dump()) == 14


def test_kernel_error_is_reported_per_service(kernel: MemoryKernel) -> None:
    """A scheduler the kernel lacks fails that Service with a clear message; others apply; exit 4."""
    kernel.schedulers.discard("lc")
    code, _, err = run("apply", "-f", str(EXAMPLES), *NODE)
    assert code == 4
    assert "demo/shop:http: add virtual server TCP 198.51.100.11:80" in err
    assert "scheduler 'lc'" in err and "modprobe ip_vs_lc" in err
    assert len(kernel.dump()) == 12
    kernel.schedulers.add("lc")
    assert run("apply", "-f", str(EXAMPLES), *NODE)[0] == 0
    assert len(kernel.dump()) == 14


def test_no_ipvs_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without IPVS in the kernel every kernel verb says so in one line and exits 5."""

    def unavailable(interface: str) -> MemoryKernel:
        raise KernelUnavailable("this kernel has no IPVS: load it with `modprobe ip_vs` (CONFIG_IP_VS)")

    monkeypatch.setattr(cli, "KERNEL_FACTORY", unavailable)
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(tmp_path))
    for verb in (["list"], ["apply", "-f", str(EXAMPLES)], ["diff", "-f", str(EXAMPLES)], ["cleanup"]):
        code, _, err = run(*verb)
        assert code == 5
        assert err.strip().splitlines() == [
            "error: this kernel has no IPVS: load it with `modprobe ip_vs` (CONFIG_IP_VS)"
        ]


def test_lock_held_by_another_process(kernel: MemoryKernel, tmp_path: Path) -> None:
    """While another ipvsctl holds the lock, apply fails clearly with exit 6 and writes nothing."""
    from ipvsctl.state import Store

    with Store(tmp_path / "state").locked(1):
        code, _, err = run("apply", "-f", str(EXAMPLES), "--lock-timeout", "0.2", *NODE)
    assert code == 6 and "another ipvsctl" in err
    assert kernel.writes == 0


def test_validate(tmp_path: Path) -> None:
    """validate needs no kernel: exit 0 and a summary for the examples."""
    code, out, _ = run("validate", "-f", str(EXAMPLES))
    assert code == 0 and out.startswith("ok: 6 Services")


def test_unknown_default_scheduler_is_a_usage_error() -> None:
    """--scheduler with an unknown name is rejected up front."""
    code, _, err = run("validate", "-f", str(EXAMPLES), "--scheduler", "fastest")
    assert code == 2 and "unknown scheduler 'fastest'" in err


def test_scheduler_edit_in_diff_and_failed_edit_in_apply(kernel: MemoryKernel, tmp_path: Path) -> None:
    """An edit shows in diff as '~' with its Service; a refused edit is reported for its Service, no traceback."""
    shutil.copy(EXAMPLES / "web.yaml", tmp_path / "web.yaml")
    assert run("apply", "-f", str(tmp_path), *NODE)[0] == 0
    text = (
        (tmp_path / "web.yaml")
        .read_text()
        .replace("  namespace: demo\nspec:", "  namespace: demo\n  annotations: {ipvsctl.io/scheduler: mh}\nspec:", 1)
    )
    (tmp_path / "web.yaml").write_text(text)
    code, out, _ = run("diff", "-f", str(tmp_path), *NODE)
    assert (code, out.strip()) == (
        1,
        "~ edit virtual server TCP 198.51.100.10:80 scheduler=mh flags=0x0 timeout=0  (demo/web:http)",
    )
    kernel.schedulers.discard("mh")
    code, _, err = run("apply", "-f", str(tmp_path), *NODE)
    assert code == 4
    assert "demo/web:http: edit virtual server TCP 198.51.100.10:80" in err and "modprobe ip_vs_mh" in err
