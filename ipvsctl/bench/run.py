"""The benchmark's guest side: ``python -m ipvsctl.bench.run --wipe-ipvs --out results.json [--max N]``.

Run as root on a kernel with IPVS that nothing else uses (scripts/bench boots the test VM for
it, and passes ``--wipe-ipvs``): it empties IPVS and reloads the ip_vs module between
measurements. For N = 100, 1,000 and 10,000 Services of 10 endpoints each (up to ``--max``), it
measures

1. cold programming from an empty kernel: ``ipvsadm -R``, keepalived's checker process and
   ``ipvsctl apply`` on the same rule set, each checked to leave the same ``ipvsadm -Sn``;
2. a no-op resync: ``ipvsadm -Ln`` against the agent's full resync (in process) and ``observe`` +
   ``plan`` on a fresh connection;
3. one endpoint flip: the agent's partial sync (and file write → kernel) against one ``ipvsadm -e``;
4. the agent's peak RSS.

Results go to the JSON file after every size (so a run cut short keeps what it measured), and a
table is printed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ipvsctl import __version__, logs
from ipvsctl.bench import measure, rules
from ipvsctl.bench.apiserver import NODE_NAME
from ipvsctl.bench.measure import BenchError, say
from ipvsctl.bench.report import render_text
from ipvsctl.bench.results import Machine, Results, Size, Timing, failed
from ipvsctl.sources.kube.source import ENDPOINT_SLICES as KUBE_SLICES
from ipvsctl.sources.kube.source import SERVICES as KUBE_SERVICES

SIZES = (100, 1_000, 10_000)
WORKDIR = Path("/run/ipvsctl-bench")  # a tmpfs in the guest, not the 9p root


def stage_ipvsctl(workdir: Path) -> dict[str, str]:
    """Copy the ipvsctl package onto the guest's tmpfs and byte-compile it, as an installed package
    is; return the environment that makes the ``ipvsctl`` command import that copy.

    The checkout reaches the guest over a read-only 9p share with no compiled bytecode, so run
    from there every ``ipvsctl`` process would compile all its modules again over 9p (about 25 s
    of start-up in the VM): a cost of the test VM, not of ipvsctl."""
    import compileall

    import ipvsctl

    target = workdir / "lib"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(Path(ipvsctl.__file__).parent, target / "ipvsctl", ignore=shutil.ignore_patterns("__pycache__"))
    if not compileall.compile_dir(target, quiet=1):
        raise BenchError(f"byte-compiling the ipvsctl copy in {target} failed")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), env.get("PYTHONPATH", "")) if p)
    return env


def ipvsctl_command() -> list[str]:
    found = shutil.which("ipvsctl") or str(Path(sys.executable).with_name("ipvsctl"))
    return [found] if Path(found).exists() else [sys.executable, "-m", "ipvsctl"]


def first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as err:
        return f"not available ({err.strerror})"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cpuinfo(field: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == field:
            return value.strip()
    return "unknown"


def machine(args: argparse.Namespace) -> Machine:
    guest_cpu = cpuinfo("model name")
    if "TCG" in guest_cpu:
        emulation = "QEMU TCG software emulation, no KVM"
    elif "QEMU" in guest_cpu or "KVM" in guest_cpu:
        emulation = f"virtual machine ({guest_cpu})"
    else:
        emulation = f"none detected ({guest_cpu})"
    memory = None
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) // 1024
    return Machine(
        host_cpu=args.host_cpu,
        host_cores=args.host_cores,
        host_kernel=args.host_kernel,
        guest_kernel=platform.release(),
        guest_cpu=guest_cpu,
        guest_cpus=os.cpu_count(),
        guest_memory_mb=memory,
        emulation=emulation,
        python=platform.python_version(),
        ipvsctl=f"{__version__}, run from a byte-compiled copy on the guest's tmpfs",
        ipvsadm=first_line(["ipvsadm", "--version"]),
        keepalived=first_line(["keepalived", "--version"]),
    )


@dataclass(frozen=True)
class Inputs:
    """The rule set written down for each tool."""

    yaml_manifests: Path  # one <name>.yaml per Service, with its EndpointSlice
    json_manifests: Path  # one <name>.json per Service: a List, as kubectl get -o json prints it
    ipvsadm_rules: Path
    keepalived_config: Path


def write_inputs(directory: Path, services: tuple[rules.BenchService, ...]) -> Inputs:
    inputs = Inputs(
        directory / "manifests", directory / "json", directory / "ipvsadm.rules", directory / "keepalived.conf"
    )
    inputs.yaml_manifests.mkdir(parents=True)
    inputs.json_manifests.mkdir()
    for svc in services:
        (inputs.yaml_manifests / svc.file_name).write_text(rules.manifest(svc))
        (inputs.json_manifests / svc.json_file_name).write_text(rules.json_manifest(svc))
    inputs.ipvsadm_rules.write_text(rules.ipvsadm_rules(services))
    inputs.keepalived_config.write_text(rules.keepalived_config(services))
    return inputs


def took(name: str, timing: Timing) -> Timing:
    if timing.ok:
        say(f"  {name}: {timing.seconds:.4f} s (samples {', '.join(f'{s:.4f}' for s in timing.samples)})")
    else:
        say(f"  {name}: FAILED: {timing.error}")
    return timing


@dataclass(frozen=True)
class Run:
    """What every measurement at one size needs."""

    services: tuple[rules.BenchService, ...]
    expected: tuple[str, ...]  # sorted ipvsadm -Sn lines of the rule set
    inputs: Inputs
    directory: Path
    ipvsctl: tuple[str, ...]
    env: dict[str, str]


def cold(run: Run, size: Size, resets: list[str]) -> Size:
    """Cold programming from an empty kernel: ipvsadm -R, keepalived, ipvsctl apply from YAML and from JSON."""
    n = len(run.services)
    say(f"N={n}: cold programming from an empty kernel ({n * rules.ENDPOINTS} real servers)")
    resets.append(measure.reset_kernel())
    ipvsadm = measure.verified(measure.cold_ipvsadm(run.inputs.ipvsadm_rules), run.expected, "ipvsadm -R")
    size = replace(size, cold_ipvsadm=took("ipvsadm -R", ipvsadm))
    resets.append(measure.reset_kernel())
    if shutil.which("keepalived"):
        keepalived = measure.cold_keepalived(run.inputs.keepalived_config, run.directory, run.services, run.expected)
    else:
        keepalived = failed("keepalived is not installed")
    size = replace(size, cold_keepalived=took("keepalived", keepalived))
    for fmt, manifests in (("json", run.inputs.json_manifests), ("yaml", run.inputs.yaml_manifests)):
        resets.append(measure.reset_kernel())
        whole, programming = measure.cold_ipvsctl(run.ipvsctl, run.directory / f"state-{fmt}", manifests, run.env)
        whole = took(f"ipvsctl apply, {fmt.upper()}", measure.verified(whole, run.expected, f"ipvsctl apply ({fmt})"))
        programming = took("of which programming the kernel", programming if whole.ok else whole)
        if fmt == "json":
            size = replace(size, cold_ipvsctl_json=whole, cold_ipvsctl_json_program=programming)
        else:
            size = replace(size, cold_ipvsctl=whole, cold_ipvsctl_program=programming)
    return size  # the kernel holds what the YAML apply made, and state-yaml its record and caches


def no_op(run: Run, size: Size) -> Size:
    """With the YAML apply's kernel and state: ipvsadm -Ln, ipvsctl diff and version as processes,
    the agent's in-process resync."""
    state_dir = run.directory / "state-yaml"
    say(f"N={len(run.services)}: no-op resync")
    size = replace(
        size,
        list_ipvsadm=took("ipvsadm -Ln", measure.list_ipvsadm()),
        diff_ipvsctl=took(
            "ipvsctl diff (whole process, caches warm from the apply)",
            measure.diff_process(run.ipvsctl, state_dir, run.inputs.yaml_manifests, run.env),
        ),
        version_ipvsctl=took("ipvsctl version (whole process)", measure.version_process(run.ipvsctl, run.env)),
    )
    warm, fresh = measure.dump_diff(state_dir, run.inputs.yaml_manifests)
    return replace(
        size,
        dump_diff_ipvsctl=took("agent full resync", warm),
        dump_diff_fresh_ipvsctl=took("ipvsctl dump+diff, nothing reused", fresh),
    )


def stop_agent(agent: measure.Agent, notes: list[str], what: str) -> None:
    code = agent.stop()
    if code not in (0, -15):
        notes.append(f"the {what} agent exited {code} on SIGTERM")


def manifests_agent(run: Run, size: Size, resets: list[str], notes: list[str]) -> Size:
    """agent --manifests on an empty kernel with a fresh state directory: start → complete, then
    endpoint flips (file writes), then its peak RSS."""
    say(f"N={len(run.services)}: agent --manifests, from an empty kernel")
    resets.append(measure.reset_kernel())
    source = measure.manifests_source(run.inputs.yaml_manifests)
    agent = measure.Agent(run.ipvsctl, run.directory / "state-agent", source, run.directory / "agent.log", run.env)
    try:
        start, sync = measure.agent_start(agent, run.services, run.expected)
        size = replace(
            size,
            manifests_agent_start=took("start → kernel complete", start),
            manifests_agent_sync=took("its first full sync, as it logs it", sync),
        )
        if not start.ok:
            return size
        sync, e2e = measure.flips(agent, run.inputs.yaml_manifests, run.services)
        size = replace(size, flip_agent_sync=took("agent sync", sync), flip_agent_end_to_end=took("end to end", e2e))
        rss = agent.peak_rss_bytes()
        say(f"  agent peak RSS: {rss / 1e6:.1f} MB" if rss else "  agent peak RSS: not readable")
        return replace(size, agent_peak_rss_bytes=rss)
    except BenchError as err:
        say(f"  agent --manifests: FAILED: {err}")
        problem = failed(str(err))
        for name in ("manifests_agent_start", "flip_agent_sync", "flip_agent_end_to_end"):
            if not size.timing(name).ok:
                size = replace(size, **{name: problem})
        return size
    finally:
        stop_agent(agent, notes, "--manifests")


KUBE_PATHS = {"Services": KUBE_SERVICES, "EndpointSlices": KUBE_SLICES}


def kubernetes_agent(run: Run, size: Size, resets: list[str], notes: list[str]) -> Size:
    """agent --kubernetes against the test API server holding the rule set, on an empty kernel with
    a fresh state directory: start → source ready → complete, EndpointSlice changes, peak RSS."""
    n = len(run.services)
    say(f"N={n}: agent --kubernetes against the test API server, from an empty kernel")
    resets.append(measure.reset_kernel())
    try:
        api = measure.ApiServer(n, run.env, run.directory / "apiserver.log")
    except BenchError as err:
        say(f"  test API server: FAILED: {err}")
        return replace(size, kube_agent_start=failed(str(err)), kube_flip_end_to_end=failed(str(err)))
    try:
        kubeconfig = run.directory / "kubeconfig"
        measure.write_kubeconfig(kubeconfig, api.url)
        source = measure.kubernetes_source(kubeconfig, NODE_NAME)
        agent = measure.Agent(run.ipvsctl, run.directory / "state-kube", source, run.directory / "kube.log", run.env)
        try:
            start, sync = measure.agent_start(agent, run.services, run.expected)
            size = replace(
                size,
                kube_agent_ready=took("start → source ready", measure.since_start(agent, "kubernetes source ready")),
                kube_agent_start=took("start → kernel complete", start),
                kube_agent_sync=took("its first full sync, as it logs it", sync),
            )
            lists, problem = measure.describe_lists(api.requests(), KUBE_PATHS)
            say(f"  {lists}")
            size = replace(size, kube_lists=lists)
            if problem:
                notes.append(f"the agent did not list in chunks: {problem}")
            if not start.ok:
                return size
            sync, e2e = measure.kube_flips(agent, api, run.services)
            size = replace(
                size, kube_flip_agent_sync=took("agent sync", sync), kube_flip_end_to_end=took("API → kernel", e2e)
            )
            rss = agent.peak_rss_bytes()
            say(f"  agent peak RSS: {rss / 1e6:.1f} MB" if rss else "  agent peak RSS: not readable")
            return replace(size, kube_agent_peak_rss_bytes=rss)
        except BenchError as err:
            say(f"  agent --kubernetes: FAILED: {err}")
            problem_timing = failed(str(err))
            for name in ("kube_agent_start", "kube_flip_agent_sync", "kube_flip_end_to_end"):
                if not size.timing(name).ok:
                    size = replace(size, **{name: problem_timing})
            return size
        finally:
            stop_agent(agent, notes, "--kubernetes")
    finally:
        code = api.stop()
        if code != 0:
            notes.append(f"the test API server exited {code}")


def measure_size(n: int, workdir: Path, env: dict[str, str]) -> Size:
    services = rules.rule_set(n)
    directory = workdir / str(n)
    shutil.rmtree(directory, ignore_errors=True)
    run = Run(
        services=services,
        expected=tuple(sorted(rules.ipvsadm_lines(services))),
        inputs=write_inputs(directory, services),
        directory=directory,
        ipvsctl=tuple(ipvsctl_command()),
        env=env,
    )
    resets: list[str] = []
    notes: list[str] = []
    size = cold(run, Size(services=n, endpoints=rules.ENDPOINTS), resets)
    if size.cold_ipvsctl.ok:
        size = no_op(run, size)
        say(f"N={n}: one endpoint flip")
        size = replace(size, edit_ipvsadm=took("ipvsadm -e", measure.edit_ipvsadm(services[len(services) // 2])))
    else:
        notes.append("no resync, diff or ipvsadm -e figures: ipvsctl's cold YAML apply failed")
    size = manifests_agent(run, size, resets, notes)
    size = kubernetes_agent(run, size, resets, notes)
    shutil.rmtree(directory, ignore_errors=True)
    return replace(size, reset=", ".join(dict.fromkeys(resets)), notes=tuple(notes))


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ipvsctl.bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="results JSON file to write")
    parser.add_argument("--max", type=int, default=SIZES[-1], help="largest N to measure (default 10000)")
    parser.add_argument(
        "--sizes",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=SIZES,
        help="comma-separated Service counts (default 100,1000,10000)",
    )
    parser.add_argument("--host-cpu", default="unknown")
    parser.add_argument("--host-cores", type=int, default=None)
    parser.add_argument("--host-kernel", default="unknown")
    parser.add_argument("--command", default="", help="the host command line, for the record")
    parser.add_argument(
        "--host-version",
        type=lambda s: tuple(float(x) for x in s.split(",") if x),
        default=(),
        help="comma-separated seconds of `ipvsctl version` as a whole process on the host (scripts/bench times it)",
    )
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument(
        "--wipe-ipvs",
        action="store_true",
        help="required: agree that IPVS is emptied and ip_vs reloaded (scripts/bench passes it in the test VM)",
    )
    args = parser.parse_args(argv)
    # The in-process resync (measure.dump_diff) reads 10,000 files through the agent's code: its
    # per-file debug lines would otherwise reach the output, unconfigured structlog printing all.
    logs.configure("console", "warning")
    if not args.wipe_ipvs:
        parser.error(
            "this empties IPVS and reloads ip_vs; run it through scripts/bench (the test VM) or pass --wipe-ipvs"
        )
    if os.geteuid() != 0:
        parser.error("must run as root (it reloads ip_vs)")
    sizes = sorted(n for n in args.sizes if n <= args.max)
    if not sizes:
        parser.error(f"no size ≤ --max {args.max} in {args.sizes}")

    results = Results(
        machine=machine(args),
        sizes=(),
        command=args.command,
        guest_command=shlex.join([Path(sys.executable).name, "-m", "ipvsctl.bench.run", *(argv or sys.argv[1:])]),
        started=now(),
        max_services=sizes[-1],
        complete=False,
        host_version_ipvsctl=Timing(args.host_version) if args.host_version else failed("not measured on the host"),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    say(f"sizes {sizes}; machine: {results.machine}")
    began = time.monotonic()
    code = 0
    try:
        env = stage_ipvsctl(args.workdir)
        for n in sizes:
            size = measure_size(n, args.workdir, env)
            results = replace(results, sizes=(*results.sizes, size), finished=now())
            write_json(args.out, results)
            say(f"N={n} done after {time.monotonic() - began:.0f} s")
        results = replace(results, complete=True, finished=now())
    except BenchError as err:
        say(f"stopped: {err}")
        code = 1
    finally:
        write_json(args.out, results)
        try:
            measure.reset_kernel()
        except BenchError as err:
            say(f"final reset failed: {err}")
    print(render_text(results), flush=True)
    failures = [s for s in results.sizes for name in TIMINGS if s.timing(name).error]
    if failures:
        code = code or 1
    say(f"results in {args.out}")
    return code


TIMINGS = (
    "cold_ipvsctl", "cold_ipvsctl_program", "cold_ipvsctl_json", "cold_ipvsctl_json_program", "cold_ipvsadm",
    "cold_keepalived", "list_ipvsadm", "diff_ipvsctl", "version_ipvsctl", "dump_diff_ipvsctl",
    "dump_diff_fresh_ipvsctl", "edit_ipvsadm", "manifests_agent_start", "flip_agent_sync", "flip_agent_end_to_end",
    "kube_agent_start", "kube_flip_agent_sync", "kube_flip_end_to_end",
)  # fmt: skip


def write_json(path: Path, results: Results) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results.to_json(), indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
