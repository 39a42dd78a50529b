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
from collections.abc import Iterator
from contextlib import contextmanager
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


def annotated(name: str, vip: str, endpoints: dict[str, bool], annotations: str, udp: bool = False) -> str:
    text = service_yaml(name, vip, endpoints, port=53 if udp else 80)
    if udp:
        text = text.replace("protocol: TCP", "protocol: UDP")
    plain = f"metadata: {{name: {name}, namespace: {NAMESPACE}}}"
    assert plain in text
    return text.replace(plain, f"metadata: {{name: {name}, namespace: {NAMESPACE}, annotations: {{{annotations}}}}}", 1)


@contextmanager
def http_servers(backends: list[Backend], modes: Path) -> Iterator[dict[str, Path]]:
    """An HTTP server on HTTP_PORT in each backend; write "500", "hang" or "ok" to its file."""
    processes: list[subprocess.Popen[str]] = []
    files = {b.name: modes / f"mode-{b.name}" for b in backends}
    try:
        for b in backends:
            processes.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", b.netns, *b.agent_cmd, "serve-http", str(HTTP_PORT), str(files[b.name])],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for process in processes:
            assert _readline(process, 60).strip() == "ready"
        yield files
    finally:
        for process in processes:
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
    }

    def weights(vip: str) -> dict[str, int] | None:
        reals = tool.reals(vip, 53, "udp") if vip == "198.51.100.84" else tool.reals(vip, 80)
        by_address = {a: n for n, a in be.items()}
        return None if reals is None else {by_address.get(a, a): w for a, (w, _, _) in reals.items()}

    def wait_weights(vip: str, *wanted: dict[str, int]) -> float:
        started = time.monotonic()
        wait_for(lambda: weights(vip) in wanted, BOUND, f"{vip}: weights {wanted}", describe=lambda: str(weights(vip)))
        return time.monotonic() - started

    def reasons(service: str, state: str) -> list[str]:
        return [
            e["reason"]
            for e in agent.events()
            if e.get("event") == "health changed"
            and e.get("service") == f"{NAMESPACE}/{service}"
            and e.get("state") == state
        ]

    agent = AgentProcess(state, manifests, tmp_path)
    with http_servers([backends["be1"], backends["be2"]], tmp_path) as modes:
        for name, (vip, ready, notes) in services.items():
            endpoints = {be[b]: True for b in ready}
            write_atomically(manifests / f"{name}.yaml", annotated(name, vip, endpoints, notes, udp=name == "hc-dns"))
        try:
            agent.start()
            wait_weights("198.51.100.80", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.81", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.82", {"be4": 1})
            wait_weights("198.51.100.83", {"be1": 1, "be2": 1})
            wait_weights("198.51.100.84", {"be1": 1, "be2": 1})

            # TCP check, drain, under a client loop: be1's server killed → weight 0, and the
            # requests that failed all fall between the kill and the moment it left rotation
            loop = client.loop("198.51.100.80", 80, seconds=6 + VM_LATENCY, period=0.05, timeout=1.0)
            time.sleep(1.5)
            killed = time.monotonic()
            backends["be1"].stop_server()
            wait_weights("198.51.100.80", {"be1": 0, "be2": 1})
            out = time.monotonic()
            answers = loop.result()
            failed = [t for t, answer in answers if answer.startswith("!")]
            assert failed, "no request failed: be1 was never scheduled between the kill and the drain"
            assert all(killed - 0.05 <= t <= out for t in failed), (killed, out, failed)
            after = [answer for t, answer in answers if t > out]
            assert after and set(after) == {"be2"}, after
            assert {answer for t, answer in answers if t < killed} == {"be1", "be2"}
            assert out - killed <= DETECTION + VM_LATENCY, out - killed
            assert reasons("hc-tcp", "down") == ["connection refused"]
            assert client.requests("198.51.100.80", 80, 6) == ["be2"] * 6
            backends["be1"].start_server()  # returns once the server listens
            back = wait_weights("198.51.100.80", {"be1": 1, "be2": 1})
            assert sorted(set(client.requests("198.51.100.80", 80, 6))) == ["be1", "be2"]

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
            assert reasons("hc-http", "down") == ["status 500", f"timed out after {TIMEOUT:g} s"]

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
                    f"\nMEASURED tcp check (interval {INTERVAL} s, failures {FAILURES}, successes {SUCCESSES}): "
                    f"server killed → weight 0 in {out - killed:.2f} s (keepalived's bound {DETECTION:g} s), "
                    f"{len(failed)} of {len(answers)} loop requests failed, all inside it; "
                    f"restarted → back in {back:.2f} s"
                )
            for name in services:
                (manifests / f"{name}.yaml").unlink()
            wait_for(lambda: all(weights(v) is None for v, _, _ in services.values()), BOUND, "the agent to clean up")
            assert agent.stop() == 0, agent.tail()
        finally:
            agent.stop()
