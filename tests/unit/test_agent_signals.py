"""Signals reach the agent's handlers on their own thread, whatever the main thread is doing.

The regression: a SIGTERM that arrived while the agent was writing a log line ran the handler
on the main thread, inside that write; the handler logged, waited for the logger's lock the
write held, and the agent hung for good. Here the signal is sent from inside the write of a
log line, in a child process, so the old behaviour shows up as a timeout, not a hung suite."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from ipvsctl.agent.signals import relayed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CHILD = r"""
import io, os, signal, sys
from ipvsctl import cli
from ipvsctl.kernel.memory import MemoryKernel
import ipaddress

kernel = MemoryKernel(node_addresses=[ipaddress.ip_address("192.0.2.10")])
cli.KERNEL_FACTORY = lambda interface: kernel
SIGNAL = getattr(signal, sys.argv[2])

class Stderr(io.TextIOWrapper):
    sent = 0
    def write(self, text):
        if "manifests read" in text and self.sent < 1:
            self.sent += 1
            os.kill(os.getpid(), SIGNAL)  # handled before this write returns
            os.kill(os.getpid(), SIGNAL) if SIGNAL == signal.SIGHUP else None
        return super().write(text)

sys.stderr = Stderr(sys.__stderr__.buffer, encoding="utf-8", line_buffering=True)
try:
    cli.app(["--state-dir", sys.argv[3], "--log-format", "json", "agent", "--manifests", sys.argv[1],
             "--min-sync-period", "0", "--metrics-address", ""])
except SystemExit as exc:
    print("exit", exc.code, "virtual servers", len(kernel.dump(reals=False)), file=sys.__stdout__, flush=True)
"""


def _agent(tmp_path: Path, sig: str, until: str, timeout: float = 30.0) -> tuple[str, str]:
    manifests = tmp_path / "m"
    shutil.copytree(EXAMPLES, manifests)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(manifests), sig, str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # read by a thread, so a hung agent is a timeout here
        text=True,
    ) as proc:
        assert proc.stderr is not None
        lines: list[str] = []
        seen = threading.Event()

        def read(stream: IO[str]) -> None:
            for line in stream:
                lines.append(line)
                if until in line:
                    seen.set()

        reader = threading.Thread(target=read, args=(proc.stderr,), daemon=True)
        reader.start()
        try:
            if not seen.wait(timeout):
                pytest.fail(f"the agent hung after {sig} during a log write, or never logged {until!r}: {lines[-3:]}")
            if sig == "SIGHUP":
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the agent did not stop on SIGTERM: {lines[-3:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
        assert proc.stdout is not None
        return proc.stdout.read(), "".join(lines)


def test_sigterm_during_a_log_write_stops_the_agent(tmp_path: Path) -> None:
    out, log = _agent(tmp_path, "SIGTERM", "agent stopped")
    assert '"signal": "SIGTERM"' in log
    assert "exit 0" in out
    assert "Traceback" not in log


def test_sighup_during_a_log_write_reloads_and_the_agent_goes_on(tmp_path: Path) -> None:
    out, log = _agent(tmp_path, "SIGHUP", '"event": "sync"')
    assert log.count("configuration reloaded") == 2
    assert "exit 0" in out
    assert "virtual servers 14" in out  # every example Service, synced after the reloads


def test_relayed_runs_handlers_off_the_main_thread_and_restores_what_was_there() -> None:
    got: list[tuple[signal.Signals, str]] = []
    done = threading.Event()

    def handler(sig: signal.Signals) -> None:
        got.append((sig, threading.current_thread().name))
        done.set()

    before = signal.getsignal(signal.SIGUSR1)
    with relayed({signal.SIGUSR1: handler}):
        os.kill(os.getpid(), signal.SIGUSR1)
        assert done.wait(10)
    assert got == [(signal.SIGUSR1, "ipvsctl-signals")]
    assert signal.getsignal(signal.SIGUSR1) == before
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind
    assert not any(t.name == "ipvsctl-signals" for t in threading.enumerate())


def test_a_failing_handler_does_not_stop_the_next_signal(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []
    done = threading.Event()

    def handler(_sig: signal.Signals) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first")
        done.set()

    with relayed({signal.SIGUSR2: handler}):
        os.kill(os.getpid(), signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert done.wait(10)
    assert len(calls) == 2
