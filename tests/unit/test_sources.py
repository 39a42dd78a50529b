"""Reading manifests: files, directories, stdin, List, other kinds, and the errors users see."""

from __future__ import annotations

import io
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsctl.errors import InputError
from ipvsctl.sources import parse
from ipvsctl.sources.files import load

GOOD = """apiVersion: v1
kind: Service
metadata: {name: ok, namespace: ns}
spec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}
"""


def service(spec: str, meta: str = "{name: s, namespace: ns}") -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {meta}\nspec: {spec}\n"


ERRORS = [
    (
        "port-out-of-range",
        service("{clusterIP: 10.96.0.1, ports: [{port: 70000}]}"),
        "document 2: Service ns/s: spec.ports[0].port: must be between 1 and 65535, got 70000",
    ),
    (
        "port-wrong-type",
        service("{clusterIP: 10.96.0.1, ports: [{port: eighty}]}"),
        "spec.ports[0].port: must be an integer, got a string",
    ),
    (
        "bad-address",
        service("{clusterIP: 10.96.0.300, ports: [{port: 80}]}"),
        "spec.clusterIP: '10.96.0.300' is not an IPv4 or IPv6 address",
    ),
    (
        "unspecified-address",
        service("{clusterIP: 0.0.0.0, ports: [{port: 80}]}"),
        "spec.clusterIP: 0.0.0.0 is the unspecified address",
    ),
    (
        "loopback-external-ip",
        service("{clusterIP: 10.96.0.1, externalIPs: [127.0.0.1], ports: [{port: 80}]}"),
        "spec.externalIPs[0]: 127.0.0.1 is a loopback address",
    ),
    ("multicast", service("{clusterIP: 224.0.0.5, ports: [{port: 80}]}"), "224.0.0.5 is a multicast address"),
    (
        "missing-name",
        service("{clusterIP: 10.96.0.1}", meta="{namespace: ns}"),
        "metadata.name: must be a string, got nothing",
    ),
    (
        "bad-protocol",
        service("{clusterIP: 10.96.0.1, ports: [{port: 80, protocol: ICMP}]}"),
        "spec.ports[0].protocol: must be one of TCP, UDP, SCTP; got 'ICMP'",
    ),
    ("bad-type", service("{type: Magic, clusterIP: 10.96.0.1}"), "spec.type: must be one of"),
    (
        "unnamed-multi-port",
        service("{clusterIP: 10.96.0.1, ports: [{port: 80}, {port: 81}]}"),
        "spec.ports[0].name: is required when a Service has more than one port",
    ),
    ("spec-not-mapping", service("[1, 2]"), "spec: must be a mapping, got a list"),
    (
        "affinity-timeout",
        service(
            "{clusterIP: 10.96.0.1, sessionAffinity: ClientIP, "
            "sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}, ports: [{port: 80}]}"
        ),
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds: must be between 1 and 86400, got 0",
    ),
    ("python-tag", "a: !!python/object/apply:os.system ['true']\n", "document 2: invalid YAML (line 6, column 4)"),
    ("broken-yaml", "a: [1, 2\n", "invalid YAML"),
    (
        "slice-without-service-label",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: e, namespace: ns}\naddressType: IPv4\nendpoints: []\n",
        "EndpointSlice ns/e: metadata.labels.kubernetes.io/service-name: is required",
    ),
    ("scalar-document", "just a string\n", "a Kubernetes object must be a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_names_file_object_and_field(tmp_path: Path, text: str, expected: str) -> None:
    """Every input mistake becomes one Problem naming file, document, object and field; the good Service survives."""
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD + "---\n" + text)
    snap = load([str(path)])
    assert len(snap.problems) == 1, snap.problems
    message = str(snap.problems[0])
    assert message.startswith(str(path))
    assert expected in message
    assert [s.name for s in snap.services] == ["ok"]


def test_bad_endpoint_costs_only_that_endpoint(tmp_path: Path) -> None:
    """One invalid endpoint address is reported and dropped; the slice's other endpoints stay."""
    path = tmp_path / "e.yaml"
    path.write_text(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e, namespace: ns, "
        "labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nports: [{port: 80}]\n"
        "endpoints: [{addresses: [10.0.0.1]}, {addresses: ['fd00::1']}, {addresses: [nope]}]\n"
    )
    snap = load([str(path)])
    assert [str(e.addresses[0]) for e in snap.slices[0].endpoints] == ["10.0.0.1"]
    assert [p.field for p in snap.problems] == ["endpoints[1].addresses[0]", "endpoints[2].addresses[0]"]


def test_directory_recursion_list_and_other_kinds(tmp_path: Path) -> None:
    """Directories are walked for *.yaml/*.yml; `kind: List` is flattened; other kinds are skipped quietly."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: x}\n"
        "  spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}\n- apiVersion: apps/v1\n  kind: Deployment\n"
        "  metadata: {name: d}\n"
    )
    (tmp_path / "notes.txt").write_text("not yaml: [")
    snap = load([str(tmp_path)])
    assert snap.problems == ()
    assert sorted(f"{s.namespace}/{s.name}" for s in snap.services) == ["default/x", "ns/ok"]


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' reads manifests from standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD))
    assert [s.name for s in load(["-"]).services] == ["ok"]


def test_missing_path_and_duplicate_service(tmp_path: Path) -> None:
    """A missing path and a duplicated Service are each reported; the first definition wins."""
    path = tmp_path / "d.yaml"
    path.write_text(GOOD + "---\n" + GOOD.replace("10.96.0.9", "10.96.0.8"))
    snap = load([str(path), str(tmp_path / "nope")])
    assert [str(s.cluster_ips[0]) for s in snap.services] == ["10.96.0.9"]
    assert sorted(p.message for p in snap.problems) == [
        "duplicate Service: the first definition is used",
        "no such file or directory",
    ]


def test_billion_laughs_is_bounded(tmp_path: Path) -> None:
    """An alias bomb is refused as a whole document, with a problem that says so, before it expands."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = "\n".join(lines) + "\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: *a8}\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    snap = load([str(path)])
    assert len(snap.problems) == 1
    assert "aliases stand for more than 100000 nodes" in str(snap.problems[0])


# --- the fast paths of field reading: the same answers as the plain ones ---

_DOTTED = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.text(alphabet="0123456789.", max_size=17),
    st.text(alphabet="0123456789.: x\t\0٣", max_size=20),
    st.lists(st.integers(0, 999).map(str), min_size=3, max_size=5).map(".".join),
    st.lists(st.sampled_from(["0", "00", "01", "1", "255", "256", "010"]), min_size=4, max_size=4).map(".".join),
)


@given(_DOTTED)
def test_fast_ipv4_takes_exactly_what_ipaddress_takes(text: str) -> None:
    try:
        expected = ipaddress.ip_address(text)
    except ValueError:
        expected = None
    try:
        fast = parse._ipv4(text)
    except (OSError, ValueError, UnicodeError):
        fast = None
    if expected is not None and expected.version == 6:
        assert fast is None
    else:
        assert fast == expected


def _unusable_by_ipaddress(addr: ipaddress.IPv4Address, purpose: str) -> str | None:
    """The IPv4 rules spelt with ipaddress's own properties: what the integer checks must equal."""
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_loopback:
        return "a loopback address"
    if addr == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    if purpose == "service" and addr in ipaddress.IPv4Network("169.254.0.0/16"):
        return "an IPv4 link-local address"
    return None


@given(st.ip_addresses(v=4), st.sampled_from(["service", "backend"]))
def test_fast_ipv4_checks_agree_with_ipaddress(addr: ipaddress.IPv4Address, purpose: str) -> None:
    assert parse.unusable_address(addr, purpose) == _unusable_by_ipaddress(addr, purpose)


@pytest.mark.parametrize(
    "text", ["0.0.0.0", "224.0.0.1", "239.255.255.255", "127.0.0.2", "255.255.255.255", "169.254.1.1", "10.0.0.1"]
)
@pytest.mark.parametrize("purpose", ["service", "backend"])
def test_fast_ipv4_checks_at_the_edges(text: str, purpose: str) -> None:
    addr = ipaddress.IPv4Address(text)
    assert parse.unusable_address(addr, purpose) == _unusable_by_ipaddress(addr, purpose)


def test_a_node_spells_its_path_only_when_asked() -> None:
    root = parse.Node({"spec": {"ports": [{"port": "x"}]}}, "Service/a")
    leaf = root.child("spec").child("ports").child(0).child("port")
    assert leaf._path is None
    assert leaf.path == "Service/a.spec.ports[0].port"
    assert parse.Node({"a": 1}).child("a").path == "a"
    with pytest.raises(InputError, match=r"^spec\.ports\[0\]\.port"):
        parse.Node({"spec": {"ports": [{"port": "x"}]}}).at("spec.ports").child(0).child("port").integer(1, 2)


_ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-1, 1), st.text(max_size=3), st.sampled_from(["node-1", "", "true"])
)
_ADDRESS_TEXT = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.sampled_from(["10.0.0.1", "127.0.0.1", "0.0.0.0", "224.0.0.1", "169.254.0.1", "010.0.0.1", "::1", "x"]),
    st.integers(),
)
_CONDITION = st.one_of(st.none(), st.booleans())
_SOUND_ENDPOINT = st.fixed_dictionaries(
    {"addresses": st.lists(st.ip_addresses(v=4, network="10.0.0.0/8").map(str), min_size=1, max_size=2)},
    optional={
        "conditions": st.one_of(
            st.none(),
            st.fixed_dictionaries({}, optional={"ready": _CONDITION, "serving": _CONDITION, "terminating": _CONDITION}),
        ),
        "nodeName": st.one_of(st.none(), st.sampled_from(["node-1", "node-2", ""])),
    },
)
_CONDITIONS = st.one_of(
    st.fixed_dictionaries({}, optional={"ready": _ODD_VALUES, "serving": _ODD_VALUES, "terminating": _ODD_VALUES}),
    _ODD_VALUES,
)


@st.composite
def _endpoint(draw: st.DrawFn) -> object:
    """Mostly sound endpoints (what the fast path answers for), some with one field spoilt, some junk."""
    kind = draw(st.sampled_from(["sound", "sound", "spoilt", "junk"]))
    if kind == "junk":
        return draw(_ODD_VALUES)
    endpoint = draw(_SOUND_ENDPOINT)
    if kind == "spoilt":
        field = draw(st.sampled_from(["addresses", "conditions", "nodeName"]))
        endpoint[field] = draw(
            {"addresses": st.lists(_ADDRESS_TEXT, max_size=3), "conditions": _CONDITIONS, "nodeName": _ODD_VALUES}[
                field
            ]
        )
    return endpoint


def _slice_doc(endpoints: list[object]) -> parse.Node:
    return parse.Node(
        {
            "metadata": {"name": "s", "namespace": "n", "labels": {parse.SERVICE_NAME_LABEL: "svc"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }
    )


@settings(max_examples=300)
@given(st.lists(_endpoint(), max_size=4))
def test_the_plain_endpoint_fast_path_reads_what_the_general_reading_reads(endpoints: list[object]) -> None:
    """Same slice, same problems (the fast path only ever answers for endpoints with nothing wrong)."""
    fast_problems: list[InputError] = []
    fast = parse.parse_endpoint_slice(_slice_doc(endpoints), fast_problems)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(parse, "_plain_ipv4_endpoint", lambda raw: None)
        slow_problems: list[InputError] = []
        slow = parse.parse_endpoint_slice(_slice_doc(endpoints), slow_problems)
    assert fast == slow
    assert [str(p) for p in fast_problems] == [str(p) for p in slow_problems]


def test_the_fast_path_answers_for_plain_endpoints() -> None:
    raw = {"addresses": ["10.1.2.3"], "conditions": {"ready": False}, "nodeName": "n1"}
    assert parse._plain_ipv4_endpoint(raw) == parse.Endpoint(
        (ipaddress.IPv4Address("10.1.2.3"),), ready=False, serving=False, terminating=False, node_name="n1"
    )
    assert parse._plain_ipv4_endpoint({"addresses": ["127.0.0.1"]}) is None  # the general reading explains
