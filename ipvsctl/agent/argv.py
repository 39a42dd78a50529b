"""`ipvsctl agent`'s command line read without the CLI framework, then ``agent.command.run``.

To read a command line, typer loads click, rich and pydantic: about 17 MB of the agent's
resident memory for its whole life (a fifth of its peak at 10,000 Services), and seconds of
start-up in an emulated VM. ``entry.main`` hands ``agent`` here first. Only an invocation this
parser fully understands is run here: the global options ``--log-format``, ``--log-level`` and
``--state-dir``, then ``agent`` and its own options, each as ``--name VALUE`` or
``--name=VALUE``, and the string options' environment variables (``IPVSCTL_<NAME>``,
``NODE_NAME``; an empty one counts as unset, as in the CLI). Anything else (``--help``, a typo,
a bad log level, a value for a flag, an environment variable for a repeatable option or a flag)
returns None and goes to ``ipvsctl.cli``, which gives the usual usage errors.
tests/unit/test_agent_argv.py runs both on the same arguments and environment and requires the
same call of ``run``. Option values are checked by ``run`` (``agent.config.build``) either way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipvsctl.kernel.base import Kernel
from ipvsctl.quick import LEVELS, option_pairs  # diff's reading of --name VALUE and --name=VALUE

FORMATS = ("console", "json")

# option → flags key; every one of these takes one value and the last given wins
STRINGS = {
    "--kubeconfig": "kubeconfig",
    "--node-name": "node_name",
    "--scheduler": "scheduler",
    "--interface": "interface",
    "--min-sync-period": "min_sync_period",
    "--sync-period": "sync_period",
    "--drain-timeout": "drain_timeout",
    "--drain-check": "drain_check",
    "--metrics-address": "metrics_address",
    "--lock-timeout": "lock_timeout",
}
REPEATED = {"--manifests": "manifests", "--node-ip": "node_ip"}
SWITCHES = {
    "--kubernetes": ("kubernetes", True),
    "--adopt": ("adopt", True),
    "--no-adopt": ("adopt", False),
    "--sysctls": ("sysctls", True),
    "--no-sysctls": ("sysctls", False),
}
SWITCH_KEYS = tuple(dict.fromkeys(key for key, _ in SWITCHES.values()))  # kubernetes, adopt, sysctls
FLAG_KEYS = (*STRINGS.values(), *REPEATED.values(), *SWITCH_KEYS)  # every key of the flags run() takes
GLOBALS = ("--log-format", "--log-level", "--state-dir")


def env_names(key: str) -> tuple[str, ...]:
    """The environment variables an agent option falls back to, first found wins."""
    name = f"IPVSCTL_{key.upper()}"
    return (name, "NODE_NAME") if key == "node_name" else (name,)


@dataclass(frozen=True)
class AgentArgs:
    """What the CLI hands ``agent.command.run``, and how it configures logging first."""

    config: Path | None
    flags: Mapping[str, Any]
    state_dir: Path
    log_format: str = "console"
    log_level: str = "info"


def _from_env(environ: Mapping[str, str], names: Sequence[str]) -> str | None:
    for name in names:
        if environ.get(name):
            return environ[name]
    return None


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> AgentArgs | None:
    """``[global options] agent [options]``, or None to leave it to the CLI."""
    if "agent" not in argv:
        return None
    split = list(argv).index("agent")
    before = option_pairs(argv[:split], set(GLOBALS), set())
    after = option_pairs(argv[split + 1 :], {"--config", *STRINGS, *REPEATED}, set(SWITCHES))
    if before is None or after is None:
        return None
    if any(environ.get(n) for key in (*REPEATED.values(), *SWITCH_KEYS) for n in env_names(key)):
        return None  # the CLI splits and converts these; leave them to it
    log_format, log_level = "console", "info"
    state_dir = environ.get("IPVSCTL_STATE_DIR") or "/run/ipvsctl"
    for name, value in before:
        if name == "--log-format":
            log_format = value
        elif name == "--log-level":
            log_level = value
        else:
            state_dir = value
    if log_format not in FORMATS or log_level not in LEVELS or not state_dir:
        return None
    flags: dict[str, Any] = dict.fromkeys(FLAG_KEYS)
    config = environ.get("IPVSCTL_CONFIG") or None
    for name, value in after:
        if name == "--config":
            config = value
        elif name in STRINGS:
            flags[STRINGS[name]] = value
        elif name in REPEATED:
            flags[REPEATED[name]] = [*(flags[REPEATED[name]] or ()), value]
        else:
            key, on = SWITCHES[name]
            flags[key] = on
    if config == "":
        return None
    for key in STRINGS.values():
        if flags[key] is None:
            flags[key] = _from_env(environ, env_names(key))
    return AgentArgs(None if config is None else Path(config), flags, Path(state_dir), log_format, log_level)


def run(args: AgentArgs, open_kernel: Callable[[str], Kernel]) -> int:
    """Configure logging and run the agent, as the CLI does; the exit code."""
    from ipvsctl import logs
    from ipvsctl.agent.command import run as run_agent

    logs.configure(args.log_format, args.log_level)
    interface = args.flags.get("interface") or "ipvsctl0"
    return run_agent(args.config, dict(args.flags), args.state_dir, lambda: open_kernel(interface))


def main(argv: Sequence[str], environ: Mapping[str, str], open_kernel: Callable[[str], Kernel]) -> int | None:
    """Run ``argv`` here when it is an ``agent`` invocation this module understands; None otherwise."""
    args = parse(argv, environ)
    if args is None:
        return None
    code = run(args, open_kernel)
    sys.stdout.flush()
    return code
