"""deploy/: the Kubernetes manifests, the container image recipe and the systemd unit, read and
checked against the code they deploy (CLI flags, config keys, served paths, API calls, version)."""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from configparser import ConfigParser
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from typer.testing import CliRunner

from ipvsctl import cli, logs
from ipvsctl.agent import command
from ipvsctl.agent.config import AgentConfig, build, read_file
from ipvsctl.agent.health import SyncStatus
from ipvsctl.agent.http import parse_address, serve
from ipvsctl.agent.metrics import Metrics
from ipvsctl.sources.kube import source as kube_source
from ipvsctl.sources.kube.client import Client

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
SYS_MODULE = KUBE / "components" / "sys-module" / "kustomization.yaml"
CONTAINERFILE = REPO / "deploy" / "container" / "Containerfile"
UNIT = REPO / "deploy" / "systemd" / "ipvsctl.service"
AGENT_YAML = REPO / "deploy" / "systemd" / "agent.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

# kind -> the apiVersion it must have
KINDS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "DaemonSet": "apps/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}


# --- helpers ---


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def one(kind: str) -> dict[str, Any]:
    found = [d for p in sorted(KUBE.glob("*.yaml")) for d in documents(p) if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in {KUBE}, found {len(found)}"
    return found[0]


def container(daemonset: dict[str, Any]) -> dict[str, Any]:
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def capabilities(daemonset: dict[str, Any]) -> dict[str, list[str]]:
    return container(daemonset).get("securityContext", {}).get("capabilities", {})


def console_script() -> str:
    (name,) = PYPROJECT["project"]["scripts"]
    return name


@dataclass
class AgentCall:
    """What `ipvsctl agent` would run the agent with: the arguments of ipvsctl.agent.command.run."""

    config_file: Path | None
    flags: dict[str, Any]
    state_dir: Path

    def config(self, config_file: Path | None = None) -> AgentConfig:
        """The agent's configuration as the real loader builds it (``config_file`` replaces the path given)."""
        return build(config_file or self.config_file, self.flags)


def refuse_kernel(interface: str) -> Any:
    raise AssertionError("the test reached the kernel: the agent itself was started")


@pytest.fixture
def agent_cli(monkeypatch: pytest.MonkeyPatch):
    """Runs the real CLI on some arguments up to the point where the agent would start, and
    returns what it would start with. Nothing touches the kernel, the logs set-up or /run."""
    for name in ("NODE_NAME", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith("IPVSCTL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    monkeypatch.setattr(cli, "KERNEL_FACTORY", refuse_kernel)  # a safety net: the agent must not get this far
    monkeypatch.setattr(cli.CTX, "state_dir", cli.CTX.state_dir)  # restored afterwards
    monkeypatch.setattr(cli.CTX, "log_format", cli.CTX.log_format)

    def invoke(args: list[str], env: dict[str, str] | None = None) -> AgentCall:
        calls: list[AgentCall] = []

        def fake_run(config_file: Path | None, flags: dict[str, Any], state_dir: Path, _open: Any) -> int:
            calls.append(AgentCall(config_file, dict(flags), state_dir))
            return 0

        monkeypatch.setattr(command, "run", fake_run)
        result = CliRunner().invoke(cli.app, list(args), env=env)
        assert result.exit_code == 0, f"ipvsctl {shlex.join(args)}: exit {result.exit_code}: {result.output}"
        assert len(calls) == 1, f"ipvsctl {shlex.join(args)} did not run the agent"
        return calls[0]

    return invoke


def pod_env(daemonset: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would set it (the node's name: node-7)."""
    downward = {"spec.nodeName": "node-7"}
    env = {}
    for entry in container(daemonset).get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def agent_of(agent_cli: Any, daemonset: dict[str, Any]) -> AgentCall:
    """What the DaemonSet's container would start the agent with."""
    return agent_cli(container(daemonset)["args"], pod_env(daemonset))


def quantity(text: str | int) -> float:
    """A Kubernetes memory quantity in bytes (the suffixes used here)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?", str(text))
    assert match, f"not a memory quantity: {text!r}"
    scale = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    return float(match.group(1)) * scale[match.group(2)]


def json_patch_add(document: dict[str, Any], path: str, value: Any) -> None:
    """RFC 6902 "add" (the only op the components use), "-" appending to a list."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), value)
    else:
        node[last] = value


@dataclass
class Instruction:
    keyword: str
    text: str

    def words(self) -> list[str]:
        return shlex.split(self.text)


def containerfile_stages() -> list[list[Instruction]]:
    """The Containerfile's instructions, one list per FROM, continuation lines joined and comments dropped."""
    stages: list[list[Instruction]] = []
    pending = ""
    for line in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, "the Containerfile must start with FROM"
        stages[-1].append(Instruction(keyword.upper(), rest.strip()))
    return stages


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.text)
    assert isinstance(value, list), f"{instruction.keyword} must be in exec (JSON) form"
    return value


def unit() -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


@contextlib.contextmanager
def agent_http(status: SyncStatus, sync_period: float) -> Iterator[int]:
    server = serve("127.0.0.1:0", Metrics(), lambda: status, sync_period, clock=lambda: 1000.0)
    try:
        yield server.port
    finally:
        server.close()


def http_get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


# --- Kubernetes ---


def test_every_kubernetes_yaml_parses_and_is_a_known_kind() -> None:
    """Every YAML file under deploy/kubernetes parses, and each document is a known kind with its apiVersion."""
    paths = sorted(KUBE.rglob("*.yaml")) + sorted(KUBE.rglob("*.yml"))
    assert paths
    for path in paths:
        docs = documents(path)
        assert docs, f"{path}: empty"
        for doc in docs:
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            assert doc.get("kind") in KINDS, f"{path}: unknown kind {doc.get('kind')!r}"
            assert doc.get("apiVersion") == KINDS[doc["kind"]], f"{path}: {doc['kind']} has {doc.get('apiVersion')}"


def test_kustomization_lists_every_resource_file() -> None:
    """kustomization.yaml lists exactly the resource files next to it, and each exists."""
    (kustomization,) = documents(KUBE / "kustomization.yaml")
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (KUBE / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == present


def test_cluster_role_grants_exactly_what_the_agent_reads() -> None:
    """The ClusterRole grants list and watch on exactly the API paths the Kubernetes source requests."""
    paths = {v for k, v in vars(kube_source).items() if k.isupper() and isinstance(v, str) and v.startswith("/api")}
    wanted_resources = set()
    for path in paths:
        parts = path.strip("/").split("/")  # api/v1/services, apis/discovery.k8s.io/v1/endpointslices
        wanted_resources.add(("", parts[2]) if parts[0] == "api" else (parts[1], parts[3]))
    assert wanted_resources == {("", "services"), ("discovery.k8s.io", "endpointslices"), ("", "nodes")}
    # the client can only list and watch collections: those are the verbs it needs
    verbs = {name for name, value in vars(Client).items() if callable(value) and not name.startswith("_")}
    assert verbs == {"list", "watch"}

    granted = set()
    for rule in one("ClusterRole")["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {(g, r, v) for g, r in wanted_resources for v in verbs}


def test_binding_refers_to_the_role_and_the_service_account() -> None:
    """The ClusterRoleBinding binds the ClusterRole to the DaemonSet's ServiceAccount in its namespace."""
    binding, role, account, daemonset = (
        one(k) for k in ("ClusterRoleBinding", "ClusterRole", "ServiceAccount", "DaemonSet")
    )
    namespace = one("Namespace")["metadata"]["name"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": namespace}
    ]
    assert account["metadata"]["namespace"] == namespace == daemonset["metadata"]["namespace"]
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_daemonset_runs_in_the_node_network_with_its_node_name() -> None:
    """The agent's pod uses the host network and gets NODE_NAME from spec.nodeName."""
    daemonset = one("DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    env = {e["name"]: e for e in container(daemonset).get("env", [])}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_daemonset_adds_net_admin_only_and_is_not_privileged() -> None:
    """The container adds NET_ADMIN (no SYS_MODULE), drops the rest, is not privileged and cannot escalate."""
    daemonset = one("DaemonSet")
    context = container(daemonset)["securityContext"]
    assert capabilities(daemonset)["add"] == ["NET_ADMIN"]
    assert capabilities(daemonset)["drop"] == ["ALL"]
    assert not context.get("privileged", False)
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert not daemonset["spec"]["template"]["spec"].get("hostPID", False)


def test_daemonset_mounts_the_state_dir_and_modules_from_the_host(agent_cli) -> None:
    """/run/ipvsctl is a writable hostPath (DirectoryOrCreate) at the agent's state dir; /lib/modules is read-only."""
    daemonset = one("DaemonSet")
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container(daemonset)["volumeMounts"]}
    state_dir = str(agent_of(agent_cli, daemonset).state_dir)

    state = mounts[state_dir]
    assert volumes[state["name"]]["hostPath"] == {"path": "/run/ipvsctl", "type": "DirectoryOrCreate"}
    assert not state.get("readOnly", False)
    modules = mounts["/lib/modules"]
    assert volumes[modules["name"]]["hostPath"]["path"] == "/lib/modules"
    assert modules["readOnly"] is True


def test_daemonset_args_are_accepted_by_the_cli(agent_cli) -> None:
    """The DaemonSet's args and env make the real CLI start a Kubernetes agent named by NODE_NAME, no sysctls."""
    daemonset = one("DaemonSet")
    assert "command" not in container(daemonset), "the image's ENTRYPOINT (ipvsctl) must run the args"
    config = agent_of(agent_cli, daemonset).config()
    assert config.kubernetes is True
    assert config.manifests == ()
    assert config.node_name == "node-7"
    assert config.sysctls is False  # /proc/sys is read-only in the container


def test_daemonset_probes_ask_the_agent_on_its_metrics_address(agent_cli) -> None:
    """Liveness and readiness probe the agent's own host and port, on paths it answers as they need."""
    daemonset = one("DaemonSet")
    config = agent_of(agent_cli, daemonset).config()
    host, port = parse_address(config.metrics_address)
    assert (host, port) == parse_address(AgentConfig().metrics_address)  # the default address
    live = container(daemonset)["livenessProbe"]["httpGet"]
    ready = container(daemonset)["readinessProbe"]["httpGet"]
    for probe in (live, ready):
        assert probe["port"] == port
        assert probe.get("host") == (host or None)
        assert probe.get("scheme", "HTTP") == "HTTP"

    waiting = SyncStatus(started=990.0, ready=False)  # the API server is not answering yet
    with agent_http(waiting, config.sync_period) as served:
        assert http_get(served, live["path"]) == 200  # liveness must not restart an agent that waits
        assert http_get(served, ready["path"]) == 503
    synced = SyncStatus(started=900.0, ready=True, last_success=999.0)
    with agent_http(synced, config.sync_period) as served:
        assert http_get(served, live["path"]) == 200
        assert http_get(served, ready["path"]) == 200
    stale = SyncStatus(started=0.0, ready=True, last_success=1000.0 - 3 * config.sync_period)
    with agent_http(stale, config.sync_period) as served:
        assert http_get(served, live["path"]) == 503


def test_daemonset_resources_leave_room_for_the_measured_memory() -> None:
    """Requests are set, and the memory limit is at least twice the agent's largest measured peak RSS."""
    resources = container(one("DaemonSet"))["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    results = json.loads((REPO / "docs" / "performance-results.json").read_text(encoding="utf-8"))
    peak = max(size["agent_peak_rss_bytes"] for size in results["sizes"])
    limit = quantity(resources["limits"]["memory"])
    assert limit >= 2 * peak
    assert quantity(resources["requests"]["memory"]) <= limit


def test_daemonset_runs_on_every_node_like_kube_proxy() -> None:
    """It tolerates every taint, is node-critical and rolls one node at a time without surge."""
    daemonset = one("DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert isinstance(spec["terminationGracePeriodSeconds"], int)
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"].get("maxSurge", 0) == 0  # the lock and the port allow one agent a node


def test_daemonset_image_has_the_project_version() -> None:
    """The DaemonSet's image tag is the version in pyproject.toml."""
    image = container(one("DaemonSet"))["image"]
    assert image.rsplit(":", 1)[1] == PYPROJECT["project"]["version"]


def test_sys_module_component_adds_exactly_sys_module() -> None:
    """The sys-module component changes the DaemonSet only by adding SYS_MODULE to its capabilities."""
    (component,) = documents(SYS_MODULE)
    daemonset = one("DaemonSet")
    patched = copy.deepcopy(daemonset)
    assert component["patches"]
    for entry in component["patches"]:
        target = entry["target"]
        assert target["kind"] == "DaemonSet"
        assert target["name"] == daemonset["metadata"]["name"]
        assert target.get("namespace", daemonset["metadata"]["namespace"]) == daemonset["metadata"]["namespace"]
        for op in yaml.safe_load(entry["patch"]):
            assert op["op"] == "add"
            json_patch_add(patched, op["path"], op["value"])
    before, after = capabilities(daemonset)["add"], capabilities(patched)["add"]
    assert sorted(after) == sorted([*before, "SYS_MODULE"])
    capabilities(patched)["add"] = list(before)
    assert patched == daemonset  # nothing else changed


# --- container image ---


def test_containerfile_copies_only_files_of_the_repository() -> None:
    """Every COPY source from the build context exists in the repository, and the build gets all it reads."""
    copied: set[str] = set()
    for stage in containerfile_stages():
        for ins in stage:
            if ins.keyword not in ("COPY", "ADD"):
                continue
            assert ins.keyword == "COPY", "use COPY, not ADD"
            words = ins.words()
            if any(w.startswith("--from") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            assert sources
            for src in sources:
                assert (REPO / src).exists(), f"COPY {src}: not in the repository"
                copied.add(src.rstrip("/"))
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], *packages} <= copied


def test_containerfile_builds_a_wheel_of_the_repo_and_installs_it_without_build_tools() -> None:
    """The first stage builds wheels from the repository (pip wheel .); the last installs them offline."""
    stages = containerfile_stages()
    assert len(stages) >= 2
    build_runs = [ins.words() for ins in stages[0] if ins.keyword == "RUN"]
    assert any(w[:2] == ["pip", "wheel"] and "." in w for w in build_runs)
    final = " ".join(ins.text for ins in stages[-1] if ins.keyword == "RUN")
    installs = [ins.words() for ins in stages[-1] if ins.keyword == "RUN" and "pip install" in ins.text]
    assert len(installs) == 1
    assert "--no-index" in installs[0]
    assert PYPROJECT["project"]["name"] in installs[0]
    assert not re.search(r"\b(gcc|build-essential|python3-dev|pip wheel)\b", final)


def test_containerfile_python_satisfies_requires_python() -> None:
    """Every stage's python base image has one and the same version, allowed by requires-python."""
    versions = set()
    for stage in containerfile_stages():
        match = re.search(r"(?:^|/)python:(\d+\.\d+)", stage[0].text)
        assert match, f"FROM {stage[0].text}: not a python image"
        versions.add(match.group(1))
    assert len(versions) == 1  # the wheels are built for the python they are installed in
    (version,) = versions
    assert Version(version) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_containerfile_entrypoint_is_the_console_script_and_cmd_parses(agent_cli) -> None:
    """ENTRYPOINT is the console script pyproject defines; CMD is an agent invocation the CLI accepts."""
    final = containerfile_stages()[-1]
    (entrypoint,) = [exec_form(i) for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoint == [console_script()]
    assert PYPROJECT["project"]["scripts"][console_script()] == "ipvsctl.entry:main"
    (cmd,) = [exec_form(i) for i in final if i.keyword == "CMD"]
    assert agent_cli(cmd).config().kubernetes is True
    labels = " ".join(i.text for i in final if i.keyword == "LABEL")
    assert f'org.opencontainers.image.version="{PYPROJECT["project"]["version"]}"' in labels


# --- systemd ---


def test_unit_execstart_runs_the_agent_with_the_example_config(agent_cli) -> None:
    """ExecStart runs `ipvsctl agent` with flags the CLI accepts and --config at the example config's install path."""
    service = unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0].lstrip("-@+!:")).name == console_script()
    call = agent_cli(argv[1:])
    install_path = re.match(r"# (/\S+): ", AGENT_YAML.read_text(encoding="utf-8"))
    assert install_path, "agent.yaml must start with '# <install path>: '"
    assert str(call.config_file) == install_path.group(1)
    config = call.config(AGENT_YAML)  # the example config, as that command line would load it
    assert config.manifests


def test_example_config_keys_are_agent_options_with_default_values() -> None:
    """Every key of agent.yaml is accepted by the real loader, and each but manifests shows the default."""
    values = read_file(AGENT_YAML)
    assert values
    defaults = {f.name: f.default for f in fields(AgentConfig)}
    for name, value in values.items():
        if name != "manifests":
            assert value == defaults[name], f"agent.yaml: {name}: {value!r} is not the default {defaults[name]!r}"
    build(AGENT_YAML, {})


def test_unit_restarts_on_failure_and_never_cleans_up() -> None:
    """Restart=on-failure; SIGTERM stops, SIGHUP reloads; no ExecStop/ExecStopPost runs anything."""
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert "RestartSec" in service
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert shlex.split(service["ExecReload"])[1:] == ["-HUP", "$MAINPID"]
    assert not {"ExecStop", "ExecStopPost"} & set(service)


def test_unit_keeps_the_state_dir_and_bounds_capabilities(agent_cli) -> None:
    """The runtime directory is the agent's state dir, kept on stop; the capability bound has CAP_NET_ADMIN."""
    service = unit()["Service"]
    state_dir = agent_cli(shlex.split(service["ExecStart"])[1:]).state_dir
    assert Path("/run", service["RuntimeDirectory"]) == state_dir
    assert service["RuntimeDirectoryPreserve"] == "yes"
    assert str(state_dir) in service["ReadWritePaths"].split()
    assert "CAP_NET_ADMIN" in service["CapabilityBoundingSet"].split()
    assert service["NoNewPrivileges"] == "yes"
    assert "AF_NETLINK" in service["RestrictAddressFamilies"].split()


@pytest.mark.parametrize(
    ("args", "adopt", "sysctls"),
    [([], None, None), (["--adopt", "--sysctls"], True, True), (["--no-adopt", "--no-sysctls"], False, False)],
)
def test_agent_negative_flags_turn_options_off(agent_cli, args: list[str], adopt: bool | None, sysctls: bool | None):
    """`agent --no-adopt` / `--no-sysctls` turn those options off (they once turned them on), and
    leaving both out lets the config file or the default decide."""
    call = agent_cli(["agent", "--manifests", "/etc/ipvsctl/manifests", *args])
    assert (call.flags["adopt"], call.flags["sysctls"]) == (adopt, sysctls)
    config = call.config()
    assert config.adopt is bool(adopt) and config.sysctls is (sysctls is not False)
