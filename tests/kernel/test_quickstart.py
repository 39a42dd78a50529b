"""The quickstart on a real kernel: its ipvsctl commands, run as the installed `ipvsctl`, exit as
docs/quickstart.md says, and its request to demo/web is answered through IPVS.

The quickstart builds two backend namespaces at 203.0.113.11 and .12 behind 203.0.113.1 and
asks 198.51.100.10 from the host itself with curl. The test topology's be1 and be2 sit at the
same addresses behind the same 203.0.113.1, so the test sends the same request from the node
(this namespace); they answer with their names over plain TCP, where the quickstart's web
servers answer HTTP. Commands the quickstart only shows running until stopped (the agent) are
left out, as in tests/unit/test_docs.py, and so is everything that is not ipvsctl.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Topology

from tests import docs_commands as dc

pytestmark = pytest.mark.kernel

QUICKSTART = dc.REPO / "docs" / "quickstart.md"
WEB_BACKENDS = ["be1", "be2"]  # 203.0.113.11 and .12, demo/web's ready endpoints


def request_target(others: list[dc.Other]) -> tuple[str, int]:
    """Address and port of the quickstart's first `curl http://ADDRESS[:PORT]/`."""
    for other in others:
        if other.name == "curl":
            for word in other.words:
                m = re.fullmatch(r"http://([\d.]+)(?::(\d+))?/?.*", word)
                if m:
                    return m.group(1), int(m.group(2) or 80)
    raise AssertionError("docs/quickstart.md sends no `curl http://...` request")


def ask(address: str, port: int) -> str:
    """Who answers one TCP connection from this namespace (the node), or the error."""
    try:
        with socket.create_connection((address, port), timeout=10) as sock:
            data = b""
            while not data.endswith(b"\n") and (chunk := sock.recv(64)):
                data += chunk
    except OSError as err:
        return f"!{err}"
    return data.decode(errors="replace").strip() or "!eof"


def test_quickstart_on_a_real_kernel(topology: Topology, tmp_path: Path) -> None:
    """The quickstart's ipvsctl commands exit as it says on a real kernel; its request reaches demo/web's backends."""
    exe = Path(sys.executable).with_name("ipvsctl")
    assert exe.exists(), f"no installed ipvsctl next to {sys.executable}"
    commands, others = dc.read(QUICKSTART)
    run = [(c, p) for c in commands if not dc.parse_only(c, p := dc.parse(c.argv))]
    verbs = [p.verb for _, p in run]
    assert {"apply", "cleanup"} <= set(verbs), verbs
    target = request_target(others)
    manifests = tmp_path / "manifests"
    shutil.copytree(dc.REPO / "examples", manifests)
    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    env["IPVSCTL_STATE_DIR"] = str(tmp_path / "state")

    failures: list[str] = []
    answers: list[str] = []
    cleaned = False
    try:
        for command, parsed in run:
            if parsed.verb == "cleanup" and not answers:
                answers = [ask(*target) for _ in WEB_BACKENDS]
            argv = [str(exe), *dc.rewrite(command.argv, manifests, tmp_path / "states")]
            proc = subprocess.run(
                argv, cwd=dc.REPO, env={**env, **dict(command.env)}, capture_output=True, text=True, timeout=600
            )
            want = dc.promised(command, parsed.verb)
            if proc.returncode not in want:
                said = proc.stderr.strip()[-600:]
                failures.append(f"{command.where}: `{command.shown}` exited {proc.returncode}, not {want}: {said}")
            cleaned = cleaned or (parsed.verb == "cleanup" and proc.returncode == 0)
    finally:
        if not cleaned:
            subprocess.run([str(exe), "cleanup"], env=env, capture_output=True, timeout=600, check=False)
    assert not failures, "\n".join(failures)
    assert sorted(answers) == WEB_BACKENDS, f"{target}: {answers}"
