"""`ipvsctl diff` without the CLI framework: the command scripts and monitors run most often.

Importing typer, click and structlog is most of a no-op ``diff``'s start-up (about 0.1 s on a
host, a second or more in an emulated VM). ``entry.main`` hands ``diff`` here first. Only an
invocation this parser fully understands is run here: the global options ``--log-level`` and
``--state-dir``, and ``diff``'s own options, each as ``--name VALUE`` or ``--name=VALUE``
(``-f VALUE`` for ``--filename``), every value valid. Anything else (``--help``, a typo, a bad
address, JSON logs, no ``-f``) returns None and goes to ``ipvsctl.cli``, which does the same
work and gives the usual usage errors. tests/unit/test_quick.py runs both on the same
arguments and requires the same output and exit code.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ipvsctl.errors import StateError
from ipvsctl.kernel.base import Kernel, KernelUnavailable
from ipvsctl.model.ipvs import SCHEDULERS, IPAddress

EXIT_OK, EXIT_CHANGES, EXIT_INVALID, EXIT_KERNEL, EXIT_UNAVAILABLE, EXIT_STATE = 0, 1, 3, 4, 5, 6
LEVELS = ("debug", "info", "warning", "error")


def open_netlink_kernel(interface: str) -> Kernel:
    from ipvsctl.kernel.netlink import NetlinkKernel

    return NetlinkKernel(interface=interface)


KERNEL_FACTORY: Callable[[str], Kernel] = open_netlink_kernel  # tests replace it


@dataclass
class DiffArgs:
    files: list[str] = field(default_factory=list)
    node_ips: list[IPAddress] = field(default_factory=list)
    node_name: str | None = None
    scheduler: str = "rr"
    interface: str = "ipvsctl0"
    adopt: bool = False
    cached: bool = True
    log_level: str = "info"
    state_dir: Path = Path("/run/ipvsctl")


_GLOBAL = {"--log-level", "--state-dir"}
_VALUED = {"-f": "--filename", "--filename": "--filename", "--node-ip": "--node-ip", "--node-name": "--node-name"}
_VALUED |= {"--scheduler": "--scheduler", "--interface": "--interface"}
_FLAGS = {"--adopt", "--no-cache"}


def option_pairs(
    argv: Sequence[str], valued: set[str] | dict[str, str], flags: set[str]
) -> list[tuple[str, str]] | None:
    """(option, value) pairs, flags with value ""; None on anything not understood."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name.startswith("--") and eq and name in valued:
            out.append((name, value))
        elif arg in valued and i + 1 < len(argv):
            out.append((arg, argv[i + 1]))
            i += 1
        elif arg in flags:
            out.append((arg, ""))
        else:
            return None
        i += 1
    return out


def parse_diff(argv: Sequence[str], environ: dict[str, str]) -> DiffArgs | None:
    """The arguments of ``[global options] diff [options]``, or None to leave them to the CLI."""
    if "diff" not in argv:
        return None
    split = list(argv).index("diff")
    before, after = option_pairs(argv[:split], _GLOBAL, set()), option_pairs(argv[split + 1 :], _VALUED, _FLAGS)
    if before is None or after is None:
        return None
    args = DiffArgs(state_dir=Path(environ.get("IPVSCTL_STATE_DIR") or "/run/ipvsctl"))
    args.node_name = environ.get("NODE_NAME") or None
    for name, value in before:
        if name == "--log-level":
            if value not in LEVELS:
                return None
            args.log_level = value
        else:
            args.state_dir = Path(value)
    for name, value in after:
        name = _VALUED.get(name, name)
        if name == "--filename":
            args.files.append(value)
        elif name == "--node-ip":
            try:
                args.node_ips.append(ipaddress.ip_address(value))
            except ValueError:
                return None
        elif name == "--node-name":
            args.node_name = value
        elif name == "--scheduler":
            if value not in SCHEDULERS:
                return None
            args.scheduler = value
        elif name == "--interface":
            args.interface = value
        elif name == "--adopt":
            args.adopt = True
        else:
            args.cached = False
    return args if args.files else None


class _Notes:
    """Cache notes, logged through the usual logging set-up, imported only when one comes."""

    def __init__(self, level: str) -> None:
        self.level = level
        self.log: object | None = None

    def __call__(self, level: str, event: str, reason: str) -> None:
        if LEVELS.index(level) < LEVELS.index(self.level):
            return
        if self.log is None:
            from ipvsctl import logs

            logs.configure("console", self.level)
            self.log = logs.get()
        getattr(self.log, level)(event, reason=reason)


def diff(args: DiffArgs) -> int:
    """What ``ipvsctl diff`` does and prints; the exit code."""
    from ipvsctl import oneshot
    from ipvsctl.render import render_diff
    from ipvsctl.settings import Settings

    extra = {"node_name": args.node_name} if args.node_name else {}
    settings = Settings(
        node_ips=tuple(args.node_ips),
        scheduler=args.scheduler,
        interface=args.interface,
        state_dir=args.state_dir,
        adopt=args.adopt,
        **extra,  # type: ignore[arg-type]
    )
    try:
        kernel = KERNEL_FACTORY(args.interface)
    except KernelUnavailable as err:
        return _fail(EXIT_UNAVAILABLE, str(err))
    try:
        cache_dir = args.state_dir / "cache" if args.cached else None
        desired, result = oneshot.reconcile(
            args.files, settings, kernel, _Notes(args.log_level), dry_run=True, cache_dir=cache_dir
        )
    except KernelUnavailable as err:
        return _fail(EXIT_UNAVAILABLE, str(err))
    except StateError as err:
        return _fail(EXIT_STATE, str(err))
    finally:
        kernel.close()
    if result.plan.ops:
        sys.stdout.write(render_diff(result.plan.ops, result.owners) + "\n")
    for problem in (*desired.problems, *result.plan.conflicts):
        sys.stderr.write(f"{problem.severity}: {problem}\n")
    for owner, err in result.failures():
        sys.stderr.write(f"error: {owner}: {err.message}\n" if owner else f"error: {err.message}\n")
    if result.plan.conflicts or result.errors:
        return EXIT_KERNEL
    if any(p.severity == "error" for p in desired.problems):
        return EXIT_INVALID
    return EXIT_CHANGES if result.plan.ops else EXIT_OK


def _fail(code: int, message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def main(argv: Sequence[str]) -> int | None:
    """Run ``argv`` here when it is a ``diff`` this module understands; None otherwise."""
    args = parse_diff(argv, dict(os.environ))
    return None if args is None else diff(args)
