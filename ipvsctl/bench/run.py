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
from dataclasses import replace
from pathlib import Path

from ipvsctl import __version__
from ipvsctl.bench import measure, rules
from ipvsctl.bench.measure import BenchError, say
from ipvsctl.bench.report import render_text
from ipvsctl.bench.results import Machine, Results, Size, Timing, failed

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


def write_inputs(directory: Path, services: tuple[rules.BenchService, ...]) -> tuple[Path, Path, Path]:
    """(manifest directory, ipvsadm -R input, keepalived config) for the rule set."""
    manifests = directory / "manifests"
    manifests.mkdir(parents=True)
    for svc in services:
        (manifests / svc.file_name).write_text(rules.manifest(svc))
    rules_file = directory / "ipvsadm.rules"
    rules_file.write_text(rules.ipvsadm_rules(services))
    config = directory / "keepalived.conf"
    config.write_text(rules.keepalived_config(services))
    return manifests, rules_file, config


def took(name: str, timing: Timing) -> Timing:
    if timing.ok:
        say(f"  {name}: {timing.seconds:.4f} s (samples {', '.join(f'{s:.4f}' for s in timing.samples)})")
    else:
        say(f"  {name}: FAILED: {timing.error}")
    return timing


def measure_size(n: int, workdir: Path, env: dict[str, str]) -> Size:
    services = rules.rule_set(n)
    directory = workdir / str(n)
    shutil.rmtree(directory, ignore_errors=True)
    manifests, rules_file, config = write_inputs(directory, services)
    expected = sorted(rules.ipvsadm_lines(services))
    ipvsctl = ipvsctl_command()
    resets: list[str] = []
    notes: list[str] = []
    size = Size(services=n, endpoints=rules.ENDPOINTS)

    say(f"N={n}: cold programming from an empty kernel ({n * rules.ENDPOINTS} real servers)")
    resets.append(measure.reset_kernel())
    cold_ipvsadm = took("ipvsadm -R", measure.verified(measure.cold_ipvsadm(rules_file), expected, "ipvsadm -R"))
    resets.append(measure.reset_kernel())
    if shutil.which("keepalived"):
        cold_keepalived = took("keepalived", measure.cold_keepalived(config, directory, services, expected))
    else:
        cold_keepalived = took("keepalived", failed("keepalived is not installed"))
    resets.append(measure.reset_kernel())
    state_dir = directory / "state"
    whole, programming = measure.cold_ipvsctl(ipvsctl, state_dir, manifests, env)
    cold_ipvsctl = took("ipvsctl apply", measure.verified(whole, expected, "ipvsctl apply"))
    cold_ipvsctl_program = took("of which programming the kernel", programming if cold_ipvsctl.ok else cold_ipvsctl)
    size = replace(
        size,
        reset=", ".join(dict.fromkeys(resets)),
        cold_ipvsadm=cold_ipvsadm,
        cold_keepalived=cold_keepalived,
        cold_ipvsctl=cold_ipvsctl,
        cold_ipvsctl_program=cold_ipvsctl_program,
    )
    if not cold_ipvsctl.ok:
        notes.append("no resync, flip or memory figures: ipvsctl's cold apply failed")
        return replace(size, notes=tuple(notes))

    say(f"N={n}: no-op resync")
    size = replace(
        size,
        list_ipvsadm=took("ipvsadm -Ln", measure.list_ipvsadm()),
        diff_ipvsctl=took("ipvsctl diff (whole process)", measure.diff_process(ipvsctl, state_dir, manifests, env)),
        version_ipvsctl=took("ipvsctl version (whole process)", measure.version_process(ipvsctl, env)),
    )
    warm, fresh = measure.dump_diff(state_dir, manifests)
    size = replace(
        size,
        dump_diff_ipvsctl=took("agent full resync", warm),
        dump_diff_fresh_ipvsctl=took("ipvsctl dump+diff, nothing reused", fresh),
    )

    say(f"N={n}: one endpoint flip")
    size = replace(size, edit_ipvsadm=took("ipvsadm -e", measure.edit_ipvsadm(services[len(services) // 2])))
    agent = measure.Agent(ipvsctl, state_dir, manifests, directory / "agent.log", env)
    try:
        first = agent.wait(measure.is_sync("full"), 3600.0, "the agent's first full sync")
        size = replace(size, agent_first_full_sync=took("agent first full sync", Timing((float(first["seconds"]),))))
        if first.get("operations"):
            notes.append(f"the agent's first full sync made {first['operations']} operations (expected 0)")
        sync, e2e = measure.flips(agent, manifests, services)
        size = replace(size, flip_agent_sync=took("agent sync", sync), flip_agent_end_to_end=took("end to end", e2e))
        rss = agent.peak_rss_bytes()
        say(f"  agent peak RSS: {rss / 1e6:.1f} MB" if rss else "  agent peak RSS: not readable")
        size = replace(size, agent_peak_rss_bytes=rss)
    except BenchError as err:
        say(f"  agent: FAILED: {err}")
        size = replace(size, flip_agent_sync=failed(str(err)), flip_agent_end_to_end=failed(str(err)))
    finally:
        code = agent.stop()
        if code not in (0, -15):
            notes.append(f"the agent exited {code} on SIGTERM")
    shutil.rmtree(directory, ignore_errors=True)
    return replace(size, notes=tuple(notes))


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
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument(
        "--wipe-ipvs",
        action="store_true",
        help="required: agree that IPVS is emptied and ip_vs reloaded (scripts/bench passes it in the test VM)",
    )
    args = parser.parse_args(argv)
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
    "cold_ipvsctl", "cold_ipvsctl_program", "cold_ipvsadm", "cold_keepalived", "list_ipvsadm", "dump_diff_ipvsctl",
    "dump_diff_fresh_ipvsctl", "edit_ipvsadm", "flip_agent_sync", "flip_agent_end_to_end",
)  # fmt: skip


def write_json(path: Path, results: Results) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results.to_json(), indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
