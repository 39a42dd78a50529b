"""Health checks on a real kernel: one `ipvsctl agent --manifests` checking backends in network
namespaces (their servers on port 8080, and an HTTP server on 8081 whose answer the test
chooses), proven by real requests from the client namespace.

- a TCP check under a client loop: be1's server is killed → be1 goes to weight 0 (drain)
  within interval x failures + one interval (+ the VM's sync latency, measured), and the loop's
  failed requests all fall between the kill and that moment; restarted → back after the rise
  count;
- an HTTP check on another port: be2 answers 500 → weight 0; hangs → caught by the timeout;
  answers 200 again → back;
- a DNS check of a UDP Service on another port: SERVFAIL → out, NOERROR → back; and
  `ipvsctl list -o json` shows the agent's verdicts while it runs;
- an exec check with on-failure remove: the command fails for be2 → be2 is deleted;
- a sorry server (be3) for a Service whose only backend, be4, is checked: be4 killed → only be3
  answers; be4 back → only be4 answers.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_support import (
    NAMESPACE,
    AgentProcess,
    Ipvsadm,
    ipvsctl_command,
    service_yaml,
    wait_for,
    write_atomically,
)
from netns import Backend, Client, _readline, _terminate

BOUND = 30.0
INTERVAL, TIMEOUT, FAILURES, SUCCESSES, RETRY_DELAY = 0.5, 0.4, 2, 2, 0.2
CHECK = (
    f"ipvsctl.io/health-check-interval: '{INTERVAL}', ipvsctl.io/health-check-timeout: '{TIMEOUT}', "
    f"ipvsctl.io/health-check-failures: '{FAILURES}', ipvsctl.io/health-check-successes: '{SUCCESSES}', "
    f"ipvsctl.io/health-check-retry-delay: '{RETRY_DELAY}'"
)
# keepalived's bound: a dead server is out within interval x retries, plus one interval for the
# check in flight. On top of it, the VM: ipvsctl's sync under emulation and the test's polling
# with ipvsadm (a process start each) take up to a few seconds; measured and printed.
DETECTION = INTERVAL * FAILURES + INTERVAL
VM_LATENCY = 4.0
HTTP_PORT = 8081


def annotated(
    name: str, vip: str, endpoints: dict[str, bool], annotations: str, udp: bool = False, target_port: int = 8080
) -> str:
    text = service_yaml(name, vip, endpoints, port=53 if udp else 80, target_port=target_port)
    if udp:
        text = text.replace("protocol: TCP", "protocol: UDP")
    plain = f"metadata: {{name: {name}, namespace: {NAMESPACE}}}"
    assert plain in text
    return text.replace(plain, f"metadata: {{name: {name}, namespace: {NAMESPACE}, annotations: {{{annotations}}}}}", 1)


class HttpServers:
    """An HTTP (and DNS) server on HTTP_PORT in each backend given; ``modes[name]`` is the file
    whose "500", "hang" or "ok" it answers by; ``stop``/``start`` kill and restart one."""

    def __init__(self, backends: list[Backend], modes: Path) -> None:
        self.backends = {b.name: b for b in backends}
        self.modes = {b.name: modes / f"mode-{b.name}" for b in backends}
        self.processes: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str) -> None:
        b = self.backends[name]
        argv = ["ip", "netns", "exec", b.netns, *b.agent_cmd, "serve-http", str(HTTP_PORT), str(self.modes[name])]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.processes[name] = process
        assert _readline(process, 60).strip() == "ready"

    def stop(self, name: str) -> None:
        _terminate(self.processes.pop(name))

    def __enter__(self) -> HttpServers:
        for name in self.backends:
            self.start(name)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes.values():
            _terminate(process)


def test_checks_take_failed_backends_out_and_put_them_back(
    tmp_path: Path, ipvsadm: str, client: Client, backends: dict[str, Backend], capsys: pytest.CaptureFixture[str]
) -> None:
    tool = Ipvsadm(ipvsadm)
    be = {name: b.ipv4 for name, b in backends.items()}
    manifests, state = tmp_path / "manifests", tmp_path / "state"
    manifests.mkdir()
    flag = tmp_path / "fail-be2"
    services = {
        "hc-tcp": ("198.51.100.80", ["be1", "be2"], f"ipvsctl.io/health-check: tcp, {CHECK}"),
        "hc-exec": (
            "198.51.100.81",
            ["be1", "be2"],
            "ipvsctl.io/health-check: exec, ipvsctl.io/health-check-on-failure: remove, "
            f"ipvsctl.io/health-check-command: 'test ! -e {flag} -o $IPVSCTL_CHECK_ADDRESS != {be['be2']}', {CHECK}",
        ),
        "hc-sorry": (
            "198.51.100.82",
            ["be4"],
            f"ipvsctl.io/health-check: tcp, ipvsctl.io/sorry-server: '{be['be3']}:8080', {CHECK}",
        ),
        "hc-http": (
            "198.51.100.83",
            ["be1", "be2"],
            f"ipvsctl.io/health-check: http, ipvsctl.io/health-check-port: '{HTTP_PORT}', "
            f"ipvsctl.io/health-check-path: /healthz, ipvsctl.io/health-check-status-codes: '200', {CHECK}",
        ),
        "hc-dns": (
            "198.51.100.84",
            ["be1", "be2"],
            f"ipvsctl.io/health-check: dns, ipvsctl.io/health-check-port: '{HTTP_PORT}', "
            f"ipvsctl.io/health-check-query: example.org, ipvsctl.io/health-check-query-type: A, {CHECK}",
        ),
        "hc-web": ("198.51.100.85", ["be1", "be2"], f"ipvsctl.io/health-check: http, {CHECK}"),  # traffic on 8081
        "hc-exec-tcp": (
            "198.51.100.86",
            ["be1", "be2"],
            "ipvsctl.io/health-check: exec, ipvsctl.io/health-check-command: "
            "'bash -c \"exec 3<>/dev/tcp/$IPVSCTL_CHECK_ADDRESS/$IPVSCTL_CHECK_PORT\"', "
            # bash starts slowly under emulation: a longer timeout, and so a longer interval
            "ipvsctl.io/health-check-interval: '2', ipvsctl.io/health-check-timeout: '2', "
            "ipvsctl.io/health-check-failures: '2', ipvsctl.io/health-check-retry-delay: '0.2'",
        ),
    }

    def weights(vip: str) -> dict[str, int] | None:
        reals = tool.reals(vip, 53, "udp") if vip == "198.51.100.84" else tool.reals(vip, 80)
        by_address = {a: n for n, a in be.items()}
        return None if reals is None else {by_address.get(a, a): w for a, (w, _, _) in reals.items()}

    def wait_weights(vip: str, *wanted: dict[str, int]) -> float:
        started = time.monotonic()
        wait_for(lambda: weights(vip) in wanted, BOUND, f"{vip}: weights {wanted}", describe=lambda: str(weights(vip)))
        return time.monotonic() - started

    def reasons(service: str, state: str, backend: str) -> list[str]:
        return [
            e["reason"]
            for e in agent.events()
            if e.get("event") == "health changed"
            and e.get("service") == f"{NAMESPACE}/{service}"
            and e.get("state") == state
            and str(e.get("server", "")).startswith(be[backend] + ":")
        ]

    def kill_under_loop(
        vip: str,
        stop: Callable[[], None],
        start: Callable[[], None],
        down: dict[str, int],
        http: bool = False,
        detection: float = DETECTION,
    ) -> tuple[float, list[tuple[float, str]], float, float]:
        """A client loop on ``vip`` while ``stop`` kills a backend: the weights go to ``down``, and
        every failed request falls between the kill and that moment; then ``start`` brings it back.
        Returns (seconds to leave rotation, the loop's answers, the kill's time, seconds to come back)."""
        up = weights(vip)
        assert up is not None
        loop = client.loop(vip, 80, seconds=4 + detection + VM_LATENCY, period=0.05, timeout=1.0, http=http)
        time.sleep(1.5)
        killed = time.monotonic()
        stop()
        wait_weights(vip, down)
        out = time.monotonic()
        answers = loop.result()
        failed = [t for t, answer in answers if answer.startswith("!")]
        assert failed, f"{vip}: no request failed: the killed backend was never scheduled before it left"
        assert all(killed - 0.05 <= t <= out for t in failed), (vip, killed, out, failed)
        assert [a for t, a in answers if t > out] and not [a for t, a in answers if t > out and a.startswith("!")]
        assert out - killed <= detection + VM_LATENCY, (vip, out - killed)
        start()
        back = wait_weights(vip, up)
        return out - killed, answers, killed, back

    agent = AgentProcess(state, manifests, tmp_path)
    with HttpServers([backends["be1"], backends["be2"]], tmp_path) as http:
        modes = http.modes
        for name, (vip, ready, notes) in services.items():
            endpoints = {be[b]: True for b in ready}
            text = annotated(
                name, vip, endpoints, notes, udp=name == "hc-dns", target_port=HTTP_PORT if name == "hc-web" else 8080
            )
            write_atomically(manifests / f"{name}.yaml", text)
        try:
            agent.start()
            wait_weights("198.51.100.80", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.81", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.82", {"be4": 1})
            wait_weights("198.51.100.83", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.84", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.85", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.86", {"be1": 1, "be2": 1})

            # TCP check, drain, under a client loop: be1's server killed → weight 0, and the
            # requests that failed all fall between the kill and the moment it left rotation
            out, answers, killed, back = kill_under_loop(
                "198.51.100.80", backends["be1"].stop_server, backends["be1"].start_server, {"be1": 0, "be2": 1}
            )
            failed = [t for t, answer in answers if answer.startswith("!")]
            assert {a for t, a in answers if t > killed + out} == {"be2"}
            assert {answer for t, answer in answers if t < killed} == {"be1", "be2"}
            assert reasons("hc-tcp", "down", "be1") == ["connection refused"]
            assert sorted(set(client.requests("198.51.100.80", 80, 6))) == ["be1", "be2"]

            # the same for an HTTP check of the port the traffic goes to (be1's HTTP server
            # killed), and an exec check connecting with bash (be2's server killed)
            web = kill_under_loop(
                "198.51.100.85", lambda: http.stop("be1"), lambda: http.start("be1"), {"be1": 0, "be2": 1}, http=True
            )
            assert reasons("hc-web", "down", "be1") == ["connection refused"]
            tcp_exec = kill_under_loop(
                "198.51.100.86",
                backends["be2"].stop_server,
                backends["be2"].start_server,
                {"be1": 1, "be2": 0},
                detection=2.0 * 2 + 2.0,
            )
            # (a bash that started too slowly under emulation may have timed out once before)
            assert reasons("hc-exec-tcp", "down", "be2")[-1:] == ["exit status 1"]
            wait_weights("198.51.100.80", {"be1": 1, "be2": 1})

            # HTTP check on port 8081: 500 → out; a hung answer → out by the timeout; 200 → back
            modes["be2"].write_text("500")  # and SERVFAIL for the DNS check
            wait_weights("198.51.100.83", {"be1": 1, "be2": 0})
            assert client.requests("198.51.100.83", 80, 4) == ["be1"] * 4
            wait_weights("198.51.100.84", {"be1": 1, "be2": 0})
            assert client.requests("198.51.100.84", 53, 4, proto="udp") == ["be1"] * 4
            listed = subprocess.run(
                [*ipvsctl_command(), "--state-dir", str(state), "list", "-o", "json"],
                capture_output=True, text=True, check=True, timeout=120,
            )  # fmt: skip
            health = {
                (vs["address"], r["address"]): r["health"]
                for vs in json.loads(listed.stdout)
                for r in vs["real_servers"]
            }
            assert health[("198.51.100.83", be["be2"])]["state"] == "down", health
            assert health[("198.51.100.83", be["be2"])]["reason"] == "status 500"
            assert health[("198.51.100.84", be["be2"])]["reason"] == "rcode SERVFAIL"
            assert health[("198.51.100.84", be["be1"])]["state"] == "up"
            assert health[("198.51.100.82", be["be4"])]["check"] == "tcp"
            modes["be2"].write_text("ok")
            wait_weights("198.51.100.83", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.84", {"be1": 1, "be2": 1})
            modes["be2"].write_text("hang")
            wait_weights("198.51.100.83", {"be1": 1, "be2": 0})
            modes["be2"].write_text("ok")
            wait_weights("198.51.100.83", {"be1": 1, "be2": 1})
            assert reasons("hc-http", "down", "be2") == ["status 500", f"timed out after {TIMEOUT:g} s"]

            # exec check, remove: the command fails for be2 only → be2 deleted
            flag.touch()
            wait_weights("198.51.100.81", {"be1": 1})
            assert client.requests("198.51.100.81", 80, 4) == ["be1"] * 4
            flag.unlink()
            wait_weights("198.51.100.81", {"be1": 1, "be2": 1})

            # the sorry server answers while be4 is down, and only then (a real server leaving or
            # the sorry server leaving is drained at weight 0 while the kernel counts connections)
            assert client.requests("198.51.100.82", 80, 2) == ["be4"] * 2
            backends["be4"].stop_server()
            wait_weights("198.51.100.82", {"be3": 1}, {"be3": 1, "be4": 0})
            assert client.requests("198.51.100.82", 80, 3) == ["be3"] * 3
            backends["be4"].start_server()
            wait_weights("198.51.100.82", {"be4": 1}, {"be4": 1, "be3": 0})
            assert client.requests("198.51.100.82", 80, 3) == ["be4"] * 3
            with capsys.disabled():
                print(
                    f"\nMEASURED checks (interval {INTERVAL} s, failures {FAILURES}, successes {SUCCESSES}; "
                    f"keepalived's bound {DETECTION:g} s): tcp: killed → weight 0 in {out:.2f} s, "
                    f"{len(failed)} of {len(answers)} loop requests failed, all inside it, back in {back:.2f} s; "
                    f"http: {web[0]:.2f} s, {sum(a.startswith('!') for _, a in web[1])} failed, "
                    f"back in {web[3]:.2f} s; "
                    f"exec: {tcp_exec[0]:.2f} s, {sum(a.startswith('!') for _, a in tcp_exec[1])} failed, "
                    f"back in {tcp_exec[3]:.2f} s"
                )
            for name in services:
                (manifests / f"{name}.yaml").unlink()
            wait_for(lambda: all(weights(v) is None for v, _, _ in services.values()), BOUND, "the agent to clean up")
            assert agent.stop() == 0, agent.tail()
        finally:
            agent.stop()
