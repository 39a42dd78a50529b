"""What keeps the agent small at 10,000 Services, and that it changes nothing it decides:
packed endpoints and real servers equal what they were built from, small indexes behave as
sets, the cached kernel view shares the translation's objects and reads back equal, interned
names stay equal, the directory source still detects changes and keeps last good values."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import threading
from pathlib import Path

import pytest

from ipvsctl.agent.cache import KernelView, advance, compact, expand
from ipvsctl.agent.engine import Engine
from ipvsctl.agent.index import Index
from ipvsctl.agent.world import World
from ipvsctl.errors import Origin
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.desired import DesiredService, Owner, RealServers
from ipvsctl.model.ipvs import (
    Forward,
    Protocol,
    RealKey,
    RealServer,
    RealServerState,
    ServiceKey,
    Stats,
    VirtualServer,
    VirtualServerState,
)
from ipvsctl.model.k8s import Endpoint, EndpointPort, Endpoints, EndpointSlice, pack_address, unpack_address
from ipvsctl.settings import Settings
from ipvsctl.sources.directory import DirectorySource, file_source
from ipvsctl.sources.files import parse_object
from ipvsctl.state import Store
from ipvsctl.translate import service_entries
from tests.conftest import ip
from tests.unit.test_agent_cache import random_ops

KEY = ServiceKey(Protocol.TCP, ip("10.0.0.1"), 80)


# --- Index: one value bare, a few in a tuple, more in a set ---


@pytest.mark.parametrize("seed", range(40))
def test_index_behaves_as_a_dict_of_sets(seed: int) -> None:
    rng = random.Random(seed)
    index: Index[int, object] = Index()
    model: dict[int, set[object]] = {}
    values: list[object] = [*range(20), *((n, "tuple") for n in range(5))]  # tuples are values too
    for _ in range(600):
        key, value = rng.randrange(3), rng.choice(values)
        if rng.random() < 0.55:
            index.add(key, value)
            model.setdefault(key, set()).add(value)
        else:
            index.discard(key, value)
            model.get(key, set()).discard(value)
            if key in model and not model[key]:
                del model[key]
        assert set(index) == set(model) and len(index) == len(model)
        for k in range(3):
            got = index.get(k)
            assert len(got) == len(model.get(k, ())) and set(got) == model.get(k, set())
            assert (k in index) == (k in model)


# --- packed endpoints ---


def endpoint_list() -> list[Endpoint]:
    return [
        Endpoint((ip("10.1.0.1"),)),
        Endpoint((ip("10.1.0.2"),), ready=False, serving=True, terminating=True, node_name="node-a"),
        Endpoint((ip("fd00::1"), ip("fd00::2")), ready=False, serving=False, node_name="node-b"),
        Endpoint((ip("10.1.0.3"),), node_name="node-a"),
        Endpoint((), node_name="node-c"),
        Endpoint((ipaddress.IPv6Address("fe80::1%eth0"), ip("fd00::3"))),  # a zone: input refuses it, a value may
        *(Endpoint((ip(f"10.2.{i // 250}.{i % 250 + 1}"),), node_name=f"n{i}") for i in range(300)),  # varint indexes
    ]


def test_endpoints_read_back_equal() -> None:
    given = endpoint_list()
    packed = Endpoints(given)
    assert list(packed) == given
    assert len(packed) == len(given)
    assert packed[1] == given[1] and packed[-1] == given[-1] and packed[1:3] == tuple(given[1:3])
    assert packed == tuple(given) and packed == Endpoints(given) and hash(packed) == hash(Endpoints(given))
    assert packed != Endpoints(given[:-1])
    # rows: the first address of each endpoint that has one, packed, or as is if it cannot be
    rows = list(packed.rows())
    assert [unpack_address(r[0]) if isinstance(r[0], bytes) else r[0] for r in rows] == [
        e.addresses[0] for e in given if e.addresses
    ]
    assert rows[0][0] == b"\x04" + ip("10.1.0.1").packed
    assert rows[1][1:] == (False, True, True, "node-a")
    assert rows[4][0] is given[5].addresses[0]  # a zone: kept as the object (the empty endpoint has no row)


def test_packed_addresses_keep_their_order_and_family() -> None:
    addresses = [ip("10.0.0.2"), ip("10.0.0.10"), ip("9.255.255.255"), ip("fd00::1"), ip("::1")]
    for address in addresses:
        raw = pack_address(address)
        assert raw is not None and unpack_address(raw) == address and raw[0] == address.version
    v4 = [a for a in addresses if a.version == 4]
    assert sorted(v4, key=pack_address) == sorted(v4)  # type: ignore[arg-type]
    assert pack_address(ipaddress.IPv6Address("fe80::1%eth0")) is None


def test_a_slice_keeps_its_endpoints_packed_and_compares_as_before() -> None:
    es = EndpointSlice("ns", "web-1", "web", (), tuple(endpoint_list()))
    assert isinstance(es.endpoints, Endpoints)
    same = EndpointSlice("ns", "web-1", "web", (), endpoint_list())
    assert es == same and hash(es) == hash(same)
    assert dataclasses.replace(es, name="web-2").endpoints is es.endpoints
    assert es != EndpointSlice("ns", "web-1", "web", (), endpoint_list()[:3])


# --- packed real servers ---


def real_list() -> list[RealServer]:
    return [
        RealServer(RealKey(ip("10.1.0.1"), 8080)),
        RealServer(RealKey(ip("10.1.0.2"), 8080), weight=0),
        RealServer(RealKey(ip("fd00::1"), 443), forward=Forward.ROUTE),
        RealServer(RealKey(ip("10.1.0.3"), 8080), upper_threshold=5, lower_threshold=1),
        RealServer(RealKey(ip("10.1.0.4"), 70000)),  # no port of 16 bits: kept whole
        RealServer(RealKey(ip("10.1.0.5"), 0)),
        RealServer(RealKey(ipaddress.IPv6Address("fe80::1%eth0"), 80)),  # a zone: kept whole
        RealServer(RealKey(ip("fd00::2"), 80)),
    ]


def test_real_servers_read_back_equal_and_compare_with_tuples() -> None:
    given = real_list()
    packed = RealServers(given)
    built = list(packed)
    assert built == given
    assert [hash(r.key) for r in built] == [hash(r.key) for r in given]
    assert [type(r.forward) for r in built] == [type(r.forward) for r in given]
    assert packed == tuple(given) and tuple(given) == packed
    assert packed.same(given) and not packed.same(given[::-1]) and not packed.same(given[:-1])
    assert packed != tuple(given[::-1])
    assert hash(packed) == hash(RealServers(given)) and packed == RealServers(given)
    assert list(reversed(packed)) == given[::-1] and packed[2] == given[2]
    plain = RealServers.plain([(ip("10.1.0.1"), 8080), (ip("10.1.0.4"), 70000)])
    assert plain == RealServers([given[0], given[4]])
    assert not packed.same([dataclasses.replace(given[0], weight=2), *given[1:]])


def test_plain_ipv4_real_servers_read_back_as_built_by_their_constructors() -> None:
    given = [RealServer(RealKey(ip(f"10.1.{i}.{i + 1}"), 8000 + i), 1) for i in range(20)]
    packed = RealServers(given)
    assert list(packed) == given and packed.same(given) and packed == tuple(given)
    assert [r.key.sort_key() for r in packed] == [r.key.sort_key() for r in given]
    assert not packed.same([*given[:-1], dataclasses.replace(given[-1], key=RealKey(ip("10.1.19.21"), 8019))])
    assert not packed.same([*given[:-1], dataclasses.replace(given[-1], key=RealKey(ip("::a01:1314"), 8019))])


def test_a_desired_service_keeps_its_real_servers_packed() -> None:
    entry = DesiredService(VirtualServer(KEY), tuple(real_list()), Owner("ns", "web"), True)
    assert isinstance(entry.reals, RealServers)
    assert entry == DesiredService(VirtualServer(KEY), real_list(), Owner("ns", "web"), True)
    assert entry != DesiredService(VirtualServer(KEY), real_list()[1:], Owner("ns", "web"), True)


def test_the_virtual_servers_of_one_port_share_their_real_servers() -> None:
    svc = parse_object(
        Origin("t", 0),
        "",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop", "namespace": "demo"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.0.0.9",
                "ports": [{"name": "p", "port": 80, "targetPort": 8080, "nodePort": 30080}],
            },
        },
    ).values[0]
    es = EndpointSlice(
        "demo", "shop-1", "shop", (EndpointPort("p", 8080, Protocol.TCP),), (Endpoint((ip("10.1.0.1"),)),)
    )
    entries = service_entries(svc, [es], Settings(node_ips=(ip("192.0.2.10"), ip("192.0.2.11"))))  # type: ignore[arg-type]
    assert len(entries) == 3
    assert entries[0].reals is entries[1].reals is entries[2].reals
    assert list(entries[0].reals) == [RealServer(RealKey(ip("10.1.0.1"), 8080))]


# --- the cached kernel view ---


def states(rng: random.Random, reals: list[RealServer]) -> VirtualServerState:
    out = []
    for real in reals:
        busy = rng.random() < 0.3
        stats = Stats(conns=rng.randrange(5), inpkts=1) if rng.random() < 0.3 else Stats()
        out.append(RealServerState(real, rng.randrange(3) if busy else 0, rng.randrange(3) if busy else 0, 0, stats))
    return VirtualServerState(VirtualServer(KEY, "rr"), tuple(out), Stats(conns=7))


def without_counters(state: VirtualServerState) -> VirtualServerState:
    return VirtualServerState(
        state.server, tuple(dataclasses.replace(r, stats=Stats()) for r in state.real_servers), Stats()
    )


@pytest.mark.parametrize("seed", range(60))
def test_the_cache_reads_back_what_it_kept_but_traffic_counters(seed: int) -> None:
    rng = random.Random(seed)
    pool = [RealServer(RealKey(ip(f"10.1.0.{i}"), 8080), rng.choice([0, 1, 1, 2])) for i in range(1, 9)]
    wanted = rng.sample(pool, rng.randrange(0, 6))
    have = list(wanted) if rng.random() < 0.6 else rng.sample(pool, rng.randrange(0, 6))
    if rng.random() < 0.5:
        have.reverse()  # the kernel lists real servers newest first
    state = states(rng, have)
    like = DesiredService(VirtualServer(KEY, "rr"), tuple(wanted), Owner("ns", "s"), True)
    for kept in (compact(state, like), compact(state), compact(state, None)):
        assert expand(kept) == without_counters(state)


def test_the_cache_holds_the_translations_own_objects() -> None:
    wanted = real_list()[:3]
    like = DesiredService(VirtualServer(KEY, "rr"), tuple(wanted), Owner("ns", "s"), True)
    read = VirtualServerState(
        VirtualServer(KEY, "rr"), tuple(RealServerState(dataclasses.replace(r)) for r in reversed(wanted))
    )
    server, reals, newest_first, conns = compact(read, like)
    assert server is like.server and reals is like.reals and newest_first and conns is None
    busy = dataclasses.replace(read, real_servers=(dataclasses.replace(read.real_servers[0], active_conns=4),
                                                   *read.real_servers[1:]))  # fmt: skip
    kept = compact(busy, like)
    assert kept[1] is like.reals and kept[3] is not None
    assert expand(kept).real_servers[0].active_conns == 4
    view = KernelView(lambda key: like if key == KEY else None)
    view[KEY] = read
    assert view[KEY] == read and view.count(KEY) == 3 and list(view) == [KEY] and len(view) == 1
    del view[KEY]
    assert KEY not in view and view.count(KEY) == 0


@pytest.mark.parametrize("seed", range(40))
def test_advance_on_the_compact_cache_matches_the_kernel(seed: int) -> None:
    rng = random.Random(seed)
    kernel = MemoryKernel()
    cache = KernelView()
    for _ in range(3):
        ops = random_ops(rng, rng.randrange(1, 25))
        results = kernel.execute(ops)
        advance(cache, ops, results)
        want = {s.server.key: s for s in kernel.dump()}
        assert set(cache) == set(want)
        for key, state in want.items():
            assert cache[key].server == state.server
            assert [r.server for r in cache[key].real_servers] == [r.server for r in state.real_servers]


# --- the engine: reads one virtual server at a time, shares the translation ---

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "demo"},
    "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "p", "port": 80, "targetPort": 8080}]},
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {"name": "web-1", "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
    "addressType": "IPv4",
    "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
    "endpoints": [{"addresses": [f"203.0.113.{i}"]} for i in range(1, 4)],
}


def put(world: World, *objects: dict) -> None:
    for i, obj in enumerate(objects):
        parsed = parse_object(Origin("t.yaml", i), "", obj)
        assert parsed.origin is not None
        world.put(("t", parsed.origin.kind, parsed.origin.namespace, parsed.origin.name), parsed.values)


def test_a_full_resync_reads_virtual_servers_one_at_a_time_and_shares_the_translation(tmp_path: Path) -> None:
    kernel = MemoryKernel(node_addresses=[ip("192.0.2.10")])
    world = World()
    put(world, SERVICE, SLICE)
    Engine(kernel, Store(tmp_path / "state"), Settings(), world).resync(world.take().services, retranslate=True)
    dumps: list[bool] = []
    dump = kernel.dump

    def counting(reals: bool = True) -> list[VirtualServerState]:
        dumps.append(reals)
        return dump(reals)

    kernel.dump = counting  # type: ignore[method-assign]
    engine = Engine(kernel, Store(tmp_path / "state"), Settings(), world)  # a restart: the record from disk
    on_disk = next(iter(engine.ledger.services))
    report = engine.resync(world.service_refs(), retranslate=True)
    assert report.ok and not report.ops
    assert dumps == [False]  # one dump of virtual servers alone; real servers were read per virtual server
    key = ServiceKey(Protocol.TCP, ip("10.0.0.1"), 80)
    winner = engine._winner(key)
    assert winner is not None
    assert engine.observed._entries[key][1] is winner.reals
    assert engine.observed[key] == kernel.get(key)
    kept = next(iter(engine.ledger.services))
    assert kept == on_disk and kept is winner.server.key  # the record holds the translation's key
    assert engine.ledger.services[kept] is winner.owner


# --- sources: interning, change detection, last good values ---


def test_names_repeated_across_objects_are_one_object() -> None:
    a = parse_object(Origin("a.yaml", 0), "", SERVICE).values[0]
    b = parse_object(Origin("b.yaml", 0), "", dict(SERVICE, metadata={"name": "other", "namespace": "demo"})).values[0]
    es = parse_object(Origin("c.yaml", 0), "", SLICE).values[0]
    assert a.namespace is b.namespace is es.namespace  # type: ignore[union-attr]
    assert a.ports[0].name is b.ports[0].name is es.ports[0].name  # type: ignore[union-attr]
    assert a.origin.kind is b.origin.kind and a.origin.namespace is a.namespace  # type: ignore[union-attr]
    assert a.type == "ClusterIP"  # type: ignore[union-attr]


WEB = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.0.0.1, ports: [{name: p, port: 80, targetPort: 8080}]}
"""


def test_the_directory_source_detects_changes_and_keeps_the_last_good_object(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(WEB)
    world = World()
    source = DirectorySource([str(tmp_path)], world, threading.Event())
    assert source.scan() == 1
    assert source.scan() == 0  # unchanged: not read again
    key = (file_source(str(path)), "Service", "demo", "web")
    first = world.values(key)
    assert first and first[0].ports[0].port == 80  # type: ignore[union-attr]
    path.write_text(WEB.replace("port: 80,", "port: 81,"))
    assert source.scan() == 1
    assert world.values(key)[0].ports[0].port == 81  # type: ignore[union-attr]
    path.write_text(WEB.replace("port: 80,", "port: 0,"))  # this object is rejected; the file reads
    assert source.scan() == 1
    assert world.values(key)[0].ports[0].port == 81  # type: ignore[union-attr]
    assert any("spec.ports[0].port" in str(p) for p in world.problems())
    path.write_text("kind: [")  # the whole file unreadable: its last good content stays
    assert source.scan() == 1
    assert world.values(key)[0].ports[0].port == 81  # type: ignore[union-attr]
    assert not world.incomplete
    path.unlink()
    source.scan()
    assert world.values(key) == ()
