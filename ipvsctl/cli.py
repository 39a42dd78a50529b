"""The `ipvsctl` command: parse arguments, call the pipeline, render, exit. Nothing else.

Exit codes (every verb):

\b
  0  done; for `diff`: nothing would change
  1  `diff` only: changes are pending
  2  usage error (bad flag or argument)
  3  invalid input: some objects were rejected (the valid rest was still applied)
  4  the kernel refused some operations, or a virtual server we want belongs to someone else
  5  IPVS is not available (no ip_vs in the kernel, or not root / no CAP_NET_ADMIN)
  6  another ipvsctl holds the lock, or the ownership record cannot be used
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ipvsctl import logs, oneshot
from ipvsctl.apply import Result
from ipvsctl.entry import version_text
from ipvsctl.errors import LockBusy, Problem, StateError
from ipvsctl.kernel.base import Kernel, KernelUnavailable
from ipvsctl.model.desired import Desired, Owner
from ipvsctl.model.ipvs import SCHEDULERS, IPAddress, VirtualServerState
from ipvsctl.model.ops import DeleteService, Operation, UnbindAddress
from ipvsctl.oneshot import collector_paused
from ipvsctl.render import render_diff, render_json, render_table, render_yaml, rows
from ipvsctl.settings import Settings
from ipvsctl.sources.files import load
from ipvsctl.state import Store
from ipvsctl.translate import translate

EXIT_OK, EXIT_CHANGES, EXIT_USAGE, EXIT_INVALID, EXIT_KERNEL, EXIT_UNAVAILABLE, EXIT_STATE = range(7)


def open_netlink_kernel(interface: str) -> Kernel:
    from ipvsctl.kernel.netlink import NetlinkKernel

    return NetlinkKernel(interface=interface)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


# Tests replace these: a factory returning a MemoryKernel; the terminal question; the clock and
# sleep of `list --watch`.
KERNEL_FACTORY: Callable[[str], Kernel] = open_netlink_kernel
STDOUT_IS_TTY: Callable[[], bool] = stdout_is_tty
CLOCK: Callable[[], float] = time.monotonic
SLEEP: Callable[[float], None] = time.sleep

EXAMPLES = """\b
Examples:
  ipvsctl validate -f examples/
  sudo ipvsctl apply -f examples/ --node-ip 192.0.2.10
  sudo ipvsctl list --all
  sudo ipvsctl list --watch --interval 1
  ipvsctl --show-completion
  ipvsctl version"""

app = typer.Typer(
    help="Turn Kubernetes Services and their endpoints into Linux IPVS virtual servers.\n\n"
    + (__doc__ or "").split("\n\n", 1)[1]
    + "\n\n"
    + EXAMPLES,
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class Ctx:
    log_format = "console"
    state_dir = Path("/run/ipvsctl")


CTX = Ctx()

Files = Annotated[
    list[str],
    typer.Option(
        "-f",
        "--filename",
        metavar="PATH",
        help=("Manifest file, directory (recursive *.yaml/*.yml/*.json) or - for stdin. Repeatable."),
    ),
]
NodeIP = Annotated[
    list[str] | None,
    typer.Option(
        "--node-ip",
        metavar="IP",
        help=(
            "Node address for NodePort virtual servers. Repeatable. Default: this host's "
            "addresses minus loopback, IPv6 link-local and the dummy interface's."
        ),
    ),
]
NodeName = Annotated[
    str | None,
    typer.Option(
        "--node-name",
        metavar="NAME",
        envvar="NODE_NAME",
        help=("This node's name, for externalTrafficPolicy/internalTrafficPolicy: Local."),
    ),
]
Scheduler = Annotated[
    str,
    typer.Option(
        "--scheduler",
        metavar="NAME",
        help=f"Default scheduler for Services without the ipvsctl.io/scheduler annotation ({', '.join(SCHEDULERS)}).",
    ),
]
Interface = Annotated[
    str, typer.Option("--interface", metavar="NAME", help="Dummy interface that holds virtual addresses.")
]
Adopt = Annotated[
    bool,
    typer.Option(
        "--adopt", help=("Take over existing virtual servers that the manifests describe but ipvsctl did not create.")
    ),
]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Parse every manifest file; do not use or write the parse cache under --state-dir.",
    ),
]
LockTimeout = Annotated[float, typer.Option("--lock-timeout", help="Seconds to wait for another ipvsctl to finish.")]


def show_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def main_options(
    log_format: Annotated[str, typer.Option("--log-format", help="console or json")] = "console",
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")] = "info",
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", envvar="IPVSCTL_STATE_DIR", help=("Where the ownership record and lock live.")),
    ] = Path("/run/ipvsctl"),
    version_flag: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=show_version, help="Print the version and exit."),
    ] = False,
) -> None:
    if log_format not in ("console", "json"):
        raise typer.BadParameter("must be console or json", param_hint="--log-format")
    CTX.log_format = log_format
    CTX.state_dir = state_dir
    logs.configure(log_format, log_level)


def fail(code: int, message: str) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def report(problems: list[Problem]) -> None:
    log = logs.get()
    for p in problems:
        if CTX.log_format == "json":
            getattr(log, p.severity)(
                "invalid input",
                file=p.origin.file,
                document=p.origin.document + 1 if p.origin.document >= 0 else None,  # 1-based, as in text
                object=f"{p.origin.kind} {p.origin.namespace}/{p.origin.name}" if p.origin.kind else None,
                field=p.field,
                message=p.message,
            )
        else:
            typer.echo(f"{p.severity}: {p}", err=True)


def parse_ips(values: list[str] | None) -> tuple[IPAddress, ...]:
    out = []
    for v in values or []:
        try:
            out.append(ipaddress.ip_address(v))
        except ValueError:
            raise typer.BadParameter(f"{v!r} is not an IP address", param_hint="--node-ip") from None
    return tuple(out)


def check_scheduler(name: str) -> str:
    if name not in SCHEDULERS:
        raise typer.BadParameter(
            f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}", param_hint="--scheduler"
        )
    return name


@contextmanager
def kernel_session(interface: str) -> Iterator[Kernel]:
    """Open the kernel; turn 'no IPVS' and 'not allowed' into one line and exit 5."""
    try:
        kernel = KERNEL_FACTORY(interface)
    except KernelUnavailable as err:
        raise fail(EXIT_UNAVAILABLE, str(err)) from None
    try:
        yield kernel
    except KernelUnavailable as err:
        raise fail(EXIT_UNAVAILABLE, str(err)) from None
    finally:
        kernel.close()


@contextmanager
def locked(store: Store, timeout: float) -> Iterator[None]:
    try:
        with store.locked(timeout):
            yield
    except (LockBusy, StateError) as err:
        raise fail(EXIT_STATE, str(err)) from None


def log_note(level: str, event: str, reason: str) -> None:
    getattr(logs.get(), level)(event, reason=reason)


def reconcile(
    files: list[str] | None, settings: Settings, kernel: Kernel, *, dry_run: bool, cached: bool = True
) -> tuple[Desired, Result]:
    """oneshot.reconcile, its record failures as exit 6."""
    try:
        return oneshot.reconcile(
            files, settings, kernel, log_note, dry_run=dry_run, cache_dir=CTX.state_dir / "cache" if cached else None
        )
    except StateError as err:
        raise fail(EXIT_STATE, str(err)) from None


def make_settings(
    node_ip: list[str] | None,
    node_name: str | None,
    scheduler: str,
    interface: str,
    adopt: bool = False,
    **extra: object,
) -> Settings:
    if node_name:
        extra["node_name"] = node_name
    return Settings(
        node_ips=parse_ips(node_ip),
        scheduler=check_scheduler(scheduler),
        interface=interface,
        state_dir=CTX.state_dir,
        adopt=adopt,
        **extra,
    )  # type: ignore[arg-type]


def outcome(desired: Desired, result: Result | None) -> int:
    """Report problems and kernel failures; return the exit code."""
    report(list(desired.problems))
    code = EXIT_INVALID if any(p.severity == "error" for p in desired.problems) else EXIT_OK
    if result is None:
        return code
    report(list(result.plan.conflicts))
    for owner, err in result.failures():
        who = f"{owner}: " if owner else ""
        typer.echo(f"error: {who}{err.message}", err=True)
    if result.plan.conflicts or result.errors:
        code = EXIT_KERNEL
    return code


@app.command()
def validate(
    filename: Files,
    node_ip: NodeIP = None,
    node_name: NodeName = None,
    scheduler: Scheduler = "rr",
) -> None:
    """Check manifests without touching the kernel. Prints every mistake: file, object, field, why.

    \b
    Examples:
      ipvsctl validate -f examples/
      kubectl get svc,endpointslices -A -o yaml | ipvsctl validate -f -
    """
    settings = make_settings(node_ip, node_name, scheduler, "ipvsctl0")
    with collector_paused():
        desired = translate(load(filename), settings)
    code = outcome(desired, None)
    if code == EXIT_OK:
        typer.echo(
            f"ok: {len({d.owner.service for d in desired.services.values()})} Services, "
            f"{len(desired.services)} virtual servers"
        )
    raise typer.Exit(code)


@app.command()
def diff(
    filename: Files,
    node_ip: NodeIP = None,
    node_name: NodeName = None,
    scheduler: Scheduler = "rr",
    interface: Interface = "ipvsctl0",
    adopt: Adopt = False,
    no_cache: NoCache = False,
) -> None:
    """Show what `apply` would change. Exit 0: nothing; 1: changes pending; more: errors.

    \b
    Examples:
      sudo ipvsctl diff -f examples/
      sudo ipvsctl diff -f examples/web.yaml --node-ip 192.0.2.10 && echo "in step"
    """
    settings = make_settings(node_ip, node_name, scheduler, interface, adopt)
    with kernel_session(interface) as kernel:
        desired, result = reconcile(filename, settings, kernel, dry_run=True, cached=not no_cache)
    if result.plan.ops:
        typer.echo(render_diff(result.plan.ops, result.owners))
    code = outcome(desired, result)
    raise typer.Exit(code if code != EXIT_OK else (EXIT_CHANGES if result.plan.ops else EXIT_OK))


@app.command()
def apply(
    filename: Files,
    node_ip: NodeIP = None,
    node_name: NodeName = None,
    scheduler: Scheduler = "rr",
    interface: Interface = "ipvsctl0",
    adopt: Adopt = False,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            help=("Seconds a leaving TCP real server may keep connections at weight 0 before it is deleted."),
        ),
    ] = 60.0,
    sysctls: Annotated[
        bool,
        typer.Option(
            "--sysctls/--no-sysctls",
            help=(
                "Set net.ipv4.vs.conntrack, expire_nodest_conn, expire_quiescent_template and "
                "ip_forward as kube-proxy does."
            ),
        ),
    ] = True,
    lock_timeout: LockTimeout = 10.0,
    no_cache: NoCache = False,
) -> None:
    """Make the virtual servers ipvsctl owns equal to what the manifests describe.

    Valid Services are applied even when others are rejected (exit 3 then). Real servers that
    leave while they still hold TCP connections are drained at weight 0 and deleted by a later
    run once idle (or after --drain-timeout).

    \b
    Examples:
      sudo ipvsctl apply -f examples/ --node-ip 192.0.2.10
      sudo ipvsctl apply -f examples/ --scheduler wlc --drain-timeout 300
    """
    settings = make_settings(
        node_ip,
        node_name,
        scheduler,
        interface,
        adopt,
        drain_timeout=drain_timeout,
        set_sysctls=sysctls,
        lock_timeout=lock_timeout,
    )
    with kernel_session(interface) as kernel, locked(Store(settings.state_dir), lock_timeout):
        desired, result = reconcile(filename, settings, kernel, dry_run=False, cached=not no_cache)
    failed = len(result.errors)
    logs.get().info(
        "applied",
        operations=len(result.plan.ops) - failed,
        failed=failed,
        virtual_servers=len(result.plan.target.services),
        seconds={phase: round(took, 3) for phase, took in result.seconds.items()},
    )
    raise typer.Exit(outcome(desired, result))


@app.command("list")
def list_(
    output: Annotated[str, typer.Option("-o", "--output", help="table, wide, json or yaml")] = "table",
    stats: Annotated[bool, typer.Option("--stats", help="Add packet, byte and connection counters.")] = False,
    rate: Annotated[
        bool,
        typer.Option(
            "--rate",
            help="Add per-second rates (the kernel's estimates, refreshed every 2 s; --watch measures its own).",
        ),
    ] = False,
    show_all: Annotated[
        bool, typer.Option("--all", "-A", help=("Also show virtual servers ipvsctl did not create, marked <foreign>."))
    ] = False,
    interface: Interface = "ipvsctl0",
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Redraw every --interval seconds until Ctrl-C, with rates measured between two reads.",
        ),
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            "-n",
            metavar="SECONDS",
            show_default=False,
            help="With --watch: seconds between frames, more than 0 (default 2).",
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option("--count", metavar="N", min=1, show_default=False, help="With --watch: stop after N frames."),
    ] = None,
    color: Annotated[
        str,
        typer.Option(
            "--color",
            metavar="auto|always|never",
            help="Colour the table: auto means on a terminal, unless NO_COLOR is set or TERM=dumb.",
        ),
    ] = "auto",
) -> None:
    """Show virtual servers with the Service each was made for.

    On a terminal the table is coloured: bold header, <foreign> rows dim, weight-0 (draining)
    real servers yellow, red where no real server takes new connections. json and yaml never are.

    With --watch the table is redrawn every --interval seconds until Ctrl-C (on a terminal the
    screen is cleared first; otherwise frames follow each other under a timestamp), and the rate
    columns show rates measured between two reads rather than the kernel's 2 s estimates.

    \b
    Examples:
      sudo ipvsctl list
      sudo ipvsctl list -o wide --stats --all
      sudo ipvsctl list -o json
      sudo ipvsctl list --watch --interval 1
      sudo ipvsctl list -w --count 5 --color never > rates.log
    """
    from ipvsctl import colour
    from ipvsctl.checks import report

    if output not in ("table", "wide", "json", "yaml"):
        raise typer.BadParameter("must be table, wide, json or yaml", param_hint="--output")
    if color not in colour.MODES:
        raise typer.BadParameter(f"must be {', '.join(colour.MODES)}", param_hint="--color")
    if not watch and (interval is not None or count is not None):
        raise typer.BadParameter("only with --watch", param_hint="--interval/--count")
    if watch and output not in ("table", "wide"):
        raise typer.BadParameter(
            "works with -o table or wide; for json, run `ipvsctl list -o json` in a loop", param_hint="--watch"
        )
    if interval is not None and not interval > 0:
        raise typer.BadParameter("must be more than 0 seconds", param_hint="--interval")
    store = Store(CTX.state_dir)

    def items(dump: Sequence[VirtualServerState]) -> list[tuple[VirtualServerState, Owner | None]]:
        try:
            owned = store.load()
        except StateError as err:
            raise fail(EXIT_STATE, str(err)) from None
        return rows(dump, owned.services, show_all)

    def checks() -> report.Table | None:
        servers = report.read(CTX.state_dir)
        return report.Table(servers) if servers else None

    tty = STDOUT_IS_TTY()
    paint = output in ("table", "wide") and colour.wanted(color, isatty=tty, environ=os.environ)
    if not watch:
        with kernel_session(interface) as kernel:
            dump = kernel.dump()
        if output == "json":
            typer.echo(render_json(items(dump), checks()))
        elif output == "yaml":
            typer.echo(render_yaml(items(dump), checks()), nl=False)
        else:
            table = render_table(
                items(dump), wide=output == "wide", stats=stats, rate=rate, colour=paint, health=checks()
            )
            typer.echo(table, color=paint)
        return

    from ipvsctl import watch as watching

    every = interval or 2.0
    clear = tty and os.environ.get("TERM") != "dumb"
    shown = 0

    def show(dump: Sequence[VirtualServerState], rates: Mapping[watching.RateKey, watching.Rates]) -> None:
        nonlocal shown
        body = render_table(
            items(dump), wide=output == "wide", stats=stats, rate=True, rates=rates, colour=paint, health=checks()
        )
        typer.echo(watching.frame(body, interval=every, when=time.time(), first=not shown, clear=clear), color=True)
        shown += 1

    try:
        with kernel_session(interface) as kernel:
            watching.loop(kernel.dump, show, interval=every, count=count, clock=CLOCK, sleep=SLEEP)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_OK) from None


@app.command()
def cleanup(
    interface: Interface = "ipvsctl0",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be removed.")] = False,
    lock_timeout: LockTimeout = 10.0,
) -> None:
    """Remove exactly what ipvsctl created: its virtual servers and the addresses it bound.

    Virtual servers made by anyone else are never touched.

    \b
    Examples:
      sudo ipvsctl cleanup --dry-run
      sudo ipvsctl cleanup
    """
    settings = Settings(interface=interface, state_dir=CTX.state_dir, set_sysctls=False)
    with kernel_session(interface) as kernel, locked(Store(CTX.state_dir), lock_timeout):
        _, result = reconcile(None, settings, kernel, dry_run=dry_run)
    removed: list[Operation] = [op for op in result.plan.ops if isinstance(op, DeleteService | UnbindAddress)]
    if dry_run or removed:
        typer.echo(render_diff(removed, result.owners) or "nothing to remove")
    raise typer.Exit(outcome(Desired(), result))


def _env(name: str) -> str:
    return f"IPVSCTL_{name.upper().replace('-', '_')}"


def _opt(name: str, help_text: str, metavar: str | None = None, negative: bool = False) -> Any:
    """An agent option that may also come from IPVSCTL_<NAME>; ``negative`` adds --no-<name>."""
    flag = f"--{name}/--no-{name}" if negative else f"--{name}"
    return typer.Option(flag, help=help_text, metavar=metavar, envvar=_env(name), show_default=False)


@app.command()
def agent(
    config: Annotated[
        Path | None, typer.Option("--config", metavar="FILE", envvar="IPVSCTL_CONFIG", help="YAML config file.")
    ] = None,
    manifests: Annotated[
        list[str] | None, _opt("manifests", "Watch this manifest directory or file. Repeatable.", "PATH")
    ] = None,
    kubernetes: Annotated[
        bool | None, _opt("kubernetes", "Watch Services, EndpointSlices and this Node in the Kubernetes API.")
    ] = None,
    kubeconfig: Annotated[
        str | None, _opt("kubeconfig", "Kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config).", "FILE")
    ] = None,
    node_name: Annotated[
        str | None,
        typer.Option(
            "--node-name",
            metavar="NAME",
            envvar=["IPVSCTL_NODE_NAME", "NODE_NAME"],
            show_default=False,
            help="This node's name (Local traffic policies; the Node whose addresses NodePorts use). "
            "Default: host name.",
        ),
    ] = None,
    node_ip: Annotated[
        list[str] | None,
        _opt("node-ip", "Node address for NodePorts. Repeatable. Default: the Node's addresses, or this host's.", "IP"),
    ] = None,
    scheduler: Annotated[str | None, _opt("scheduler", "Default scheduler (default rr).", "NAME")] = None,
    interface: Annotated[
        str | None, _opt("interface", "Dummy interface for virtual addresses (default ipvsctl0).", "NAME")
    ] = None,
    adopt: Annotated[
        bool | None, _opt("adopt", "Take over existing virtual servers the input describes.", None, negative=True)
    ] = None,
    sysctls: Annotated[
        bool | None, _opt("sysctls", "Set the IPVS sysctls kube-proxy sets (default on).", None, negative=True)
    ] = None,
    min_sync_period: Annotated[
        str | None, _opt("min-sync-period", "Least time between two syncs; changes are coalesced (default 1s).", "DUR")
    ] = None,
    sync_period: Annotated[
        str | None, _opt("sync-period", "Full resync reading the whole kernel, repairing drift (default 30s).", "DUR")
    ] = None,
    drain_timeout: Annotated[
        str | None, _opt("drain-timeout", "Longest a leaving TCP real server drains at weight 0 (default 60s).", "DUR")
    ] = None,
    drain_check: Annotated[
        str | None, _opt("drain-check", "How often draining real servers are checked (default 2s).", "DUR")
    ] = None,
    metrics_address: Annotated[
        str | None,
        _opt("metrics-address", "Serve /metrics and /healthz here; empty to disable (default 127.0.0.1:9842).", "ADDR"),
    ] = None,
    lock_timeout: Annotated[
        str | None, _opt("lock-timeout", "How long to wait for another ipvsctl's lock (default 10s).", "DUR")
    ] = None,
) -> None:
    """Keep IPVS in step with a manifest directory or the Kubernetes API until stopped.

    Flags may also come from --config (YAML, the flags' names as keys) and IPVSCTL_* environment
    variables; flags win. SIGTERM/SIGINT stop the agent and leave IPVS as it is; SIGHUP reloads.

    \b
    Examples:
      sudo ipvsctl agent --manifests /etc/ipvsctl/manifests
      ipvsctl agent --kubernetes --node-name "$NODE_NAME"
      curl -s 127.0.0.1:9842/metrics ; curl -s 127.0.0.1:9842/healthz
    """
    from ipvsctl.agent.command import run

    flags = {k: v for k, v in locals().items() if k not in ("config", "run")}
    raise typer.Exit(run(config, flags, CTX.state_dir, lambda: KERNEL_FACTORY(interface or "ipvsctl0")))


@app.command("import")
def import_(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE|-]",
            show_default=False,
            help="keepalived.conf (includes are followed), or ipvsadm -Sn output (default: stdin).",
        ),
    ] = None,
    from_: Annotated[
        str, typer.Option("--from", metavar="keepalived|ipvsadm", help="What the input is.")
    ] = "keepalived",
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="DIR",
            help="Write one file per Service here; default: stdout, as one YAML stream.",
        ),
    ] = None,
    namespace: Annotated[str, typer.Option("--namespace", metavar="NAME", help="Namespace of the manifests.")] = (
        "imported"
    ),
) -> None:
    """Write Service and EndpointSlice manifests equivalent to a keepalived.conf or ipvsadm -Sn output.

    What cannot be expressed is listed on stderr as FILE:LINE: what and why, and the exit code
    is 3; everything else is still written.

    \b
    Examples:
      ipvsctl import /etc/keepalived/keepalived.conf -o /etc/ipvsctl/manifests
      sudo ipvsadm -Sn | ipvsctl import --from ipvsadm
    """
    from ipvsctl.importing import command

    if from_ not in command.SOURCES:
        raise typer.BadParameter(f"must be {' or '.join(command.SOURCES)}", param_hint="--from")
    if from_ == "keepalived" and source is None:
        raise typer.BadParameter("name the keepalived.conf to read", param_hint="FILE")
    if len(namespace) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace):
        raise typer.BadParameter("must be a DNS label (lower-case letters, digits, '-')", param_hint="--namespace")
    code = command.run(source or "-", from_, output, namespace, lambda text, err: typer.echo(text, err=err))
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print ipvsctl's version, then Python's.

    \b
    Examples:
      ipvsctl version
      ipvsctl --version
    """
    typer.echo(version_text())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
