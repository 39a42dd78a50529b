"""Network namespaces for real-kernel IPVS tests: one node, four backends, one client.

How to use (fixtures from tests/kernel/conftest.py; run with ``scripts/test-kernel``, which
boots the test VM; every test under tests/kernel is marked ``kernel`` and skipped, with the
reason, when not root or the kernel has no IPVS -- except under scripts/test-kernel, where
that is an error)::

    def test_round_robin(topology: Topology, client: Client) -> None:
        '''Two masq backends behind a TCP virtual server take turns.'''
        be1, be2 = topology.backends["be1"], topology.backends["be2"]
        ...  # VIP 198.51.100.10:80 -> be1.ipv4:8080, be2.ipv4:8080 (masq), VIP bound on the node
        assert sorted(client.requests("198.51.100.10", 80, 4)) == ["be1", "be1", "be2", "be2"]
        with client.hold("198.51.100.10", 80, 2) as held:
            assert sorted(held.backends) == ["be1", "be2"]  # both connections stay open here

The topology is built once per test session (Python in the VM is 10-20x slower than on a
host): tests must undo what they change (IPVS services, addresses, stopped servers).

Layout. The root namespace (the VM's) is the node, the IPVS director; it forwards (the
fixture sets net.ipv4.ip_forward and net.ipv6.conf.all.forwarding to 1, restored after)::

    node: ipvsctl-br0 (bridge) 203.0.113.1/24 2001:db8:b::1/64
            +- ipvsctl-vbe1 <-> eth0 in netns ipvsctl-be1  203.0.113.11/24 2001:db8:b::11/64
            +- ...             ...    ipvsctl-be4  203.0.113.14/24 2001:db8:b::14/64
          ipvsctl-vcli 198.18.0.1/24 2001:db8:c::1/64
            <-> eth0 in netns ipvsctl-client  198.18.0.2-9/24  2001:db8:c::2-9/64

Every backend and the client have their default route via the node, so the client reaches
virtual addresses in 198.51.100.0/24 and 2001:db8:5::/64 through the node, and backends'
replies go back through it (what IPVS masquerading needs). The node must have the VIP as a
local address (ipvsctl binds VIPs on its dummy interface ``ipvsctl0``; the topology does not
create it). Each backend runs one threaded server process answering its name (``be1``) on
TCP and UDP port 8080, IPv4 and IPv6: over TCP it sends the name at once and then keeps the
connection open until the client closes it; over UDP it answers every datagram.

``client.requests(vip, port, n, proto="tcp"|"udp", source=None)`` makes n requests, one
after the other, from the client namespace in one subprocess and returns who answered each,
or ``"!timeout"``, ``"!refused"``, ``"!<ERRNO>"`` for a failed one. Each request uses a new
socket (a new source port; UDP sockets stay bound until the batch ends so no port repeats).
``client.hold(vip, port, n)`` opens n TCP connections that stay open until ``.close()`` (or
the end of the ``with`` block, or of the test). ``Backend.stop_server()``/``start_server()``
take a backend's server down and up. ``run(...)``/``ns_run(netns, ...)`` run commands.

This file is also the agent run inside the namespaces (``python netns.py serve|requests|hold``).
Python under emulation pays a lot per imported module and for compiling: the agent comes
first and imports only socket, sys, threading and errno, stops before the library part, and
runs from a .pyc compiled once per session (_compile_agent).

Fixtures (conftest.py): ``topology`` (session), ``client`` (closes holds a test left open),
``backends`` (restarts servers a test stopped), ``ipvsadm`` (path of the command).
"""

# ruff: noqa: E402  (the library's imports come after the agent's early exit, on purpose)
from __future__ import annotations

import errno
import socket
import sys
import threading

BACKEND_PORT = 8080


# --- the agent, run inside the namespaces ------------------------------------------------
# Arguments: serve NAME PORT | requests tcp|udp VIP PORT N TIMEOUT [SOURCE]
#            | hold VIP PORT N TIMEOUT [SOURCE] | serve-http PORT MODE_FILE
#            | loop VIP PORT SECONDS PERIOD TIMEOUT [http]
# requests/hold print one line: "answers" then one word per request (a name or "!error").


def _serve(name: str, port: int) -> None:
    reply = f"{name}\n".encode()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(reply)
                while conn.recv(4096):  # hold the connection until the client closes it
                    pass
            except OSError:
                pass

    def accept_loop(listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def udp_loop(sock: socket.socket) -> None:
        while True:
            _, peer = sock.recvfrom(65535)
            try:
                sock.sendto(reply, peer)
            except OSError:  # (no contextlib.suppress: one import less for the agent)
                continue

    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for kind, loop in ((socket.SOCK_STREAM, accept_loop), (socket.SOCK_DGRAM, udp_loop)):
            sock = socket.socket(family, kind)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((any_addr, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(1024)
            threading.Thread(target=loop, args=(sock,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def _serve_http(port: int, mode_file: str) -> None:
    """HTTP on TCP ``port`` and DNS on UDP ``port`` (IPv4): 200 and NOERROR, or what ``mode_file``
    says, read per request: "500" answers 500 and SERVFAIL, "hang" never answers."""

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(4096)
                if mode() == "hang":
                    while conn.recv(4096):
                        pass
                    return
                status = "500 Internal Server Error" if mode() == "500" else "200 OK"
                conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            except OSError:
                pass

    def mode() -> str:
        try:
            with open(mode_file) as f:
                return f.read().strip()
        except OSError:
            return "ok"

    def dns_loop(sock: socket.socket) -> None:
        while True:
            query, peer = sock.recvfrom(512)
            if len(query) < 12 or mode() == "hang":
                continue
            rcode = 2 if mode() == "500" else 0  # SERVFAIL, or NOERROR with no answers
            flags = 0x8180 | rcode
            reply = query[:2] + flags.to_bytes(2, "big") + query[4:6] + b"\0\0\0\0\0\0" + query[12:]
            try:
                sock.sendto(reply, peer)
            except OSError:
                continue

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    threading.Thread(target=dns_loop, args=(udp,), daemon=True).start()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(128)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def _loop(vip: str, port: int, seconds: float, period: float, timeout: float, http: bool = False) -> None:
    """TCP requests every ``period`` s for ``seconds`` s; one line per request as it ends:
    "MONOTONIC ANSWER" (CLOCK_MONOTONIC is the machine's: the test compares it with its own).
    With ``http``, each sends a GET and the answer is the status line."""
    import time

    print("ready", flush=True)
    end = time.monotonic() + seconds
    hello = b"GET / HTTP/1.0\r\n\r\n" if http else b""
    while (started := time.monotonic()) < end:
        sock, answer = _connect(socket.SOCK_STREAM, vip, port, timeout, None, hello)
        sock.close()
        print(f"{started:.3f} {answer}", flush=True)
        time.sleep(max(0.0, period - (time.monotonic() - started)))
    print("done", flush=True)


def _error_name(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "!timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "!refused"
    name = errno.errorcode.get(exc.errno or 0) or str(exc)
    return "!" + "_".join(name.split())


def _connect(
    kind: int, vip: str, port: int, timeout: float, source: str | None, hello: bytes = b""
) -> tuple[socket.socket, str]:
    """A new socket to the VIP and who answered on it (or "!error"); a TCP one sends ``hello`` first."""
    sock = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, kind)
    sock.settimeout(timeout)
    try:
        if source:
            sock.bind((source, 0))
        sock.connect((vip, port))
        if kind == socket.SOCK_DGRAM:
            sock.send(b"who?\n")
            data = sock.recv(65535)
        else:
            if hello:
                sock.sendall(hello)
            data = b""
            while not data.endswith(b"\n") and (chunk := sock.recv(4096)):
                data += chunk
        return sock, "_".join(data.decode(errors="replace").split()) or "!eof"
    except OSError as exc:
        return sock, _error_name(exc)


def _agent(argv: list[str]) -> None:
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    if argv[0] == "serve":
        _serve(argv[1], int(argv[2]))
        return
    if argv[0] == "serve-http":
        _serve_http(int(argv[1]), argv[2])
        return
    if argv[0] == "loop":
        _loop(argv[1], int(argv[2]), float(argv[3]), float(argv[4]), float(argv[5]), argv[6:] == ["http"])
        return
    if argv[0] == "requests":
        kind = socket.SOCK_DGRAM if argv[1] == "udp" else socket.SOCK_STREAM
        argv = argv[1:]
    elif argv[0] == "hold":
        kind = socket.SOCK_STREAM
    else:
        sys.exit(f"netns.py: unknown agent command {argv[0]!r}")
    vip, port, n, timeout = argv[1], int(argv[2]), int(argv[3]), float(argv[4])
    source = argv[5] if len(argv) > 5 else None
    socks: list[socket.socket] = []
    answers: list[str] = []
    for _ in range(n):
        sock, answer = _connect(kind, vip, port, timeout, source)
        answers.append(answer)
        if argv[0] == "hold" or kind == socket.SOCK_DGRAM:
            socks.append(sock)  # held, or a UDP socket kept bound: no source port repeats
        else:
            sock.close()
    print("answers", *answers, flush=True)
    if argv[0] == "hold":
        sys.stdin.read()  # until the test closes our stdin
    for sock in socks:
        sock.close()


if __name__ == "__main__":
    _agent(sys.argv[1:])
    sys.exit(0)


# --- the library, for conftest.py and the tests ------------------------------------------

import contextlib
import os
import py_compile
import selectors
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "ipvsctl"
BRIDGE = f"{PREFIX}-br0"
NODE_BACKEND_V4 = "203.0.113.1"
NODE_BACKEND_V6 = "2001:db8:b::1"
NODE_CLIENT_V4 = "198.18.0.1"
NODE_CLIENT_V6 = "2001:db8:c::1"
CLIENT_NETNS = f"{PREFIX}-client"
CLIENT_HOST_IF = f"{PREFIX}-vcli"
CLIENT_SOURCES_V4 = tuple(f"198.18.0.{i}" for i in range(2, 10))
CLIENT_SOURCES_V6 = tuple(f"2001:db8:c::{i}" for i in range(2, 10))
VIP_NET_V4 = "198.51.100.0/24"
VIP_NET_V6 = "2001:db8:5::/64"
BACKEND_NAMES = ("be1", "be2", "be3", "be4")
FORWARDING_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")
START_TIMEOUT = 60.0  # a Python process under emulation, with others starting beside it


class CommandError(RuntimeError):
    """A command failed; the message holds its stderr."""


def run(*cmd: str, input: str | None = None, timeout: float = 120.0, check: bool = True) -> str:
    """Run a command, return its stdout; raise CommandError with its stderr if it fails."""
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(cmd)} -> exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def ns_run(netns: str, *cmd: str, input: str | None = None, timeout: float = 120.0, check: bool = True) -> str:
    """run() inside a network namespace."""
    return run("ip", "netns", "exec", netns, *cmd, input=input, timeout=timeout, check=check)


def ip_batch(lines: Sequence[str], netns: str | None = None) -> None:
    """Run `ip` commands in one process (`ip -batch`), optionally in a namespace."""
    where = ("-n", netns) if netns else ()
    run("ip", *where, "-batch", "-", input="\n".join(lines) + "\n")


def missing_prerequisites() -> str | None:
    """Why real-kernel tests cannot run here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (network namespaces, IPVS)"
    for tool in ("ip", "modprobe"):
        if not any((Path(d) / tool).exists() for d in (*os.environ.get("PATH", "").split(":"), "/sbin", "/usr/sbin")):
            return f"needs the `{tool}` command"
    if not Path("/proc/net/ip_vs").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["modprobe", "-q", "ip_vs"], capture_output=True, timeout=60, check=False)
    if not Path("/proc/net/ip_vs").exists():
        return "the kernel has no IPVS (no /proc/net/ip_vs, modprobe ip_vs failed); use scripts/test-kernel"
    return None


def _read_sysctl(name: str) -> str:
    return Path("/proc/sys", name).read_text().strip()


def _write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", name).write_text(value + "\n")


@dataclass
class Backend:
    """A backend namespace with its server on BACKEND_PORT (TCP and UDP, IPv4 and IPv6)."""

    name: str
    index: int
    agent_cmd: tuple[str, ...] = field(repr=False)
    netns: str = field(init=False)
    host_if: str = field(init=False)
    ipv4: str = field(init=False)
    ipv6: str = field(init=False)
    port: int = BACKEND_PORT
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.netns = f"{PREFIX}-{self.name}"
        self.host_if = f"{PREFIX}-v{self.name}"
        self.ipv4 = f"203.0.113.{10 + self.index}"
        self.ipv6 = f"2001:db8:b::{10 + self.index}"

    def launch_server(self) -> bool:
        """Start the server without waiting for it (see wait_ready); False if it runs already."""
        if self.process is not None and self.process.poll() is None:
            return False
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *self.agent_cmd, "serve", self.name, str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        return True

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the server has bound its sockets."""
        assert self.process is not None and self.process.stdout is not None
        line = _readline(self.process, timeout)
        if line.strip() != "ready":
            self.stop_server()
            raise CommandError(f"server {self.name} did not start: {line!r}")

    def start_server(self) -> None:
        """Start the server and wait until it answers (no-op if it runs)."""
        if self.launch_server():
            self.wait_ready()

    def stop_server(self) -> None:
        """Kill the server: its port then refuses connections (connections it held are reset)."""
        if self.process is None:
            return
        _terminate(self.process)
        self.process = None


class Hold:
    """TCP connections held open from the client namespace until close()."""

    def __init__(self, process: subprocess.Popen[str], backends: list[str], owner: Client) -> None:
        self.process = process
        self.backends = backends  # who answered each connection, as in Client.requests
        self._owner = owner

    def close(self) -> None:
        """Close the connections (the client sends FIN on each) and wait for that."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        _terminate(self.process)
        with contextlib.suppress(ValueError):
            self._owner._holds.remove(self)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Loop:
    """A client loop running in the client namespace (Client.loop)."""

    def __init__(self, process: subprocess.Popen[str], seconds: float) -> None:
        self.process = process
        self.seconds = seconds

    def result(self) -> list[tuple[float, str]]:
        """Wait for the loop's end: (time.monotonic() at the request's start, who answered or "!error")."""
        try:
            out, err = self.process.communicate(timeout=self.seconds + START_TIMEOUT)
        finally:
            _terminate(self.process)
        lines = out.strip().splitlines()
        if lines[-1:] != ["done"]:
            raise CommandError(f"the client loop ended early: {err.strip()}")
        return [(float(t), answer) for t, answer in (line.split(maxsplit=1) for line in lines[:-1])]


class Client:
    """The client namespace: makes requests to virtual servers through the node."""

    netns = CLIENT_NETNS
    sources_v4 = CLIENT_SOURCES_V4
    sources_v6 = CLIENT_SOURCES_V6

    def __init__(self, agent_cmd: tuple[str, ...]) -> None:
        self._agent_cmd = agent_cmd
        self._holds: list[Hold] = []

    def _agent(self, *args: str | int | float | None) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *self._agent_cmd, *(str(a) for a in args if a is not None)]

    def requests(
        self, vip: str, port: int, n: int, proto: str = "tcp", source: str | None = None, timeout: float = 5.0
    ) -> list[str]:
        """n requests one after the other, each on a new socket; who answered each (or "!error")."""
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto must be tcp or udp, not {proto!r}")
        out = run(*self._agent("requests", proto, vip, port, n, timeout, source), timeout=30 + n * timeout * 2)
        return _answers(out.strip().splitlines()[-1] if out.strip() else out, n)

    def hold(self, vip: str, port: int, n: int, source: str | None = None, timeout: float = 5.0) -> Hold:
        """Open n TCP connections that stay open until the returned Hold is closed."""
        process = subprocess.Popen(
            self._agent("hold", vip, port, n, timeout, source),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = _readline(process, START_TIMEOUT + n * timeout)
        try:
            backends = _answers(line, n)
        except CommandError:
            _terminate(process)
            raise
        held = Hold(process, backends, self)
        self._holds.append(held)
        return held

    def loop(
        self, vip: str, port: int, seconds: float, period: float = 0.1, timeout: float = 1.0, http: bool = False
    ) -> Loop:
        """TCP requests every ``period`` s for ``seconds`` s, in the background (with ``http``, a
        GET each, answered by the status line); see Loop."""
        process = subprocess.Popen(
            self._agent("loop", vip, port, seconds, period, timeout, "http" if http else None),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if _readline(process, START_TIMEOUT).strip() != "ready":
            _terminate(process)
            raise CommandError("the client loop did not start")
        return Loop(process, seconds)

    def close_holds(self) -> None:
        """Close every Hold still open."""
        for held in list(self._holds):
            held.close()


@dataclass
class Topology:
    """The node (root namespace), the backends and the client; see the module docstring."""

    backends: dict[str, Backend]
    client: Client
    agent_dir: Path
    saved_sysctls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Topology:
        """Build namespaces, links, addresses and routes; start the servers."""
        agent_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-netns-"))
        agent_cmd = _compile_agent(agent_dir)
        backends = {name: Backend(name, i + 1, agent_cmd) for i, name in enumerate(BACKEND_NAMES)}
        topo = cls(backends, Client(agent_cmd), agent_dir)
        remove_leftovers()
        try:
            topo._build()
        except BaseException:
            topo.destroy()
            raise
        return topo

    def _build(self) -> None:
        for name in FORWARDING_SYSCTLS:
            self.saved_sysctls[name] = _read_sysctl(name)
            _write_sysctl(name, "1")
        for netns in (*(b.netns for b in self.backends.values()), CLIENT_NETNS):
            run("ip", "netns", "add", netns)
        node = [
            f"link add {BRIDGE} type bridge",
            f"addr add {NODE_BACKEND_V4}/24 dev {BRIDGE}",
            f"addr add {NODE_BACKEND_V6}/64 dev {BRIDGE} nodad",
            f"link set {BRIDGE} up",
            f"link add {CLIENT_HOST_IF} type veth peer name eth0 netns {CLIENT_NETNS}",
            f"addr add {NODE_CLIENT_V4}/24 dev {CLIENT_HOST_IF}",
            f"addr add {NODE_CLIENT_V6}/64 dev {CLIENT_HOST_IF} nodad",
            f"link set {CLIENT_HOST_IF} up",
        ]
        for be in self.backends.values():
            node += [
                f"link add {be.host_if} type veth peer name eth0 netns {be.netns}",
                f"link set {be.host_if} master {BRIDGE} up",
            ]
        ip_batch(node)
        for be in self.backends.values():
            ip_batch(_guest_side(be.ipv4, be.ipv6, NODE_BACKEND_V4, NODE_BACKEND_V6), be.netns)
        client = _guest_side(CLIENT_SOURCES_V4[0], CLIENT_SOURCES_V6[0], NODE_CLIENT_V4, NODE_CLIENT_V6)
        client += [f"addr add {a}/24 dev eth0" for a in CLIENT_SOURCES_V4[1:]]
        client += [f"addr add {a}/64 dev eth0 nodad" for a in CLIENT_SOURCES_V6[1:]]
        ip_batch(client, CLIENT_NETNS)
        for be in self.backends.values():
            be.launch_server()
        for be in self.backends.values():
            be.wait_ready()

    def destroy(self) -> None:
        """Close holds, stop servers, delete namespaces and links, restore sysctls."""
        self.client.close_holds()
        for be in self.backends.values():
            be.stop_server()
        remove_leftovers()
        for name, value in self.saved_sysctls.items():
            _write_sysctl(name, value)
        self.saved_sysctls.clear()
        shutil.rmtree(self.agent_dir, ignore_errors=True)


def _compile_agent(directory: Path) -> tuple[str, ...]:
    """The command running this file as the agent, from a .pyc made once: every agent start
    would otherwise compile the whole file (the repository is read-only in the VM)."""
    source = Path(__file__).resolve()
    compiled = directory / "netns.pyc"
    try:
        py_compile.compile(str(source), cfile=str(compiled), doraise=True)
    except (OSError, py_compile.PyCompileError):
        compiled = source
    # -I -S: no user site, no site-packages, no PYTHON* variables: the agent needs none of them.
    return (sys.executable, "-I", "-S", str(compiled))


def _answers(line: str, n: int) -> list[str]:
    words = line.split()
    if words[:1] != ["answers"] or len(words) != n + 1:
        raise CommandError(f"unexpected answer from the agent: {line!r}")
    return words[1:]


def _guest_side(ipv4: str, ipv6: str, gw4: str, gw6: str) -> list[str]:
    return [
        "link set lo up",
        f"addr add {ipv4}/24 dev eth0",
        f"addr add {ipv6}/64 dev eth0 nodad",
        "link set eth0 up",
        f"route add 0.0.0.0/0 via {gw4}",
        f"route add ::/0 via {gw6}",
    ]


def remove_leftovers() -> None:
    """Delete our namespaces (killing what runs in them) and links; only names we own."""
    for netns in (*(f"{PREFIX}-{name}" for name in BACKEND_NAMES), CLIENT_NETNS):
        if not Path("/run/netns", netns).exists():
            continue
        for pid in run("ip", "netns", "pids", netns, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", netns, check=False)
    for link in (BRIDGE, CLIENT_HOST_IF, *(f"{PREFIX}-v{name}" for name in BACKEND_NAMES)):
        if Path("/sys/class/net", link).exists():
            run("ip", "link", "del", link, check=False)


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    """One line of a child's stdout, or its stderr in a CommandError if none comes in time."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if sel.select(timeout):
            line = process.stdout.readline()
            if line:
                return line
    if process.poll() is None:
        process.kill()
        process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    _terminate(process)
    raise CommandError(f"{' '.join(map(str, process.args))}: no answer in {timeout:.0f} s: {stderr.strip()}")


def _terminate(process: subprocess.Popen[str]) -> None:
    """Stop a child (TERM, then KILL) and close our ends of its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
