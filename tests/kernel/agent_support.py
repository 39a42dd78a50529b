"""Helpers for tests/kernel/test_agent.py: `ipvsctl agent` as a child process, its JSON log,
manifests written atomically, ipvsadm and /metrics readings, waiting with a deadline, and an
echo server/client pair whose held connection can still exchange data after a flip.

Everything here runs in the test VM (root namespace = the node), where Python is 10-20x
slower than on a host: deadlines are generous, children are started with ``-I -S`` where they
need no site-packages, and nothing sleeps for correctness (``wait_for`` polls a condition).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from netns import CLIENT_NETNS, NODE_CLIENT_V4, CommandError, _readline, _terminate

from tests.conftest import wait_for as shared_wait_for

NODE_NAME = "node-a"
NAMESPACE = "t"
METRICS_ADDRESS = "127.0.0.1:9842"
SYNC_PERIOD = 3.0
DRAIN_CHECK = 1.0
DRAIN_TIMEOUT = 60.0  # long enough that the drain test can tell an idle delete from a timed-out one
AGENT_START_TIMEOUT = 120.0  # importing ipvsctl alone takes ~15 s in the VM
STOP_TIMEOUT = 60.0


# --- waiting ---------------------------------------------------------------------------------


# The kernel suite polls slower than the unit tests: its conditions run commands.
wait_for = functools.partial(shared_wait_for, interval=0.1)


# --- manifests -------------------------------------------------------------------------------


def service_yaml(name: str, vip: str, endpoints: dict[str, bool], *, port: int = 80, target_port: int = 8080) -> str:
    """A v1 Service (ClusterIP ``vip``, one TCP port "http") and its EndpointSlice; ``endpoints``
    maps each backend address to its ``ready`` condition."""
    lines = "\n".join(
        f'  - addresses: ["{addr}"]\n    conditions: {{ready: {str(ready).lower()}}}\n    nodeName: {NODE_NAME}'
        for addr, ready in endpoints.items()
    )
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  clusterIP: "{vip}"
  ports: [{{name: http, protocol: TCP, port: {port}, targetPort: {target_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {NAMESPACE}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, protocol: TCP, port: {target_port}}}]
endpoints:
{lines}
"""


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, so the watching agent never reads a half-written file
    (the temporary name starts with a dot and does not end in .yaml: the agent ignores it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- ipvsadm readings ------------------------------------------------------------------------


class Ipvsadm:
    """Read (and, for drift tests, change) the kernel's IPVS table with the ipvsadm command."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.path, *args], capture_output=True, text=True, timeout=60, check=False)
        if check and proc.returncode != 0:
            raise CommandError(f"ipvsadm {' '.join(args)} -> exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def reals(self, vip: str, port: int, proto: str = "tcp") -> dict[str, tuple[int, int, int]] | None:
        """The TCP (or UDP) virtual server's real servers, address → (weight, ActiveConn, InActConn);
        None if the virtual server does not exist."""
        proc = self("-Ln", "-u" if proto == "udp" else "-t", f"{vip}:{port}", check=False)
        if proc.returncode != 0:
            return None
        reals: dict[str, tuple[int, int, int]] = {}
        for line in proc.stdout.splitlines():
            words = line.split()
            if words[:1] == ["->"] and words[1][:1].isdigit():
                address = words[1].rsplit(":", 1)[0]
                reals[address] = (int(words[3]), int(words[4]), int(words[5]))
        return reals

    def connections(self, vip: str, port: int) -> int:
        """The virtual server's connection counter (what `ipvsadm -Ln --stats` shows as Conns)."""
        out = self("-Ln", "--stats", "--exact", "-t", f"{vip}:{port}").stdout
        for line in out.splitlines():
            words = line.split()
            if words[:2] == ["TCP", f"{vip}:{port}"]:
                return int(words[2])
        raise CommandError(f"no TCP {vip}:{port} line in ipvsadm --stats output: {out!r}")

    def saved(self, needle: str) -> list[str]:
        """The `ipvsadm -Sn` lines mentioning ``needle``, in order."""
        return [line for line in self("-Sn").stdout.splitlines() if needle in line]


# --- the agent's HTTP endpoint ---------------------------------------------------------------


def http_get(path: str, address: str = METRICS_ADDRESS, timeout: float = 30.0) -> tuple[int, str]:
    """GET http://address/path from this (the node's) namespace: (status, body), 5xx included."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition → (name, labels, value) per sample."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def metric(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    """The value of the one sample called ``name`` whose labels include ``labels`` (None if none)."""
    found = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
    if len(found) > 1:
        raise AssertionError(f"{len(found)} samples of {name} match {labels}")
    return found[0] if found else None


def scrape(name: str, **labels: str) -> float | None:
    """One metric's value from a fresh GET /metrics."""
    status, body = http_get("/metrics")
    assert status == 200, (status, body[:500])
    return metric(parse_metrics(body), name, **labels)


# --- the agent as a child process ------------------------------------------------------------


def ipvsctl_command() -> list[str]:
    """The installed console script (in the VM: /run/pyhome/bin/ipvsctl), or python -m ipvsctl."""
    beside = Path(sys.executable).with_name("ipvsctl")
    found = shutil.which("ipvsctl") or (str(beside) if beside.exists() else None)
    return [found] if found else [sys.executable, "-m", "ipvsctl"]


class AgentProcess:
    """`ipvsctl agent` on a manifest directory, its output (JSON log lines) kept in a file per start."""

    def __init__(self, state_dir: Path, manifests: Path, log_dir: Path) -> None:
        self.state_dir = state_dir
        self.manifests = manifests
        self.log_dir = log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def argv(self) -> list[str]:
        return [
            *ipvsctl_command(), "--log-format", "json", "--state-dir", str(self.state_dir), "agent",
            "--manifests", str(self.manifests), "--node-name", NODE_NAME, "--node-ip", NODE_CLIENT_V4,
            "--min-sync-period", "0.2s", "--sync-period", f"{SYNC_PERIOD:g}s", "--drain-check", f"{DRAIN_CHECK:g}s",
            "--drain-timeout", f"{DRAIN_TIMEOUT:g}s", "--metrics-address", METRICS_ADDRESS,
        ]  # fmt: skip

    def start(self) -> dict[str, Any]:
        """Start the agent and wait for its first full sync; return that sync's log line."""
        assert self.process is None, "agent already running"
        self.starts += 1
        self.log_path = self.log_dir / f"agent-{self.starts}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return self.wait_event(
            lambda e: e.get("event") == "sync" and e.get("kind") == "full",
            AGENT_START_TIMEOUT,
            "the agent's first full sync",
        )

    def stop(self) -> int:
        """SIGTERM the agent and return its exit status (SIGKILL if it does not stop in time)."""
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                return -signal.SIGKILL
        return process.returncode

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def events(self) -> list[dict[str, Any]]:
        """The current start's log lines that are JSON objects, in order."""
        events = []
        for line in self.text().splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    events.append(obj)
        return events

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def assert_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise AssertionError(f"the agent is not running (exit {code}); its log ends:\n{self.tail()}")

    def wait_event(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str, after: int = 0
    ) -> dict[str, Any]:
        """The first log event from index ``after`` on that ``match``es; fails if the agent exits."""

        def find() -> dict[str, Any] | None:
            found = next((e for e in self.events()[after:] if match(e)), None)
            if found is None:
                self.assert_running()
            return found

        return wait_for(find, timeout, what, interval=0.2, describe=lambda: f"agent log ends:\n{self.tail()}")


# --- an echo service: a held connection that still carries data ------------------------------

# The backends' own servers send their name once and then only read; these send the name and
# then echo every line, so a held connection can prove it carries data both ways.
ECHO_SERVER = r"""
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
def handle(conn):
    try:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(name.encode() + b"\n")
            for line in lines:
                conn.sendall(line)
    except OSError:
        pass
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", port))
listener.listen(64)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""

# One TCP connection from the client namespace: prints "name <who answered>", then per stdin
# line sends it and prints "echo <answer>"; the line "reset" closes with RST (SO_LINGER 0).
ECHO_CLIENT = r"""
import socket, struct, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
lines = sock.makefile("rb")
print("name", lines.readline().decode().strip(), flush=True)
while True:
    command = sys.stdin.readline().strip()
    if not command or command == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        lines.close()
        sock.close()
        print("closed", flush=True)
        break
    try:
        sock.sendall(command.encode() + b"\n")
        print("echo", lines.readline().decode().strip() or "!eof", flush=True)
    except OSError as exc:
        print("echo", "!" + type(exc).__name__, flush=True)
"""


class EchoServer:
    """ECHO_SERVER in a backend's namespace."""

    def __init__(self, netns: str, name: str, port: int) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-I", "-S", "-c", ECHO_SERVER, name, str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        line = _readline(self.process, timeout).strip()
        if line != "ready":
            raise CommandError(f"echo server did not start: {line!r}")

    def stop(self) -> None:
        _terminate(self.process)


class EchoConnection:
    """One TCP connection from the client namespace to a VIP served by EchoServers."""

    def __init__(self, vip: str, port: int, timeout: float = 60.0) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", CLIENT_NETNS, sys.executable, "-I", "-S", "-c", ECHO_CLIENT, vip, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.timeout = timeout
        words = _readline(self.process, timeout).strip().split()
        if words[:1] != ["name"] or len(words) != 2:
            self.close()
            raise CommandError(f"echo client: unexpected first line {words!r}")
        self.backend = words[1]

    def _say(self, line: str) -> list[str]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return _readline(self.process, self.timeout).strip().split()

    def exchange(self, text: str) -> str:
        """Send one line on the held connection and return what came back (or "!error")."""
        words = self._say(text)
        assert words[:1] == ["echo"], words
        return " ".join(words[1:])

    def reset(self) -> None:
        """Close the connection with a RST: IPVS then holds its entry in CLOSE for 10 s (a FIN
        close would leave it in TIME_WAIT for 2 minutes, counted as an inactive connection)."""
        assert self._say("reset") == ["closed"]
        self.close()

    def close(self) -> None:
        if self.process.poll() is None and self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        _terminate(self.process)


@contextlib.contextmanager
def echo_servers(backends: dict[str, str], port: int) -> Iterator[None]:
    """EchoServers on ``port`` in the given backend namespaces (name → netns) for the duration."""
    servers = [EchoServer(netns, name, port) for name, netns in backends.items()]
    try:
        for server in servers:
            server.wait_ready()
        yield
    finally:
        for server in servers:
            server.stop()
