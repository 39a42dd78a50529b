"""Hostile and broken manifests: whatever the files hold, the loader never raises, every problem
names its file (and its object and field when it has one), the valid rest is still produced, and
bombs and huge inputs cost bounded time and memory (docs/security.md, "Input limits").

Generated cases (hypothesis, 1,000 malformed or adversarial manifest sets in all):
- ``test_wrong_types_and_absurd_values_in_any_field``: 500 object-level mutations;
- ``test_garbage_between_valid_documents``: 500 files of YAML- and byte-level garbage;
- ``test_valid_yaml_reads_as_pyyaml_reads_it``: 200 valid documents (the loader's own
  constructor against PyYAML's safe loader; not counted as hostile).
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ipvsctl import cli
from ipvsctl.agent.world import World
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import Protocol, RealKey, ServiceKey
from ipvsctl.model.k8s import Snapshot
from ipvsctl.settings import Settings
from ipvsctl.sources import files
from ipvsctl.sources.directory import DirectorySource
from ipvsctl.sources.files import documents, load
from ipvsctl.translate import translate
from tests.conftest import ip

# --- the valid part every hostile file carries -------------------------------------------------

GOOD_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "good"},
    "spec": {"clusterIP": "198.51.100.7", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
}
GOOD_SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {"name": "web-1", "namespace": "good", "labels": {"kubernetes.io/service-name": "web"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [{"addresses": ["203.0.113.1"]}, {"addresses": ["203.0.113.2"]}],
}
GOOD_TEXT = yaml.safe_dump(GOOD_SERVICE) + "---\n" + yaml.safe_dump(GOOD_SLICE)
GOOD_KEY = ServiceKey(Protocol.TCP, ip("198.51.100.7"), 80)
GOOD_REALS = {RealKey(ip("203.0.113.1"), 8080), RealKey(ip("203.0.113.2"), 8080)}
SETTINGS = Settings(node_name="node-a")
KINDS = ("Service", "EndpointSlice", "Endpoints")


def assert_good_service_survives(snap: Snapshot) -> None:
    """The valid Service's virtual server comes out of translate with both of its endpoints."""
    desired = translate(snap, SETTINGS)
    entry = desired.services.get(GOOD_KEY)
    assert entry is not None, [str(p) for p in snap.problems]
    assert {r.key for r in entry.reals} == GOOD_REALS


def assert_problems_well_formed(snap: Snapshot, path: Path) -> None:
    """Each problem names the file; an object's problem names kind, object and field; YAML errors
    carry a line; no message spans lines (a name must not forge a line of output) or runs on."""
    for problem in snap.problems:
        text = str(problem)
        assert problem.origin.file == str(path), text
        assert text.startswith(f"{path}: "), text
        assert "\n" not in text and "\r" not in text, text
        assert len(text) < 2000, text
        assert problem.message, text
        if problem.origin.kind:
            assert problem.origin.kind in KINDS, text
            assert problem.origin.document >= 0, text
            assert problem.field, text
            assert f": {problem.origin.kind} " in text, text
        elif problem.message.startswith(("invalid YAML", "not UTF-8")):
            assert problem.origin.document >= 0, text
            assert re.search(r"\(line \d+, column \d+\)", problem.message), text


def write(directory: Path, data: bytes | str, name: str = "hostile.yaml") -> Path:
    path = directory / name
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


# --- object-level: wrong types and absurd values at every field -------------------------------

SPECIAL_ADDRESSES = [
    "0.0.0.0",
    "::",
    "127.0.0.1",
    "::1",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "169.254.1.1",
    "fe80::1",
    "fe80::1%eth0",
    "fd00::1%2",
    "1.2.3",
    "1.2.3.4.5",
    "::ffff:10.0.0.1",
    "10.0.0.1/32",
    "010.0.0.1",
    " 10.0.0.1",
    "10.0.0.1\n",
    "2001:db8::1",
    "10.2.3.4",
    "",
]
ABSURD_INTS = [0, -1, 1, 65535, 65536, 86401, 10**30, -(10**30), 2**31, 2**32, 2**63, 2**64]
WORDS = [
    "TCP",
    "UDP",
    "SCTP",
    "tcp",
    "ICMP",
    "None",
    "ClientIP",
    "ClusterIP",
    "NodePort",
    "LoadBalancer",
    "ExternalName",
    "Local",
    "Cluster",
    "IPv4",
    "IPv6",
    "FQDN",
    "List",
    "Service",
    "v1",
    "http",
    "Http",
    "-",
    "a\nerror: forged line",
    "x" * 300,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(ABSURD_INTS),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(SPECIAL_ADDRESSES),
    st.sampled_from(WORDS),
    st.binary(max_size=8),
)
KEYS = st.one_of(st.text(max_size=12), st.integers(-5, 5), st.booleans(), st.none())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
NAMES = st.one_of(st.sampled_from(WORDS), st.text(max_size=80), VALUES)

HOSTILE_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "evil", "namespace": "evil", "annotations": {"ipvsctl.io/scheduler": "rr"}},
    "spec": {
        "type": "LoadBalancer",
        "clusterIP": "10.0.0.1",
        "clusterIPs": ["10.0.0.1"],
        "ipFamilies": ["IPv4"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "nodePort": 30080}],
        "externalIPs": ["10.0.0.2"],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}},
        "externalTrafficPolicy": "Local",
        "internalTrafficPolicy": "Cluster",
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.3"}]}},
}
HOSTILE_SLICE: dict[str, Any] = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {"name": "evil-1", "namespace": "evil", "labels": {"kubernetes.io/service-name": "evil"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [
        {
            "addresses": ["10.1.0.1"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": "node-a",
        }
    ],
}
HOSTILE_ENDPOINTS: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Endpoints",
    "metadata": {"name": "evil", "namespace": "evil"},
    "subsets": [
        {
            "addresses": [{"ip": "10.1.0.2", "nodeName": "node-a"}],
            "notReadyAddresses": [{"ip": "10.1.0.3"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }
    ],
}
HOSTILE_LIST: dict[str, Any] = {"apiVersion": "v1", "kind": "List", "items": [HOSTILE_SERVICE, HOSTILE_SLICE]}
TEMPLATES = [HOSTILE_SERVICE, HOSTILE_SLICE, HOSTILE_ENDPOINTS, HOSTILE_LIST]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside a document (dict keys and list indexes)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


@st.composite
def hostile_object(draw: st.DrawFn) -> Any:
    """A Service, EndpointSlice, Endpoints or List with 1-4 fields replaced, removed or added."""
    doc = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    if draw(st.integers(0, 3)) == 0:  # names and namespaces often: they end up in every message
        meta = doc["items"][0]["metadata"] if "items" in doc else doc["metadata"]
        meta[draw(st.sampled_from(["name", "namespace"]))] = draw(NAMES)
    for _ in range(draw(st.integers(1, 4))):
        where = list(paths(doc))
        if not where or draw(st.integers(0, 9)) == 0:
            return draw(VALUES)  # the document itself is not an object
        path = draw(st.sampled_from(where))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "repeat"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(KEYS)] = draw(VALUES)
        elif isinstance(parent, list):
            parent.extend([parent[path[-1]]] * draw(st.integers(1, 3)))  # shared: dumped as YAML aliases
        else:
            parent[path[-1]] = draw(VALUES)
    return doc


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile=st.lists(hostile_object(), min_size=1, max_size=4), data=st.data())
def test_wrong_types_and_absurd_values_in_any_field(scratch: Path, hostile: list[Any], data: st.DataObject) -> None:
    """Any field of any object with a wrong type, absurd value, special address, or missing: no exception
    escapes load or translate, problems name file/object/field, the valid Service beside it is produced."""
    docs = list(hostile)
    if data.draw(st.booleans()):
        docs.append(copy.deepcopy(docs[0]))  # the same object twice
    for good in (GOOD_SERVICE, GOOD_SLICE):
        docs.insert(data.draw(st.integers(0, len(docs))), good)
    path = write(scratch, yaml.safe_dump_all(docs, default_flow_style=data.draw(st.sampled_from([False, None]))))
    snap = load([str(path)])
    assert_problems_well_formed(snap, path)
    assert_good_service_survives(snap)


# --- YAML- and byte-level garbage between valid documents --------------------------------------

SENTINEL = "ipvsctl-hostile-sentinel"
FRAGMENTS = [
    # tags: never executed, never constructed
    f"!!python/object/apply:os.system ['touch {SENTINEL}']",
    f"a: !!python/object/apply:subprocess.check_call [[touch, {SENTINEL}]]",
    "a: !!python/name:os.system",
    "a: !!python/object/new:os.system [x]",
    "!!python/module:os",
    "a: !custom [1]",
    "!custom {a: 1}",
    "a: !<tag:example.com,2000:x> 1",
    "a: !!set {x, y}",
    "a: !!omap [x: 1]",
    "a: !!seq x",
    # anchors and aliases
    "a: &x [1]\nb: &x [2]",
    "a: *nowhere",
    "a: &r [*r]",
    "a: &m {k: 1}\nb: {<<: [*m, 5]}",
    "a: {<<: 1}",
    "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    + "\n".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)),
    # keys
    "a: 1\na: 2",
    "apiVersion: v1\nkind: Service\nmetadata: {name: dup}\nmetadata: {name: dup2}\nspec: {}",
    "? [a, b]\n: c",
    "{[1]: 2}",
    # broken syntax
    "key: 'unterminated",
    '"open',
    "[1, 2",
    "{a: 1",
    "]]]",
    "a: b: c",
    "- a\nb: c",
    ":",
    "? ? ?",
    "\t- tab",
    "a:\n\t- b",
    "a: |\n  block\n b: wrong indent",
    "--- |\n  text",
    "...",
    "%YAML 9.9\n--- a",
    "%TAG ! tag:x,2000:\n--- !y 1",
    "%FOO bar\n---",
    # characters
    "a: \x00",
    "a: \x07bell",
    "a: \ufeffbom",
    "\ufeffapiVersion: v1",
    "a: \u2028b",
    # scalars constructors refuse
    "port: 1" + "0" * 5000,
    "a: !!int abc",
    "a: !!float xyz",
    "a: !!timestamp 2001-13-45",
    "a: !!binary '###'",
    "a: !!bool maybe",
    "a: !!null x",
    # nesting
    "a: " + "[" * 1000 + "]" * 1000,
    "a: " + "{b: " * 600 + "1" + "}" * 600,
    "- " * 600 + "x",
    "".join(" " * i + "k:\n" for i in range(300)) + " " * 300 + "v",
    # objects ipvsctl reads, broken
    "apiVersion: v1\nkind: Service\nmetadata: {name: 'a\\nerror: forged'}\nspec: {ports: [{port: 99999}]}",
    "apiVersion: v1\nkind: List\nitems: {a: 1}",
    "apiVersion: v1\nkind: Service",
    "apiVersion: v1\nkind: [Service]",
]
BYTES = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b"\xe2", b"\xef\xbb\xbf"]

FRAGMENT = st.one_of(
    st.sampled_from(FRAGMENTS).map(str.encode),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from(BYTES), st.text(max_size=10)).map(
        lambda t: t[0].encode() + t[1] + t[2].encode("utf-8", "surrogatepass")
    ),
)


def ends_in_directive(fragment: bytes) -> bool:
    """A directive line belongs, by YAML's rules, to the document after it: such garbage may break it."""
    lines = [line for line in re.split(rb"[\r\n]", fragment) if line.strip() and not line.startswith(b"#")]
    return bool(lines) and lines[-1].startswith(b"%")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fragments=st.lists(FRAGMENT, min_size=1, max_size=6), data=st.data())
def test_garbage_between_valid_documents(scratch: Path, fragments: list[bytes], data: st.DataObject) -> None:
    """Tags, aliases, bombs, duplicate keys, broken syntax, NUL, BOM, tabs, invalid UTF-8 and random bytes
    between `---` lines: no exception, nothing executed, problems carry file and line, the valid documents
    around them are still read."""
    pieces = [f + b"\nend: garbage" if ends_in_directive(f) else f for f in fragments]
    for good in (yaml.safe_dump(GOOD_SERVICE).encode(), yaml.safe_dump(GOOD_SLICE).encode()):
        pieces.insert(data.draw(st.integers(0, len(pieces))), good)
    path = write(scratch, b"\n---\n".join(pieces))
    snap = load([str(path)])
    assert not Path(SENTINEL).exists()
    assert_problems_well_formed(snap, path)
    assert_good_service_survives(snap)


# --- the loader's own constructor reads valid YAML exactly as PyYAML's safe loader does --------

JSONISH_KEYS = st.one_of(st.text(max_size=10), st.integers(), st.booleans(), st.none())
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSONISH_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(value=JSONISH, shared=JSONISH, style=st.sampled_from([False, True, None]))
def test_valid_yaml_reads_as_pyyaml_reads_it(value: Any, shared: Any, style: bool | None) -> None:
    """Valid YAML (block and flow style, anchors and aliases for shared values) gives exactly what
    yaml.safe_load gives: the bounded, non-recursive constructor changes no meaning."""
    docs = [value, {"first": shared, "again": shared, "list": [shared, value]}]
    text = yaml.safe_dump_all(docs, default_flow_style=style)
    expected = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    assert [doc for _, doc in documents("x.yaml", text.encode())] == expected  # type: ignore[misc]


def test_merge_keys_read_as_pyyaml_reads_them() -> None:
    """'<<' merges: explicit keys win, the first mapping of a merge list wins, a later '<<' wins."""
    text = (
        "a: &a {x: 1, y: 1}\nb: &b {x: 2, z: 2}\n"
        "c: {<<: *a, y: 3}\nd: {<<: [*a, *b]}\ne: {y: 0, <<: *a, <<: *b}\nf: {x: 5, <<: *a}\n"
    )
    expected = yaml.load(text, Loader=yaml.CSafeLoader)
    assert [doc for _, doc in documents("m.yaml", text.encode())] == [expected]


# --- tables: special addresses, tags, encodings, duplicates ------------------------------------

ADDRESS_FIELDS = [
    ("spec.clusterIP", lambda a: {"spec": {"clusterIP": a, "ports": [{"port": 80}]}}),
    ("spec.clusterIPs[0]", lambda a: {"spec": {"clusterIPs": [a], "ports": [{"port": 80}]}}),
    ("spec.externalIPs[0]", lambda a: {"spec": {"clusterIP": "10.0.0.1", "externalIPs": [a], "ports": [{"port": 80}]}}),
    (
        "status.loadBalancer.ingress[0].ip",
        lambda a: {
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": a}]}},
        },
    ),
]
BAD_ADDRESSES = [
    ("0.0.0.0", "the unspecified address"),
    ("::", "the unspecified address"),
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("255.255.255.255", "the broadcast address"),
    ("169.254.1.1", "an IPv4 link-local address"),
    ("fe80::1", "an IPv6 link-local address"),
    ("1.2.3", "is not an IPv4 or IPv6 address"),
    ("::ffff:10.0.0.1", "an IPv4-mapped IPv6 address: write 10.0.0.1"),
    ("fe80::1%eth0", "has a zone index (%eth0)"),
    ("fd00::1%2", "has a zone index (%2)"),
]


@pytest.mark.parametrize(("field", "make"), ADDRESS_FIELDS, ids=[f[0] for f in ADDRESS_FIELDS])
@pytest.mark.parametrize(("address", "why"), BAD_ADDRESSES, ids=[a[0] for a in BAD_ADDRESSES])
def test_special_addresses_are_refused_where_a_service_listens(
    tmp_path: Path, field: str, make: Callable[[str], dict[str, Any]], address: str, why: str
) -> None:
    """Unspecified, loopback, multicast, broadcast, link-local, malformed, IPv4-mapped and zoned addresses
    are refused for every virtual address field, naming the field; the valid Service is still produced."""
    evil = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "evil", "namespace": "evil"}, **make(address)}
    path = write(tmp_path, yaml.safe_dump(evil) + "---\n" + GOOD_TEXT)
    snap = load([str(path)])
    assert len(snap.problems) == 1, snap.problems
    assert f"document 1: Service evil/evil: {field}: " in str(snap.problems[0])
    assert why in snap.problems[0].message
    assert_good_service_survives(snap)


@pytest.mark.parametrize(
    ("address", "why"),
    [a for a in BAD_ADDRESSES if "link-local" not in a[1]],
    ids=[a[0] for a in BAD_ADDRESSES if "link-local" not in a[1]],
)
def test_special_addresses_cost_only_their_endpoint(tmp_path: Path, address: str, why: str) -> None:
    """A special or malformed endpoint address (EndpointSlice and v1 Endpoints) is reported and dropped;
    the other endpoints of the slice stay."""
    version = "IPv6" if ":" in address else "IPv4"
    other = "2001:db8::5" if version == "IPv6" else "192.0.2.5"
    es = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "e", "namespace": "evil", "labels": {"kubernetes.io/service-name": "evil"}},
        "addressType": version,
        "endpoints": [{"addresses": [address]}, {"addresses": [other]}],
    }
    ep = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "evil2", "namespace": "evil"},
        "subsets": [{"addresses": [{"ip": address}, {"ip": other}]}],
    }
    path = write(tmp_path, yaml.safe_dump_all([es, ep]) + "---\n" + GOOD_TEXT)
    snap = load([str(path)])
    assert [p.field for p in snap.problems] == ["endpoints[0].addresses[0]", "subsets[0].addresses[0].ip"]
    assert all(why in p.message and p.message.endswith("(endpoint ignored)") for p in snap.problems)
    evil = [s for s in snap.slices if s.namespace == "evil"]
    assert [[str(a) for e in s.endpoints for a in e.addresses] for s in evil] == [[other], [other]]
    assert_good_service_survives(snap)


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch {sentinel}']",
        "a: !!python/object/apply:os.system ['touch {sentinel}']",
        "a: !!python/object/new:subprocess.Popen [[touch, {sentinel}]]",
        "a: !!python/name:os.system",
        "a: !!python/module:os",
        "!!python/object:os.stat_result {}",
        "apiVersion: v1\nkind: Service\nmetadata: {name: !custom x}",
        "a: !custom [1]",
        "a: !!set {x, y}",
    ],
)
def test_yaml_tags_are_refused_never_executed(tmp_path: Path, text: str) -> None:
    """Python object tags and custom tags are a problem with file and line; nothing runs; the valid rest is read."""
    sentinel = tmp_path / "sentinel"
    path = write(tmp_path, GOOD_TEXT + "---\n" + text.replace("{sentinel}", str(sentinel)) + "\n")
    snap = load([str(path)])
    assert not sentinel.exists()
    assert len(snap.problems) == 1
    found = re.match(
        r"invalid YAML \(line (\d+), column \d+\): could not determine a constructor", snap.problems[0].message
    )
    first = GOOD_TEXT.count("\n") + 2
    assert found and first <= int(found[1]) <= first + 2, snap.problems[0]
    assert_good_service_survives(snap)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"apiVersion: v1\nkind: \xff\xfeService\n", "document 1: not UTF-8 (line 2, column 7): byte 0xff"),
        (
            b"\xff\xfea\x00:\x00",
            "document 1: not UTF-8 (line 1, column 1): byte 0xff (a UTF-16 file? save it as UTF-8)",
        ),
        (b"a: b\x00c\n", "document 1: invalid YAML (line 1, column 5): control characters are not allowed"),
        (b"a:\n\t- b\n", "document 1: invalid YAML (line 2, column 1): found character that cannot start any token"),
        (b"a: 1\na: 2\n", "document 1: invalid YAML (line 2, column 1): found duplicate key 'a'"),
        (b"]]]\n", "document 1: invalid YAML (line 1, column 1)"),
    ],
    ids=["invalid-utf8", "utf16", "nul", "tab-indent", "duplicate-key", "garbage"],
)
def test_encoding_and_character_problems_cost_one_document(tmp_path: Path, data: bytes, expected: str) -> None:
    """Invalid UTF-8, UTF-16, NUL, tab indentation, duplicate keys, garbage: one problem with its line;
    the valid documents after it are read."""
    path = write(tmp_path, data + b"\n---\n" + GOOD_TEXT.encode())
    snap = load([str(path)])
    assert len(snap.problems) == 1, snap.problems
    assert str(snap.problems[0]).startswith(f"{path}: {expected}")
    assert_good_service_survives(snap)


def test_bom_crlf_and_timestamps_are_read(tmp_path: Path) -> None:
    """A UTF-8 BOM and CRLF line ends are fine; a name that looks like a date stays a string (as in Kubernetes)."""
    dated = "apiVersion: v1\nkind: Service\nmetadata: {name: 2024-01-01}\n"
    dated += "spec: {clusterIP: 10.0.0.9, ports: [{port: 80}]}\n"
    text = "\ufeff" + (GOOD_TEXT + "---\n" + dated).replace("\n", "\r\n")
    snap = load([str(write(tmp_path, text))])
    assert snap.problems == ()
    assert sorted(s.name for s in snap.services) == ["2024-01-01", "web"]
    assert_good_service_survives(snap)


def test_duplicate_names_and_namespaces(tmp_path: Path) -> None:
    """The same Service in two files and twice in one: the first definition wins, each repeat is reported
    with its file and object; Services of the same name in other namespaces are distinct."""
    other = copy.deepcopy(GOOD_SERVICE)
    other["spec"]["clusterIP"] = "198.51.100.8"
    elsewhere = copy.deepcopy(other)
    elsewhere["metadata"]["namespace"] = "good2"
    first = write(tmp_path, GOOD_TEXT, "a.yaml")
    second = write(tmp_path, yaml.safe_dump_all([other, elsewhere, other]), "b.yaml")
    snap = load([str(first), str(second)])
    assert [str(p) for p in snap.problems] == [
        f"{second}: document 1: Service good/web: metadata.name: duplicate Service: the first definition is used",
        f"{second}: document 3: Service good/web: metadata.name: duplicate Service: the first definition is used",
    ]
    assert sorted((s.namespace, str(s.cluster_ips[0])) for s in snap.services) == [
        ("good", "198.51.100.7"),
        ("good2", "198.51.100.8"),
    ]
    assert_good_service_survives(snap)


@pytest.mark.parametrize(
    ("name", "field", "why"),
    [
        ("a\nerror: forged", "metadata.name", r"'a\nerror: forged' is not a DNS label"),
        ("Web", "metadata.name", "'Web' is not a DNS label"),
        ("x" * 64, "metadata.name", "is not a DNS label"),
        ("web\x1b[2J", "metadata.name", r"'web\x1b[2J' is not a DNS label"),
        ("http\n", "spec.ports[0].name", r"'http\n' is not a valid port name"),
    ],
)
def test_names_that_could_forge_output_are_refused_and_quoted(tmp_path: Path, name: str, field: str, why: str) -> None:
    """Names (and port names) must be DNS labels, as in Kubernetes; a bad one is shown quoted with escapes,
    on one line."""
    port_name = name if field == "spec.ports[0].name" else "http"
    evil = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "evil" if field == "spec.ports[0].name" else name},
        "spec": {"ports": [{"name": port_name, "port": 80}]},
    }
    path = write(tmp_path, yaml.safe_dump(evil) + "---\n" + GOOD_TEXT)
    snap = load([str(path)])
    assert len(snap.problems) == 1
    text = str(snap.problems[0])
    assert f": {field}: " in text and why in text and "\n" not in text and "\x1b" not in text
    assert_good_service_survives(snap)


def test_too_many_broken_documents_and_endpoints_are_capped(tmp_path: Path) -> None:
    """10,000 broken documents give at most 101 problems; 10,000 bad endpoints in one slice at most 101."""
    broken = write(tmp_path, "]]]\n---\n" * 10_000 + GOOD_TEXT, "broken.yaml")
    slices = copy.deepcopy(GOOD_SLICE)
    slices["metadata"]["name"] = "many"
    slices["endpoints"] = [{"addresses": ["0.0.0.0"]} for _ in range(10_000)] + GOOD_SLICE["endpoints"]
    endpoints = write(tmp_path, yaml.safe_dump(GOOD_SERVICE) + "---\n" + yaml.safe_dump(slices), "endpoints.yaml")
    started = time.monotonic()
    snap = load([str(broken)])
    assert len(snap.problems) == files.MAX_FILE_ERRORS + 1
    assert "the rest of the file is skipped" in snap.problems[-1].message
    snap = load([str(endpoints)])
    assert len(snap.problems) == files.MAX_OBJECT_PROBLEMS + 1
    assert str(snap.problems[-1]).endswith("endpoints: 9900 more endpoints ignored for the same kind of reasons")
    assert_good_service_survives(snap)
    assert time.monotonic() - started < 20


# --- bombs and huge inputs: bounded time and memory --------------------------------------------


# Time bounds tell bounded work from unbounded, not fast from slow: a bomb read naively takes
# hours (the amplifier below: 2 billion address parses), so 30 s is decisive even on a loaded
# machine, where the 2 s this once allowed failed (2.3-4.2 s with a VM and a profiler alongside).
BOUNDED_SECONDS = 30


def measured(fn: Callable[[], Snapshot]) -> tuple[Snapshot, float, float]:
    """(result, seconds, peak MiB of Python allocations) of one call."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = fn()
        seconds = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1] / (1024 * 1024)
    finally:
        tracemalloc.stop()
    return result, seconds, peak


def laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return (
        "\n".join(lines) + f"\napiVersion: v1\nkind: Service\nmetadata: {{name: b}}\nspec: {{ports: *a{levels - 1}}}\n"
    )


def merge_bomb(levels: int) -> str:
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}"]
    lines += [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10) + "]}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def endpoint_amplifier(aliases: int, addresses: int) -> str:
    """Each of ``aliases`` endpoints is the same one, whose address list is ``addresses`` long:
    reading it naively costs aliases x addresses address parses."""
    addrs = ", ".join(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(addresses))
    return (
        f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: amp, namespace: evil, labels: {{kubernetes.io/service-name: evil}}}}\n"
        f"addressType: IPv4\nspare: &e {{addresses: [{addrs}]}}\nendpoints: [" + ", ".join(["*e"] * aliases) + "]\n"
    )


BOMBS = [
    ("billion-laughs", lambda: laughs(9), "aliases stand for more than 100000 nodes"),
    ("merge-key-bomb", lambda: merge_bomb(9), "aliases stand for more than 100000 nodes"),
    ("endpoint-amplifier", lambda: endpoint_amplifier(100_000, 20_000), "aliases stand for more than 100000 nodes"),
    ("deep-flow-10k", lambda: "a: " + "[" * 10_000 + "]" * 10_000, "nests deeper than 256 levels"),
    ("deep-map-10k", lambda: "a: " + "{b: " * 10_000 + "1" + "}" * 10_000, "nests deeper than 256 levels"),
    ("deep-dash-10k", lambda: "- " * 10_000 + "x", "nests deeper than 256 levels"),
    ("deep-indent-3k", lambda: "".join(" " * i + "k:\n" for i in range(3_000)), "nests deeper than 256 levels"),
    ("deep-flow-1M", lambda: "[" * 1_000_000 + "]" * 1_000_000, "nests deeper than 256 levels"),
    ("huge-int", lambda: "port: " + "9" * 100_000, "an integer of 100000 characters is too large"),
]


@pytest.mark.parametrize(("make", "expected"), [b[1:] for b in BOMBS], ids=[b[0] for b in BOMBS])
def test_bombs_cost_bounded_time_and_memory(tmp_path: Path, make: Callable[[], str], expected: str) -> None:
    """Alias and merge-key bombs, alias amplification of a long list, nesting 10k and 1M levels deep
    (libyaml's own composer would crash the process), a 100,000-digit integer: one problem each, under
    BOUNDED_SECONDS and 32 MiB of Python allocations beyond the file itself; the valid documents around it are read."""
    text = make()
    path = write(tmp_path, GOOD_TEXT + "---\n" + text + "\n---\n" + GOOD_TEXT.replace("web", "web2"))
    snap, seconds, peak = measured(lambda: load([str(path)]))
    assert [p.message for p in snap.problems if expected in p.message] and len(snap.problems) == 1, snap.problems
    assert_problems_well_formed(snap, path)
    assert_good_service_survives(snap)
    assert {"web", "web2"} <= {s.name for s in snap.services}
    assert seconds < BOUNDED_SECONDS, seconds
    assert peak < 32 + 4 * len(text) / (1024 * 1024), peak


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    """A 20 MB file is one problem naming it, read no further than the 16 MiB limit (peak under 40 MiB);
    files beside it are read."""
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.write(GOOD_TEXT.encode() + b"---\n# ")
        handle.write(b"x" * (20 * 1000 * 1000))
    good = write(tmp_path, GOOD_TEXT, "good.yaml")
    snap, seconds, peak = measured(lambda: load([str(big), str(good)]))
    assert [str(p) for p in snap.problems] == [f"{big}: file is larger than 16 MiB"]
    assert_good_service_survives(snap)
    assert peak < 40, peak
    assert seconds < BOUNDED_SECONDS, seconds


def test_a_file_just_under_the_limit_is_read(tmp_path: Path) -> None:
    """A 15 MiB file (one long value in a kind ipvsctl skips) is read whole, with bounded memory:
    under 5 times its size in Python allocations."""
    size = 15 * 1024 * 1024
    path = write(tmp_path, GOOD_TEXT + "---\nkind: ConfigMap\ndata: {blob: " + "y" * size + "}\n")
    snap, seconds, peak = measured(lambda: load([str(path)]))
    assert snap.problems == ()
    assert_good_service_survives(snap)
    assert peak < 5 * size / (1024 * 1024), peak
    assert seconds < BOUNDED_SECONDS, seconds


def test_100k_endpoints_in_one_slice(tmp_path: Path) -> None:
    """One EndpointSlice with 100,000 endpoints is read whole in bounded time and memory (a child process
    measures its peak resident size: under 300 MiB for a 2.7 MB file)."""
    slice_ = copy.deepcopy(GOOD_SLICE)
    lines = "".join(f"- addresses: [10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}]\n" for i in range(100_000))
    text = (
        yaml.safe_dump(GOOD_SERVICE)
        + "---\n"
        + yaml.safe_dump({**slice_, "endpoints": None}).replace("endpoints: null\n", "endpoints:\n" + lines)
    )
    path = write(tmp_path, text)
    script = (
        "import sys, time\n"
        "from ipvsctl.sources.files import load\n"
        "from ipvsctl.translate import translate\n"
        "from ipvsctl.settings import Settings\n"
        "t = time.monotonic()\n"
        "snap = load([sys.argv[1]])\n"
        "desired = translate(snap, Settings(node_name='n'))\n"
        "print(len(snap.problems), sum(len(s.endpoints) for s in snap.slices),\n"
        "      sum(len(d.reals) for d in desired.services.values()), time.monotonic() - t,\n"
        "      [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM:')][0] / 1024)\n"
    )
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so a child started from
    # pytest reports pytest's own peak (300 MiB after the rest of the suite) instead of its own.
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120, cwd=root, check=True
    )
    problems, endpoints, reals, seconds, rss = done.stdout.split()
    assert (int(problems), int(endpoints), int(reals)) == (0, 100_000, 100_000)
    assert float(seconds) < 60, seconds
    assert float(rss) < 300, rss


# --- hostile directories (the agent's manifest source) -----------------------------------------


def test_fifo_and_symlink_loops_in_a_watched_directory(tmp_path: Path) -> None:
    """A FIFO named *.yaml does not block the reader (it is a problem, 'not a regular file'); two symlink
    loops do not make the directory walk explode; the real manifest is read once."""
    top = tmp_path / "m"
    (top / "a").mkdir(parents=True)
    write(top / "a", GOOD_TEXT, "web.yaml")
    (top / "a" / "up").symlink_to("..")
    (top / "a" / "up2").symlink_to("..")
    os.mkfifo(top / "a" / "pipe.yaml")
    world = World()
    source = DirectorySource([str(top)], world, threading.Event())
    finished = threading.Event()
    thread = threading.Thread(target=lambda: (source.scan(), finished.set()), daemon=True)
    thread.start()
    assert finished.wait(10), "the scan did not finish"
    assert [p.message for p in world.problems()] == ["cannot read: not a regular file"]
    assert sorted(source.signatures) == [str(top / "a" / "pipe.yaml"), str(top / "a" / "web.yaml")]
    assert load([str(top / "a" / "pipe.yaml")]).problems[0].message == "no such file or directory"


# --- the CLI on hostile files: exit 3, no traceback, the valid rest applied ---------------------

CLI_FILES = [
    ("python-tag", "!!python/object/apply:os.system ['true']\n"),
    ("alias-bomb", laughs(9)),
    ("deep-nesting", "a: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ("duplicate-key", "apiVersion: v1\nkind: Service\nkind: Service\n"),
    ("huge-int", "port: " + "9" * 5000 + "\n"),
    ("bad-field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 0}]}\n"),
]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MemoryKernel:
    k = MemoryKernel(node_addresses=[ip("192.0.2.10")])
    monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: k)
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(tmp_path / "state"))
    return k


@pytest.mark.parametrize("text", [c[1] for c in CLI_FILES], ids=[c[0] for c in CLI_FILES])
@pytest.mark.parametrize("verb", ["validate", "apply"])
def test_cli_on_a_hostile_file_exits_3_without_traceback(
    kernel: MemoryKernel, tmp_path: Path, verb: str, text: str
) -> None:
    """`ipvsctl validate` and `apply` on a hostile file: exit 3, the problem on one line naming the file,
    no traceback; apply still programs the valid Service beside it."""
    path = write(tmp_path, GOOD_TEXT + "---\n" + text.replace("'true'", "'touch pwned'"))
    result = CliRunner().invoke(cli.app, [verb, "-f", str(path), "--node-name", "node-a"])
    output = result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 3, output
    assert "Traceback" not in output
    assert f"error: {path}: document 3: " in result.stderr
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    if verb == "apply":
        state = kernel.get(GOOD_KEY)
        assert state is not None and {r.server.key for r in state.real_servers} == GOOD_REALS


# --- security properties the host can check (docs/security.md) ---------------------------------

ROOT = Path(__file__).resolve().parents[2]
UNSAFE_YAML = re.compile(
    r"\byaml\s*\.\s*(load|load_all|unsafe_load|unsafe_load_all|full_load|full_load_all|add_constructor"
    r"|add_multi_constructor|Loader|FullLoader|UnsafeLoader|BaseLoader|CLoader|CFullLoader|CUnsafeLoader"
    r"|CBaseLoader)\b"
    r"|^\s*from\s+yaml\b.*\bimport\b.*\b(load|load_all|unsafe_load|full_load|Loader|FullLoader|UnsafeLoader"
    r"|CLoader|CFullLoader|CUnsafeLoader)\b"
)


def test_no_unsafe_yaml_loading_anywhere_in_ipvsctl() -> None:
    """No yaml.load/load_all, no Loader/FullLoader/UnsafeLoader, no constructor added to PyYAML's own
    loaders anywhere in ipvsctl/; the manifest loader is CSafeLoader's with no Python tag and no
    multi-constructor."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "ipvsctl").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if UNSAFE_YAML.search(line)
    ]
    assert offenders == []
    assert issubclass(files._Loader, yaml.CSafeLoader)
    assert not [tag for tag in files._Loader.yaml_constructors if tag and "python" in tag]
    assert files._Loader.yaml_multi_constructors == {}


def test_the_unsafe_yaml_check_catches_what_it_is_for() -> None:
    """The source check above flags each unsafe form (so it can fail), and not the safe ones."""
    for line in (
        "yaml.load(text)",
        "yaml.load_all(text, Loader=yaml.CSafeLoader)",
        "x = yaml.unsafe_load(t)",
        "yaml.full_load(t)",
        "loader = yaml.FullLoader",
        "yaml . Loader",
        "from yaml import load, dump",
        "from yaml import CLoader as L",
        "yaml.add_constructor('!x', f)",
    ):
        assert UNSAFE_YAML.search(line), line
    for line in ("yaml.safe_load(t)", "yaml.safe_load_all(t)", "yaml.safe_dump(x)", "class L(yaml.CSafeLoader):"):
        assert not UNSAFE_YAML.search(line), line


def test_metrics_and_health_listen_on_loopback_by_default() -> None:
    """Without --metrics-address, /metrics, /healthz and /readyz are served on 127.0.0.1:9842 only."""
    from ipvsctl.agent.config import build
    from ipvsctl.agent.http import parse_address

    cfg = build(None, {"manifests": ["/etc/ipvsctl/manifests"], "metrics_address": None})
    host, port = parse_address(cfg.metrics_address)
    assert ipaddress.ip_address(host).is_loopback and port == 9842


def test_ipvsctl_can_send_no_flush_or_zero() -> None:
    """Every operation ipvsctl can send is one of IPVS's add/edit/delete of a service or destination:
    the codec knows no FLUSH (17), ZERO (15) or SET_CONFIG (10) command, so nothing can flush IPVS."""
    from ipvsctl.kernel import codec
    from ipvsctl.model.ipvs import RealServer, VirtualServer
    from ipvsctl.model.ops import AddReal, AddService, DeleteReal, DeleteService, EditReal, EditService

    source = (ROOT / "ipvsctl" / "kernel" / "codec.py").read_text(encoding="utf-8")
    commands = {int(n) for n in re.findall(r"^IPVS_CMD_[A-Z_]+ = (\d+)$", source, re.MULTILINE)}
    assert commands and commands.isdisjoint({10, 15, 17})
    vs, real = VirtualServer(GOOD_KEY), RealServer(RealKey(ip("203.0.113.1"), 8080))
    ops = [AddService(vs), EditService(vs), DeleteService(GOOD_KEY), AddReal(GOOD_KEY, real)]
    ops += [EditReal(GOOD_KEY, real), DeleteReal(GOOD_KEY, real.key)]
    sent = {codec.encode_operation(99, 1, op)[16] for op in ops}  # the generic netlink command byte
    assert sent == {1, 2, 3, 5, 6, 7}


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: whatever mode a file gets, ipvsctl chose it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def modes(directory: Path) -> dict[str, int]:
    from ipvsctl.plan import Ownership
    from ipvsctl.state import Store

    store = Store(directory)
    store.save(Ownership())
    store.append(Ownership(), Ownership())
    with store.locked(1):
        pass
    return {p.name: p.stat().st_mode & 0o777 for p in (directory, *directory.iterdir())}


def test_state_directory_and_journal_are_not_writable_by_others(tmp_path: Path, umask_zero: None) -> None:
    """Under umask 0 the state directory is 0o755 and the journal 0o644: only root may change the
    record of what ipvsctl owns (a writable record could make it delete someone else's virtual server)."""
    found = modes(tmp_path / "state")
    assert (found["state"], found["owned.journal"]) == (0o755, 0o644)


def test_the_record_is_not_writable_by_others_whatever_the_umask(tmp_path: Path, umask_zero: None) -> None:
    """owned.json is 0o644 even under umask 0."""
    assert modes(tmp_path / "state")["owned.json"] == 0o644


def test_the_lock_cannot_be_taken_by_other_users(tmp_path: Path, umask_zero: None) -> None:
    """The lock file is 0o600: only root can open it, so only root can hold it."""
    assert modes(tmp_path / "state")["lock"] == 0o600
