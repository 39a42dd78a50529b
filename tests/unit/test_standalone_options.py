"""ipvsctl.io/forwarding, weights, sorry-server and quorum: what keepalived's virtual_server
blocks say with lb_kind, weight, sorry_server and quorum, on top of kube-proxy's rules."""

from __future__ import annotations

import pytest

from ipvsctl import rotation
from ipvsctl.errors import InputError
from ipvsctl.model.ipvs import Forward, RealKey, RealServer
from ipvsctl.model.k8s import Service
from ipvsctl.options import ServiceOptions, SorryServer, options_of, sorry_server, weights
from ipvsctl.translate import translate
from tests.conftest import ip
from tests.unit.test_translate import NODE, PORT, eps, svc

THREE = eps(
    '[{addresses: ["10.1.0.1"]}, {addresses: ["10.1.0.2"]}, {addresses: ["10.1.0.3"], conditions: {ready: false}}]'
)


def reals(manifests, annotations: str, endpoints: str = THREE, spec: str = f"  clusterIP: 10.96.0.1\n{PORT}"):
    desired = translate(manifests(svc(spec, annotations=annotations) + endpoints), NODE)
    assert desired.problems == ()
    return {str(k): [(str(r.key), r.weight, r.forward.name) for r in d.reals] for k, d in desired.services.items()}


def problem(manifests, annotations: str, spec: str = f"  clusterIP: 10.96.0.1\n{PORT}"):
    text = (
        svc(spec, name="bad", annotations=annotations)
        + THREE
        + "---"
        + svc(f"  clusterIP: 10.96.0.2\n{PORT}", name="good")
    )
    desired = translate(manifests(text), NODE)
    (found,) = desired.problems
    assert desired.held == {("ns", "bad")}
    assert [str(k) for k in desired.services] == ["TCP 10.96.0.2:80"]  # the other Service is unaffected
    return found


def test_no_annotations_is_kube_proxys_choice(manifests) -> None:
    assert reals(manifests, "{}") == {"TCP 10.96.0.1:80": [("10.1.0.1:8080", 1, "MASQ"), ("10.1.0.2:8080", 1, "MASQ")]}


def test_weights_apply_to_the_endpoints_named_and_others_keep_1(manifests) -> None:
    got = reals(manifests, "{ipvsctl.io/scheduler: wrr, ipvsctl.io/weights: '10.1.0.2=5, 10.1.0.3=9'}")
    # 10.1.0.3 is not ready: a weight does not put it in rotation
    assert got == {"TCP 10.96.0.1:80": [("10.1.0.1:8080", 1, "MASQ"), ("10.1.0.2:8080", 5, "MASQ")]}


def test_weight_0_is_quiesced(manifests) -> None:
    got = reals(manifests, "{ipvsctl.io/weights: '10.1.0.1=0'}")
    assert got["TCP 10.96.0.1:80"][0] == ("10.1.0.1:8080", 0, "MASQ")


@pytest.mark.parametrize(("name", "forward"), [("dr", "ROUTE"), ("tunnel", "TUNNEL"), ("MASQ", "MASQ")])
def test_forwarding(manifests, name: str, forward: str) -> None:
    got = reals(manifests, f"{{ipvsctl.io/forwarding: {name}}}")
    port = "8080" if forward == "MASQ" else "80"  # dr and tunnel cannot change the port: the VS's, as ipvsadm sets
    assert got == {"TCP 10.96.0.1:80": [(f"10.1.0.1:{port}", 1, forward), (f"10.1.0.2:{port}", 1, forward)]}


def test_dr_real_servers_of_a_nodeport_take_each_virtual_servers_port(manifests) -> None:
    spec = (
        "  type: NodePort\n  clusterIP: 10.96.0.1\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]"
    )
    got = reals(manifests, "{ipvsctl.io/forwarding: dr}", spec=spec)
    assert got["TCP 10.96.0.1:80"][0] == ("10.1.0.1:80", 1, "ROUTE")
    assert got["TCP 192.0.2.10:30080"][0] == ("10.1.0.1:30080", 1, "ROUTE")


def test_the_sorry_server_answers_only_when_nothing_is_ready(manifests) -> None:
    sorry = "{ipvsctl.io/sorry-server: '192.0.2.99:8081'}"
    assert reals(manifests, sorry)["TCP 10.96.0.1:80"] == [("10.1.0.1:8080", 1, "MASQ"), ("10.1.0.2:8080", 1, "MASQ")]
    none_ready = eps('[{addresses: ["10.1.0.1"], conditions: {ready: false}}]')
    assert reals(manifests, sorry, none_ready) == {"TCP 10.96.0.1:80": [("192.0.2.99:8081", 1, "MASQ")]}
    assert reals(manifests, sorry, "") == {"TCP 10.96.0.1:80": [("192.0.2.99:8081", 1, "MASQ")]}


def test_quorum_is_the_total_weight_in_rotation(manifests) -> None:
    base = "ipvsctl.io/sorry-server: '192.0.2.99:8081', ipvsctl.io/quorum: '{q}'"
    assert len(reals(manifests, "{" + base.format(q=2) + "}")["TCP 10.96.0.1:80"]) == 2  # 1 + 1 ready: met
    assert reals(manifests, "{" + base.format(q=3) + "}")["TCP 10.96.0.1:80"] == [("192.0.2.99:8081", 1, "MASQ")]
    weighted = "{" + base.format(q=3) + ", ipvsctl.io/weights: '10.1.0.1=2'}"
    assert len(reals(manifests, weighted)["TCP 10.96.0.1:80"]) == 2  # 2 + 1: met again


def test_a_dual_stack_service_uses_the_sorry_server_on_its_family_only(manifests) -> None:
    spec = (
        "  clusterIPs: [10.96.0.1, 'fd00::1']\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: PreferDualStack\n" + PORT
    )
    got = reals(manifests, "{ipvsctl.io/sorry-server: '[2001:db8::99]:8081'}", "", spec=spec)
    assert got == {"TCP 10.96.0.1:80": [], "TCP [fd00::1]:80": [("[2001:db8::99]:8081", 1, "MASQ")]}


@pytest.mark.parametrize(
    ("annotations", "field", "message"),
    [
        ("{ipvsctl.io/forwarding: nat}", "forwarding", "unknown forwarding method 'nat'"),
        ("{ipvsctl.io/weights: '10.1.0.1'}", "weights", "is not ADDRESS=WEIGHT"),
        ("{ipvsctl.io/weights: '10.1.0.1=-1'}", "weights", "must be a whole number 0…65535"),
        ("{ipvsctl.io/weights: '10.1.0.1=70000'}", "weights", "must be a whole number 0…65535"),
        ("{ipvsctl.io/weights: 'web-1=2'}", "weights", "'web-1' is not an IP address"),
        ("{ipvsctl.io/weights: '10.1.0.1=2,10.1.0.1=3'}", "weights", "given a weight twice"),
        ("{ipvsctl.io/weights: ' , '}", "weights", "is empty"),
        ("{ipvsctl.io/sorry-server: '192.0.2.99'}", "sorry-server", "is not IP:PORT"),
        ("{ipvsctl.io/sorry-server: '2001:db8::9:80'}", "sorry-server", "is not IP:PORT"),
        ("{ipvsctl.io/sorry-server: '192.0.2.99:0'}", "sorry-server", "must be 1…65535"),
        ("{ipvsctl.io/sorry-server: 'sorry.example:80'}", "sorry-server", "is not an IP address"),
        (
            "{ipvsctl.io/sorry-server: '[2001:db8::9]:80'}",
            "sorry-server",
            "is IPv6; the Service's virtual servers are IPv4",
        ),
        ("{ipvsctl.io/sorry-server: '192.0.2.9:80', ipvsctl.io/quorum: '0'}", "quorum", "must be a whole number 1…"),
        ("{ipvsctl.io/sorry-server: '192.0.2.9:80', ipvsctl.io/quorum: 'two'}", "quorum", "must be a whole number 1…"),
        ("{ipvsctl.io/quorum: '2'}", "quorum", "needs a sorry server"),
    ],
)
def test_bad_options_name_the_annotation_and_hold_that_service_only(
    manifests, annotations: str, field: str, message: str
) -> None:
    found = problem(manifests, annotations)
    assert found.field == f"metadata.annotations.ipvsctl.io/{field}"
    assert message in found.message
    assert "Service ns/bad" in str(found)


def test_parsers_directly() -> None:
    assert sorry_server(" [2001:db8::9]:443 ") == SorryServer(ip("2001:db8::9"), 443)
    assert str(sorry_server("[2001:db8::9]:443")) == "[2001:db8::9]:443"
    assert weights("10.0.0.2=3,10.0.0.1=2") == ((ip("10.0.0.1"), 2), (ip("10.0.0.2"), 3))  # sorted
    assert options_of(Service("ns", "s")).plain
    with pytest.raises(InputError):
        weights("10.0.0.1=٣")  # a digit outside ASCII is not taken


# --- health, as the standalone agent applies it ---------------------------------------------


def servers(*specs: tuple[str, int]) -> tuple[RealServer, ...]:
    return tuple(RealServer(RealKey(ip(a), p)) for a, p in specs)


PAIR = servers(("10.1.0.1", 8080), ("10.1.0.2", 8080))


def down(*addresses: str) -> rotation.Health:
    failed = {ip(a) for a in addresses}
    return lambda address, port: address not in failed


def test_a_failed_check_drains_or_removes() -> None:
    opts = ServiceOptions()
    drained = rotation.place(PAIR, opts, version=4, port=80, health=down("10.1.0.1"))
    assert [(str(r.key), r.weight) for r in drained] == [("10.1.0.1:8080", 0), ("10.1.0.2:8080", 1)]
    removed = rotation.place(PAIR, opts, version=4, port=80, health=down("10.1.0.1"), on_failure=rotation.REMOVE)
    assert [(str(r.key), r.weight) for r in removed] == [("10.1.0.2:8080", 1)]


def test_not_yet_checked_counts_as_healthy() -> None:
    placed = rotation.place(PAIR, ServiceOptions(), version=4, port=80, health=lambda a, p: None)
    assert [r.weight for r in placed] == [1, 1]


def test_all_checks_failed_brings_the_sorry_server_and_one_back_takes_it_away() -> None:
    opts = ServiceOptions(sorry=SorryServer(ip("192.0.2.99"), 8081))
    gone = rotation.place(PAIR, opts, version=4, port=80, health=down("10.1.0.1", "10.1.0.2"))
    assert [(str(r.key), r.weight) for r in gone] == [("192.0.2.99:8081", 1)]
    back = rotation.place(PAIR, opts, version=4, port=80, health=down("10.1.0.1"))
    assert [(str(r.key), r.weight) for r in back] == [("10.1.0.1:8080", 0), ("10.1.0.2:8080", 1)]


def test_dr_merges_two_ports_of_one_address() -> None:
    opts = ServiceOptions(forward=Forward.ROUTE)
    placed = rotation.place(servers(("10.1.0.1", 8080), ("10.1.0.1", 8443)), opts, version=4, port=80)
    assert [(str(r.key), r.forward) for r in placed] == [("10.1.0.1:80", Forward.ROUTE)]
