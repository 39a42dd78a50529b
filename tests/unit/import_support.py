"""Helpers for the `ipvsctl import` tests: the manifests an import writes, run through
ipvsctl's own pipeline (files → translate), rendered as `ipvsadm -Sn` lines, so a test can
compare them with the table keepalived or ipvsadm would make."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ipvsctl import cli
from ipvsctl.model.desired import Desired
from ipvsctl.model.ipvs import SCHEDULER_FLAGS, Forward, Protocol, ServiceFlag
from ipvsctl.settings import Settings
from ipvsctl.sources.files import load
from ipvsctl.translate import translate

SERVICE_FLAG = {Protocol.TCP: "-t", Protocol.UDP: "-u", Protocol.SCTP: "--sctp-service"}
FORWARD_FLAG = {Forward.MASQ: "-m", Forward.ROUTE: "-g", Forward.TUNNEL: "-i"}


def sn_lines(desired: Desired) -> list[str]:
    """What `ipvsadm -Sn` would print for the desired state, sorted (without --tun-type)."""
    out = []
    for d in desired.services.values():
        vs = d.server
        assert vs.key.protocol is not None
        svc = f"{SERVICE_FLAG[vs.key.protocol]} {vs.key}".replace(f"{vs.key.protocol.name} ", "")
        line = f"-A {svc} -s {vs.scheduler}"
        if vs.flags & ServiceFlag.PERSISTENT:
            line += f" -p {vs.timeout}"
        flags = [n for n, bit in SCHEDULER_FLAGS.items() if n.startswith(vs.scheduler + "-") and vs.flags & bit]
        if flags:
            line += f" -b {','.join(sorted(flags))}"
        out.append(line)
        out += [f"-a {svc} -r {r.key} {FORWARD_FLAG[r.forward]} -w {r.weight}" for r in d.reals]
    return sorted(out)


def translated(directory: Path) -> Desired:
    desired = translate(load([str(directory)]), Settings(node_name="node-a"))
    assert not desired.problems, [str(p) for p in desired.problems]
    return desired


def run_import(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """`ipvsctl import ARGS` in-process: (exit code, stdout, stderr); a crash fails the test."""
    result = CliRunner().invoke(cli.app, ["import", *args], input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr
