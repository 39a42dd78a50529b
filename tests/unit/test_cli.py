"""The CLI end to end on the in-memory kernel: apply, diff, list (colour, --watch), cleanup, validate, exit codes,
help, completion and version."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipvsctl import cli, oneshot
from ipvsctl.colour import YELLOW, paint, strip
from ipvsctl.kernel.base import KernelUnavailable
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import Protocol, RealKey, RealServer, ServiceKey, Stats, VirtualServer
from ipvsctl.model.ops import AddReal, AddService, EditReal
from ipvsctl.watch import CLEAR
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


def apply_web_with_draining(kernel: MemoryKernel) -> ServiceKey:
    """Apply web.yaml, then set one of its real servers to weight 0 as a drain would; return its key."""
    assert run("apply", "-f", str(EXAMPLES / "web.yaml"), *NODE)[0] == 0
    web = ServiceKey(Protocol.TCP, ip("198.51.100.10"), 80)
    kernel.execute([EditReal(web, RealServer(RealKey(ip("203.0.113.12"), 8080), 0))])
    return web


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout counts as a terminal, colour-capable."""
    monkeypatch.setattr(cli, "STDOUT_IS_TTY", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def test_list_colours_only_a_terminal(kernel: MemoryKernel, tty: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the table is coloured (draining real server yellow), and aligned as the plain one."""
    apply_web_with_draining(kernel)
    _, out, _ = run("list")
    assert paint("203.0.113.12:8080*0", YELLOW) in out
    _, plain_out, _ = run("list", "--color", "never")
    assert "\x1b[" not in plain_out and strip(out) == plain_out
    monkeypatch.setattr(cli, "STDOUT_IS_TTY", lambda: False)
    assert run("list")[1] == plain_out


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_list_colour_off_by_environment(kernel: MemoryKernel, tty: None, env: dict[str, str]) -> None:
    """NO_COLOR or TERM=dumb turn colour off on a terminal; --color always turns it back on."""
    apply_web_with_draining(kernel)
    result = CliRunner().invoke(cli.app, ["list"], env=env)
    assert result.exit_code == 0 and "\x1b[" not in result.stdout
    result = CliRunner().invoke(cli.app, ["list", "--color", "always"], env=env)
    assert paint("203.0.113.12:8080*0", YELLOW) in result.stdout


def test_list_color_always_without_terminal_but_never_json(kernel: MemoryKernel) -> None:
    """--color always colours piped table output; json and yaml stay plain whatever --color says."""
    apply_web_with_draining(kernel)
    assert "\x1b[" in run("list", "--color", "always")[1]
    for form in ("json", "yaml"):
        code, out, _ = run("list", "-o", form, "--color", "always")
        assert code == 0 and "\x1b[" not in out
    code, _, err = run("list", "--color", "sometimes")
    assert code == 2 and "auto, always, never" in err


class Traffic:
    """The watch loop's clock and sleep: each sleep passes the time and sends traffic to web's first real server."""

    def __init__(self, kernel: MemoryKernel, key: ServiceKey) -> None:
        self.kernel, self.key, self.now, self.n = kernel, key, 0.0, 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.n += 1
        n = self.n
        stats = Stats(conns=4 * n, inpkts=40 * n, outpkts=30 * n, inbytes=8000 * n, outbytes=2_000_000 * n)
        self.kernel.set_stats(self.key, stats)
        self.kernel.set_stats(self.key, stats, RealKey(ip("203.0.113.11"), 8080))


@pytest.fixture
def traffic(kernel: MemoryKernel, monkeypatch: pytest.MonkeyPatch) -> Traffic:
    t = Traffic(kernel, apply_web_with_draining(kernel))
    monkeypatch.setattr(cli, "CLOCK", t.clock)
    monkeypatch.setattr(cli, "SLEEP", t.sleep)
    return t


def test_watch_prints_frames_with_measured_rates(traffic: Traffic) -> None:
    """--watch --count 3 prints three timestamped frames, a blank line apart; rates come from counter deltas."""
    code, out, err = run("list", "--watch", "--count", "3", "--interval", "2")
    assert code == 0, err
    frames = out.split("\n\n")
    assert len(frames) == 3 and all(f.startswith("Every 2s: ipvsctl list    ") for f in frames)
    assert "\x1b" not in out
    first, second = (f.splitlines()[2].split() for f in frames[:2])
    assert first[0] == "demo/web:http" and first[-5:] == ["-"] * 5
    assert second[-5:] == ["2.0", "20", "15", "4.0K", "1.0M"]
    assert traffic.now == 4.0


def test_watch_wide_rates_per_real_server(traffic: Traffic) -> None:
    """-o wide --watch gives each real server its own measured rates."""
    code, out, _ = run("list", "-w", "-o", "wide", "--count", "2", "-n", "0.5", "--stats")
    assert code == 0
    last = out.split("\n\n")[-1].splitlines()
    busy = next(line.split() for line in last if "-> 203.0.113.11:8080" in line)
    idle = next(line.split() for line in last if "-> 203.0.113.12:8080" in line)
    assert busy[-5:] == ["8.0", "80", "60", "16.0K", "4.0M"] and idle[-5:] == ["0"] * 5


def test_watch_on_a_terminal_clears_and_redraws(traffic: Traffic, tty: None) -> None:
    """On a terminal every frame starts by clearing the screen, and the table is coloured."""
    code, out, _ = run("list", "--watch", "--count", "2")
    assert code == 0
    assert out.count(CLEAR) == 2 and out.startswith(CLEAR)
    assert paint("203.0.113.12:8080*0", YELLOW) in out


def test_watch_ctrl_c_exits_zero_quietly(traffic: Traffic, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while waiting for the next frame ends --watch with exit 0 and no traceback."""

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "SLEEP", interrupted)
    result = CliRunner().invoke(cli.app, ["list", "--watch"])
    assert result.exit_code == 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout.startswith("Every 2s: ipvsctl list") and "Traceback" not in result.output
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--watch", "-o", "json"], "works with -o table or wide"),
        (["--watch", "-o", "yaml"], "works with -o table or wide"),
        (["--watch", "--interval", "0"], "more than 0"),
        (["--watch", "--interval", "-1"], "more than 0"),
        (["--watch", "--count", "0"], "--count"),
        (["--count", "3"], "only with --watch"),
        (["--interval", "1"], "only with --watch"),
    ],
)
def test_watch_usage_errors(kernel: MemoryKernel, args: list[str], message: str) -> None:
    """--watch refuses json/yaml and a non-positive interval or count; --interval/--count need --watch."""
    code, out, err = run("list", *args)
    assert code == 2 and message in err and out == ""


def test_show_completion_prints_a_bash_script() -> None:
    """--show-completion, run under bash, prints the bash completion function for ipvsctl."""
    result = CliRunner().invoke(cli.app, ["--show-completion"], prog_name="ipvsctl", env={"SHELL": "/bin/bash"})
    assert result.exit_code == 0
    assert "complete -o default -F _ipvsctl_completion ipvsctl" in result.stdout
    assert "_IPVSCTL_COMPLETE=complete_bash" in result.stdout


def test_completion_completes_verbs_and_flags() -> None:
    """The completion protocol the script calls answers verb and flag prefixes, e.g. `list --wa` -> --watch."""
    for words, cword, expected in (("ipvsctl li", "1", "list"), ("ipvsctl list --wa", "2", "--watch")):
        env = {"_IPVSCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
        result = CliRunner().invoke(cli.app, [], prog_name="ipvsctl", env=env)
        assert result.stdout.split() == [expected]


def test_version_and_root_version_flag() -> None:
    """`version` and `--version` both print `ipvsctl X.Y.Z` first, then the Python version."""
    from ipvsctl import __version__

    for args in (["version"], ["--version"]):
        code, out, _ = run(*args)
        lines = out.splitlines()
        assert code == 0 and lines[0] == f"ipvsctl {__version__}" and lines[1].startswith("python 3.")


def verbs() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("verb", ["", *verbs()])
def test_every_help_has_examples(verb: str) -> None:
    """`ipvsctl [VERB] --help` exits 0 and shows an Examples: block with `ipvsctl VERB` command lines."""
    code, out, _ = run(*([verb] if verb else []), "--help")
    assert code == 0 and "Examples:" in out
    examples = [line.strip() for line in out.split("Examples:", 1)[1].splitlines()]
    prefix = f"ipvsctl {verb}".strip()
    assert any(line.startswith((prefix, f"sudo {prefix}")) for line in examples), out


def test_every_verb_is_checked_for_examples() -> None:
    """The help test covers all seven verbs, so a new one without examples cannot slip past."""
    assert set(verbs()) >= {"validate", "diff", "apply", "list", "cleanup", "agent", "version"}


def test_apply_logs_how_long_each_phase_took(kernel: MemoryKernel) -> None:
    code, _, err = run("--log-format", "json", "apply", "-f", str(EXAMPLES), *NODE)
    assert code == 0, err
    applied = [json.loads(line) for line in err.splitlines() if '"applied"' in line]
    assert len(applied) == 1 and applied[0]["operations"] > 0
    seconds = applied[0]["seconds"]
    assert set(seconds) == {"kernel read", "manifests", "plan", "program"}
    assert all(isinstance(took, float) and took >= 0 for took in seconds.values())


def _two_slice_service(tmp_path: Path, second_type: str, other_backend: str) -> Path:
    files = tmp_path / "m"
    files.mkdir(exist_ok=True)
    slice_ = (
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {{name: {name}, namespace: demo, labels: {{kubernetes.io/service-name: {svc}}}}}\n"
        "addressType: {type}\nports: [{{name: http, port: 8080, protocol: TCP}}]\n"
        "endpoints:\n- addresses: [{addr}]\n"
    )
    service = (
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: demo}}\n"
        "spec:\n  clusterIP: {vip}\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n"
    )
    (files / "web.yaml").write_text(
        service.format(svc="web", vip="10.96.7.1")
        + "---\n"
        + slice_.format(name="web-1", svc="web", type="IPv4", addr="203.0.113.1")
        + "---\n"
        + slice_.format(name="web-2", svc="web", type=second_type, addr="203.0.113.2")
    )
    (files / "other.yaml").write_text(
        service.format(svc="other", vip="10.96.7.2")
        + "---\n"
        + slice_.format(name="other-1", svc="other", type="IPv4", addr=other_backend)
    )
    return files


def test_a_rejected_endpoint_slice_keeps_its_service_as_the_kernel_has_it(kernel: MemoryKernel, tmp_path: Path) -> None:
    """One of a Service's two EndpointSlices turns invalid: apply names the slice and its field,
    keeps that Service's real servers as they are (rather than drop the rejected slice's), says
    so, and still applies the other Service's change."""
    web, other = ServiceKey(Protocol.TCP, ip("10.96.7.1"), 80), ServiceKey(Protocol.TCP, ip("10.96.7.2"), 80)

    def reals(key: ServiceKey) -> set[str]:
        state = kernel.get(key)
        assert state is not None
        return {str(r.server.key.address) for r in state.real_servers}

    files = _two_slice_service(tmp_path, "IPv4", "203.0.113.9")
    code, _, err = run("apply", "-f", str(files), *NODE)
    assert code == 0, err
    assert reals(web) == {"203.0.113.1", "203.0.113.2"}
    files = _two_slice_service(tmp_path, "IPv5", "203.0.113.8")
    code, _, err = run("apply", "-f", str(files), *NODE)
    assert code != 0
    assert "EndpointSlice demo/web-2: addressType:" in err
    assert "Service demo/web: kept as it is in the kernel: its EndpointSlice web-2" in err
    assert "Traceback" not in err
    assert reals(web) == {"203.0.113.1", "203.0.113.2"}
    assert reals(other) == {"203.0.113.8"}


@pytest.mark.parametrize("command", ["apply", "diff", "validate"])
def test_one_shot_commands_read_and_write_without_the_cycle_collector(
    kernel: MemoryKernel, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """The collector is off while the manifests are read and translated and the kernel written,
    and on again after."""
    seen: list[bool] = []
    real_translate, real_execute = oneshot.translate, kernel.execute
    for module in (cli, oneshot):  # validate translates in cli, apply and diff in oneshot
        monkeypatch.setattr(
            module,
            "translate",
            lambda snapshot, settings: seen.append(gc.isenabled()) or real_translate(snapshot, settings),
        )
    monkeypatch.setattr(kernel, "execute", lambda ops: seen.append(gc.isenabled()) or real_execute(ops))
    assert gc.isenabled()
    code, _, err = run(command, "-f", str(EXAMPLES), *NODE)
    assert code in (0, 1), err
    assert seen[0] is False and not any(seen)
    assert len(seen) == (2 if command == "apply" else 1)
    assert gc.isenabled()


def test_collector_paused_restores_what_it_found() -> None:
    with pytest.raises(RuntimeError), oneshot.collector_paused():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with oneshot.collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_version_is_answered_without_loading_the_cli() -> None:
    """`ipvsctl version` and `--version` print what the CLI's version command prints, without
    importing typer, structlog or the pipeline (a version query costs start-up only)."""
    import subprocess
    import sys

    probe = (
        "import sys; from ipvsctl.entry import main; main(); "
        "print(sorted(m for m in ('typer', 'click', 'structlog', 'yaml', 'ipvsctl.cli') if m in sys.modules))"
    )
    _, expected, _ = run("version")
    for args in (["version"], ["--version"]):
        out = subprocess.run(
            [sys.executable, "-c", f"import sys; sys.argv = ['ipvsctl', *{args!r}]; {probe}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert out == expected + "[]\n", out
