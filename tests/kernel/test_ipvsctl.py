"""ipvsctl against a real kernel, proven with real connections through real virtual servers.

The CLI runs in-process (CliRunner) on the real NetlinkKernel, because starting Python in the
test VM costs seconds; one test runs the installed console script to prove it end to end.
Every test removes what it made with `ipvsctl cleanup` (never a flush).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import NODE_CLIENT_V4, Client, Topology
from typer.testing import CliRunner

from ipvsctl import cli

REPO = Path(__file__).resolve().parents[2]
BE = {"be1": "203.0.113.11", "be2": "203.0.113.12", "be3": "203.0.113.13", "be4": "203.0.113.14"}
BE6 = {"be1": "2001:db8:b::11", "be2": "2001:db8:b::12"}


class Ipvsctl:
    """Run ipvsctl commands with a private state directory and manifest directory."""

    def __init__(self, state: Path, manifests: Path) -> None:
        self.state = state
        self.manifests = manifests

    def __call__(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli.app, ["--state-dir", str(self.state), *args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    def write(self, name: str, text: str) -> None:
        (self.manifests / name).write_text(textwrap.dedent(text))

    def apply(self, *extra: str) -> str:
        code, out, err = self(
            "apply", "-f", str(self.manifests), "--node-ip", NODE_CLIENT_V4, "--node-name", "node-a", *extra
        )
        assert code == 0, err
        return out

    def listing(self) -> list[dict]:
        code, out, err = self("list", "-o", "json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def ipvsctl(topology: Topology, tmp_path: Path) -> Iterator[Ipvsctl]:
    """ipvsctl with fresh state; everything it created is cleaned up after the test."""
    (tmp_path / "m").mkdir()
    tool = Ipvsctl(tmp_path / "state", tmp_path / "m")
    yield tool
    code, _, err = tool("cleanup")
    assert code == 0, err


def service(
    name: str,
    vip: str,
    backends: dict[str, str] | list[str],
    *,
    port: int = 80,
    proto: str = "TCP",
    scheduler: str | None = None,
    flags: str | None = None,
    affinity: bool = False,
    extra_spec: str = "",
    family: str = "IPv4",
) -> str:
    """A Service and its EndpointSlice; ``backends`` maps address → ready ('true'/'false') or lists ready ones."""
    ready = {addr: "true" for addr in backends} if isinstance(backends, list) else backends
    notes = []
    if scheduler:
        notes.append(f"ipvsctl.io/scheduler: {scheduler}")
    if flags:
        notes.append(f"ipvsctl.io/scheduler-flags: '{flags}'")
    affinity_spec = "sessionAffinity: ClientIP" if affinity else ""
    endpoints = "\n".join(
        f'  - addresses: ["{a}"]\n    conditions: {{ready: {r}}}\n    nodeName: node-a' for a, r in ready.items()
    )
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: t
  annotations: {{{", ".join(notes)}}}
spec:
  clusterIP: "{vip}"
  {affinity_spec}
  {extra_spec}
  ports: [{{name: p, protocol: {proto}, port: {port}, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: t, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: {family}
ports: [{{name: p, protocol: {proto}, port: 8080}}]
endpoints:
{endpoints}
"""


def ipvsadm_rules(ipvsadm: str) -> set[str]:
    return {
        line
        for line in subprocess.run([ipvsadm, "-Sn"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line
    }


def test_round_robin_spreads_evenly(ipvsctl: Ipvsctl, client: Client) -> None:
    """rr: 12 connections split 6/6 across two backends."""
    ipvsctl.write("rr.yaml", service("rr", "198.51.100.20", [BE["be1"], BE["be2"]]))
    ipvsctl.apply()
    answers = client.requests("198.51.100.20", 80, 12)
    assert Counter(answers) == {"be1": 6, "be2": 6}


def test_source_hash_sticks_per_client_and_spreads(ipvsctl: Ipvsctl, client: Client) -> None:
    """sh: one client address always reaches one backend; several addresses reach several backends."""
    ipvsctl.write(
        "sh.yaml", service("sh", "198.51.100.21", [BE[b] for b in ("be1", "be2", "be3", "be4")], scheduler="sh")
    )
    ipvsctl.apply()
    seen = set()
    for source in client.sources_v4:
        answers = set(client.requests("198.51.100.21", 80, 4, source=source))
        assert len(answers) == 1, (source, answers)
        seen |= answers
    assert len(seen) >= 2, seen


def test_destination_hash_pins_vip(ipvsctl: Ipvsctl, client: Client) -> None:
    """dh: every connection to one VIP reaches the same backend, whatever the source."""
    ipvsctl.write("dh.yaml", service("dh", "198.51.100.22", [BE[b] for b in ("be1", "be2", "be3")], scheduler="dh"))
    ipvsctl.apply()
    answers = [a for source in client.sources_v4[:4] for a in client.requests("198.51.100.22", 80, 3, source=source)]
    assert len(set(answers)) == 1 and answers[0].startswith("be"), answers


def test_least_connection_avoids_busy_backend(ipvsctl: Ipvsctl, client: Client) -> None:
    """lc: while one backend holds an open connection, new connections go to the other."""
    ipvsctl.write("lc.yaml", service("lc", "198.51.100.23", [BE["be1"], BE["be2"]], scheduler="lc"))
    ipvsctl.apply()
    with client.hold("198.51.100.23", 80, 1) as held:
        (busy,) = held.backends
        assert busy in ("be1", "be2")
        other = "be2" if busy == "be1" else "be1"
        assert client.requests("198.51.100.23", 80, 8) == [other] * 8


def test_client_ip_affinity_sticks(ipvsctl: Ipvsctl, client: Client) -> None:
    """sessionAffinity: ClientIP: rr would alternate, persistence keeps each client on one backend."""
    ipvsctl.write("aff.yaml", service("aff", "198.51.100.24", [BE["be1"], BE["be2"]], affinity=True))
    ipvsctl.apply()
    for source in client.sources_v4[:3]:
        assert len(set(client.requests("198.51.100.24", 80, 6, source=source))) == 1
    (obj,) = ipvsctl.listing()
    assert obj["flags"] == ["persistent"] and obj["persistence_timeout"] == 10800


def test_udp_service_answers(ipvsctl: Ipvsctl, client: Client) -> None:
    """A UDP virtual server forwards datagrams and the answers come back through it."""
    ipvsctl.write("udp.yaml", service("dns", "198.51.100.25", [BE["be3"], BE["be4"]], port=53, proto="UDP"))
    ipvsctl.apply()
    answers = client.requests("198.51.100.25", 53, 8, proto="udp")
    assert Counter(answers) == {"be3": 4, "be4": 4}


def test_nodeport_answers_on_node_address(ipvsctl: Ipvsctl, client: Client) -> None:
    """A NodePort Service answers on the node's own address at the node port."""
    ipvsctl.write(
        "np.yaml",
        service("np", "198.51.100.26", [BE["be1"]]).replace(
            "ports: [{name: p, protocol: TCP, port: 80, targetPort: 8080}]",
            "type: NodePort\n  ports: [{name: p, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}]",
        ),
    )
    ipvsctl.apply()
    assert client.requests(NODE_CLIENT_V4, 30080, 3) == ["be1"] * 3
    assert client.requests("198.51.100.26", 80, 1) == ["be1"]


def test_ipv6_cluster_ip_answers(ipvsctl: Ipvsctl, client: Client) -> None:
    """An IPv6 ClusterIP balances to IPv6 backends."""
    ipvsctl.write("v6.yaml", service("v6", "2001:db8:5::27", [BE6["be1"], BE6["be2"]], family="IPv6"))
    ipvsctl.apply()
    assert Counter(client.requests("2001:db8:5::27", 80, 6)) == {"be1": 3, "be2": 3}


def test_not_ready_endpoint_leaves_rotation_and_drains(ipvsctl: Ipvsctl, client: Client) -> None:
    """Flipping an endpoint to not-ready and re-applying takes it out of rotation: weight 0 while its
    connection is open, new connections elsewhere; a later apply deletes it once idle."""
    ipvsctl.write("flip.yaml", service("flip", "198.51.100.28", [BE["be1"], BE["be2"]]))
    ipvsctl.apply()
    assert set(client.requests("198.51.100.28", 80, 4)) == {"be1", "be2"}
    with client.hold("198.51.100.28", 80, 2) as held:
        assert sorted(held.backends) == ["be1", "be2"]
        ipvsctl.write("flip.yaml", service("flip", "198.51.100.28", {BE["be1"]: "true", BE["be2"]: "false"}))
        ipvsctl.apply()
        assert client.requests("198.51.100.28", 80, 6) == ["be1"] * 6
        (obj,) = ipvsctl.listing()
        be2 = next(r for r in obj["real_servers"] if r["address"] == BE["be2"])
        assert be2["weight"] == 0 and be2["active_conns"] == 1
    # Once the held connection is closed be2 still has inactive entries (TIME_WAIT/FIN) until the kernel
    # expires them, so ipvsctl keeps it at weight 0; --drain-timeout 0 deletes it now.
    ipvsctl.apply("--drain-timeout", "0")
    (obj,) = ipvsctl.listing()
    assert [r["address"] for r in obj["real_servers"]] == [BE["be1"]]


def wait_conns(ipvsctl: Ipvsctl, want: int, timeout: float = 30.0) -> int:
    """The virtual server's connection counter once it reaches ``want`` (the kernel folds per-CPU
    counters into what netlink reports on its ~2 s estimator tick), or its last value at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        (obj,) = ipvsctl.listing()
        if obj["stats"]["conns"] >= want or time.monotonic() > deadline:
            return obj["stats"]["conns"]
        time.sleep(1)


def test_scheduler_edit_keeps_counters(ipvsctl: Ipvsctl, client: Client) -> None:
    """Changing the scheduler annotation edits the virtual server in place: its counters keep counting."""
    ipvsctl.write("ed.yaml", service("ed", "198.51.100.29", [BE["be1"], BE["be2"]], scheduler="lc"))
    ipvsctl.apply()
    client.requests("198.51.100.29", 80, 5)
    assert wait_conns(ipvsctl, 5) == 5
    ipvsctl.write("ed.yaml", service("ed", "198.51.100.29", [BE["be1"], BE["be2"]], scheduler="sh", flags="sh-port"))
    ipvsctl.apply()
    client.requests("198.51.100.29", 80, 5)
    assert wait_conns(ipvsctl, 10) == 10  # a delete+add would have started again from 0
    (obj,) = ipvsctl.listing()
    assert obj["scheduler"] == "sh" and obj["flags"] == ["sh-port"]
    assert {r["forward"] for r in obj["real_servers"]} == {"masq"}


def test_list_json_agrees_with_ipvsadm(ipvsctl: Ipvsctl, ipvsadm: str) -> None:
    """Every virtual and real server `ipvsctl list -o json` reports for the examples is what `ipvsadm -Sn` shows."""
    for f in (REPO / "examples").glob("*.yaml"):
        (ipvsctl.manifests / f.name).write_text(f.read_text())
    ipvsctl.apply()
    rules = ipvsadm_rules(ipvsadm)
    flag = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}
    objs = ipvsctl.listing()
    assert len(objs) == 14
    for obj in objs:
        host = f"[{obj['address']}]" if ":" in obj["address"] else obj["address"]
        vip = f"{flag[obj['protocol']]} {host}:{obj['port']}"
        line = next((r for r in rules if r.startswith(f"-A {vip} ")), None)
        assert line is not None, vip
        assert f"-s {obj['scheduler']}" in line
        if obj["persistence_timeout"]:
            assert f"-p {obj['persistence_timeout']}" in line
        reals = {r for r in rules if r.startswith(f"-a {vip} ")}
        want = set()
        for real in obj["real_servers"]:
            rhost = f"[{real['address']}]" if ":" in real["address"] else real["address"]
            want.add(f"-a {vip} -r {rhost}:{real['port']} -m -w {real['weight']}")
        assert reals == want, vip


def test_foreign_rules_survive_apply_and_cleanup(ipvsctl: Ipvsctl, ipvsadm: str, client: Client) -> None:
    """Virtual servers made by hand with ipvsadm (one at a VIP:port a Service wants) survive apply,
    re-apply and cleanup byte for byte; the clash is reported as a conflict."""
    made = [
        ["-A", "-t", "198.51.100.30:80", "-s", "wlc"],
        ["-a", "-t", "198.51.100.30:80", "-r", "203.0.113.14:8080", "-m", "-w", "7"],
        ["-A", "-u", "198.51.100.31:5000", "-s", "sh", "-b", "sh-port"],
        ["-A", "-t", "198.51.100.32:443", "-s", "rr", "-p", "30"],
    ]
    for cmd in made:
        subprocess.run([ipvsadm, *cmd], check=True)
    try:
        foreign = {r for r in ipvsadm_rules(ipvsadm) if "198.51.100.3" in r}
        assert len(foreign) == 4
        ipvsctl.write("ok.yaml", service("ok", "198.51.100.33", [BE["be1"]]))
        ipvsctl.write("clash.yaml", service("clash", "198.51.100.32", [BE["be2"]], port=443))
        code, _, err = ipvsctl("apply", "-f", str(ipvsctl.manifests), "--node-ip", NODE_CLIENT_V4)
        assert code == 4 and "Service t/clash: spec: virtual server TCP 198.51.100.32:443 already exists" in err
        assert client.requests("198.51.100.33", 80, 2) == ["be1", "be1"]
        ipvsctl("apply", "-f", str(ipvsctl.manifests), "--node-ip", NODE_CLIENT_V4)
        assert {r for r in ipvsadm_rules(ipvsadm) if "198.51.100.3" in r and "198.51.100.33" not in r} == foreign
        code, _, err = ipvsctl("cleanup")
        assert code == 0, err
        assert {r for r in ipvsadm_rules(ipvsadm) if "198.51.100.3" in r} == foreign
    finally:
        for vip in ("-t 198.51.100.30:80", "-u 198.51.100.31:5000", "-t 198.51.100.32:443"):
            subprocess.run([ipvsadm, "-D", *vip.split()], check=False)


def test_missing_scheduler_module_is_reported(ipvsctl: Ipvsctl) -> None:
    """A scheduler this kernel lacks (twos is newer than 6.1) fails that Service clearly; others apply."""
    ipvsctl.write("a.yaml", service("new", "198.51.100.34", [BE["be1"]], scheduler="twos"))
    ipvsctl.write("b.yaml", service("old", "198.51.100.35", [BE["be1"]]))
    code, _, err = ipvsctl("apply", "-f", str(ipvsctl.manifests), "--node-ip", NODE_CLIENT_V4)
    if code == 0:
        pytest.skip("this kernel has ip_vs_twos")
    assert code == 4
    assert "t/new:p" in err and "'twos'" in err and "ip_vs_twos" in err
    assert [o["service"]["name"] for o in ipvsctl.listing()] == ["old"]


def test_console_script_and_apply_twice(ipvsctl: Ipvsctl) -> None:
    """The installed `ipvsctl` command applies the examples; the second apply plans nothing (diff exit 0)."""
    exe = Path(sys.executable).with_name("ipvsctl")
    args = [str(exe), "--state-dir", str(ipvsctl.state)]
    node = ["--node-ip", NODE_CLIENT_V4, "--node-name", "node-a"]
    first = subprocess.run([*args, "apply", "-f", str(REPO / "examples"), *node], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*args, "diff", "-f", str(REPO / "examples"), *node], capture_output=True, text=True)
    assert (again.returncode, again.stdout) == (0, ""), again.stdout + again.stderr
    listing = subprocess.run([*args, "list"], capture_output=True, text=True, check=True).stdout
    assert "demo/web:http" in listing and "198.51.100.10:80" in listing


def test_a_dummy_interface_left_down_is_set_up(ipvsctl: Ipvsctl, client: Client) -> None:
    """A run killed between creating ipvsctl0 and setting it up leaves the interface down; the
    next apply that binds an address there sets it up (once read, the interface used to be
    taken as it was), and the ClusterIP answers."""
    subprocess.run(["ip", "link", "add", "ipvsctl0", "type", "dummy"], capture_output=True, check=False)
    subprocess.run(["ip", "link", "set", "ipvsctl0", "down"], check=True)
    ipvsctl.write("web.yaml", service("web", "10.96.7.1", [BE["be1"], BE["be2"]]))
    ipvsctl.apply()
    flags = subprocess.run(["ip", "-o", "link", "show", "ipvsctl0"], capture_output=True, text=True, check=True)
    assert ",UP" in flags.stdout.split(">")[0], flags.stdout
    assert sorted(client.requests("10.96.7.1", 80, 4)) == ["be1", "be1", "be2", "be2"]


def _json_service(name: str, vip: str, backends: list[str]) -> str:
    """A Service and its EndpointSlice as `kubectl get -o json` prints them: one List."""
    items = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "t"},
            "spec": {"clusterIP": vip, "ports": [{"name": "p", "protocol": "TCP", "port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "namespace": "t", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "p", "protocol": "TCP", "port": 8080}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in backends],
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=4)


def test_cached_diff_and_json_manifests_on_the_real_kernel(ipvsctl: Ipvsctl, ipvsadm: str, client: Client) -> None:
    """The console script on JSON manifests: apply, then `diff` (the quick path, translation from
    the cache) is empty; a weight changed behind ipvsctl's back still shows, and apply restores
    it; a threshold (not in /proc/net/ip_vs) shows within 8 cached diffs; a manifest change shows
    and applies; a damaged cache is ignored with a warning."""
    exe = Path(sys.executable).with_name("ipvsctl")
    base = [str(exe), "--state-dir", str(ipvsctl.state)]
    node = ["-f", str(ipvsctl.manifests), "--node-ip", NODE_CLIENT_V4, "--node-name", "node-a"]

    def run(*args: str) -> tuple[int, str, str]:
        done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, done.stderr

    (ipvsctl.manifests / "web.json").write_text(_json_service("web", "198.51.100.60", [BE["be1"], BE["be2"]]))
    code, _, err = run("apply", *node)
    assert code == 0, err
    assert sorted(client.requests("198.51.100.60", 80, 4)) == ["be1", "be1", "be2", "be2"]
    assert run("diff", *node)[:2] == (0, "")
    assert (ipvsctl.state / "cache" / "translation.pickle").exists()

    vip, be1 = "198.51.100.60:80", f"{BE['be1']}:8080"
    subprocess.run([ipvsadm, "-e", "-t", vip, "-r", be1, "-m", "-w", "5"], check=True)
    code, out, err = run("diff", *node)
    assert code == 1 and BE["be1"] in out and "weight" in out, out + err
    assert run("apply", *node)[0] == 0
    assert f"-a -t {vip} -r {be1} -m -w 1" in ipvsadm_rules(ipvsadm)

    # diff's kernel-read cache (from /proc/net/ip_vs): a threshold, which /proc does not show, is
    # seen at once by a full read and by the cached diff within readcache.DEEP_EVERY runs
    assert run("diff", *node)[:2] == (0, "")
    assert (ipvsctl.state / "cache" / "kernel-read.pickle").exists()
    subprocess.run([ipvsadm, "-e", "-t", vip, "-r", be1, "-m", "-w", "1", "-x", "50"], check=True)
    assert run("diff", "--no-cache", *node)[0] == 1
    runs = next((n for n in range(1, 9) if run("diff", *node)[0] == 1), None)
    assert runs is not None, "the cached diff never read the changed real server again"
    assert run("apply", *node)[0] == 0
    assert f"-a -t {vip} -r {be1} -m -w 1" in ipvsadm_rules(ipvsadm)

    (ipvsctl.manifests / "web.json").write_text(_json_service("web", "198.51.100.60", [BE["be1"]]))
    code, out, err = run("diff", *node)
    assert code == 1 and BE["be2"] in out, out + err
    assert run("apply", *node)[0] == 0
    assert client.requests("198.51.100.60", 80, 3) == ["be1", "be1", "be1"]

    cached = ipvsctl.state / "cache" / "translation.pickle"
    cached.write_bytes(cached.read_bytes()[:-7])
    code, out, err = run("diff", *node)
    assert (code, out) == (0, "") and "cache ignored" in err and "damaged" in err, err
