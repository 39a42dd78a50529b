"""Translation table: one row per rule in GUIDE.md 'How a Service becomes virtual servers'."""

from __future__ import annotations

import pytest

from ipvsctl.model.ipvs import Protocol, ServiceFlag
from ipvsctl.settings import Settings
from ipvsctl.translate import translate
from tests.conftest import ip

NODE = Settings(node_name="node-a", node_ips=(ip("192.0.2.10"), ip("2001:db8:ff::10")))


def svc(spec: str, name: str = "s", annotations: str = "{}", status: str = "") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: ns, annotations: {annotations}}}
spec:
{spec}
{status}
"""


def eps(
    endpoints: str,
    ports: str = "[{name: http, port: 8080}]",
    family: str = "IPv4",
    name: str = "s",
    slice_name: str = "s-1",
) -> str:
    return f"""
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {slice_name}, namespace: ns, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: {family}
ports: {ports}
endpoints: {endpoints}
"""


PORT = "  ports: [{name: http, port: 80, targetPort: 8080}]"
TWO_READY = eps('[{addresses: ["10.1.0.1"]}, {addresses: ["10.1.0.2"]}]')

# (id, manifest, expected {"PROTO addr:port": [real "addr:port*weight", ...]}, expected bound addresses)
CASES = [
    (
        "clusterip",
        svc(f"  clusterIP: 10.96.0.1\n{PORT}") + TWO_READY,
        {"TCP 10.96.0.1:80": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "nodeport-on-each-node-ip-of-the-family",
        svc("  type: NodePort\n  clusterIP: 10.96.0.1\n  ports: [{name: http, port: 80, nodePort: 30080}]") + TWO_READY,
        {
            "TCP 10.96.0.1:80": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"],
            "TCP 192.0.2.10:30080": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"],
        },
        {"10.96.0.1"},
    ),
    (
        "loadbalancer-ingress",
        svc(
            "  type: LoadBalancer\n  clusterIP: 10.96.0.1\n  ports: [{name: http, port: 80, nodePort: 30080}]",
            status="status: {loadBalancer: {ingress: [{ip: 203.0.113.5}, {hostname: lb.example}]}}",
        )
        + TWO_READY,
        {
            "TCP 10.96.0.1:80": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"],
            "TCP 192.0.2.10:30080": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"],
            "TCP 203.0.113.5:80": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"],
        },
        {"10.96.0.1", "203.0.113.5"},
    ),
    (
        "external-ips",
        svc(f"  clusterIP: 10.96.0.1\n  externalIPs: [203.0.113.7]\n{PORT}") + TWO_READY,
        {
            "TCP 10.96.0.1:80": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"],
            "TCP 203.0.113.7:80": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"],
        },
        {"10.96.0.1", "203.0.113.7"},
    ),
    ("externalname-makes-nothing", svc("  type: ExternalName\n  externalName: a.example"), {}, set()),
    ("headless-makes-nothing", svc(f"  clusterIP: None\n{PORT}") + TWO_READY, {}, set()),
    (
        "udp-and-sctp",
        svc(
            "  clusterIP: 10.96.0.1\n  ports: [{name: d, protocol: UDP, port: 53}, "
            "{name: s, protocol: SCTP, port: 3868}]"
        )
        + eps(
            '[{addresses: ["10.1.0.1"]}]',
            ports="[{name: d, protocol: UDP, port: 5353}, {name: s, protocol: SCTP, port: 3868}]",
        ),
        {"UDP 10.96.0.1:53": ["10.1.0.1:5353*1"], "SCTP 10.96.0.1:3868": ["10.1.0.1:3868*1"]},
        {"10.96.0.1"},
    ),
    (
        "dual-stack-reals-by-family",
        svc(f"  clusterIPs: [10.96.0.1, 'fd00::1']\n{PORT}")
        + eps('[{addresses: ["10.1.0.1"]}]')
        + eps('[{addresses: ["fd00:1::1"]}]', family="IPv6", slice_name="s-2"),
        {"TCP 10.96.0.1:80": ["10.1.0.1:8080*1"], "TCP [fd00::1]:80": ["[fd00:1::1]:8080*1"]},
        {"10.96.0.1", "fd00::1"},
    ),
    (
        "named-target-port",
        svc("  clusterIP: 10.96.0.1\n  ports: [{name: web, port: 80, targetPort: http}]")
        + eps('[{addresses: ["10.1.0.1"]}]', ports="[{name: http, port: 9090}]"),
        {"TCP 10.96.0.1:80": ["10.1.0.1:9090*1"]},
        {"10.96.0.1"},
    ),
    (
        "not-ready-left-out",
        svc(f"  clusterIP: 10.96.0.1\n{PORT}")
        + eps('[{addresses: ["10.1.0.1"]}, {addresses: ["10.1.0.2"], conditions: {ready: false}}]'),
        {"TCP 10.96.0.1:80": ["10.1.0.1:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "terminating-left-out-while-others-ready",
        svc(f"  clusterIP: 10.96.0.1\n{PORT}")
        + eps(
            '[{addresses: ["10.1.0.1"]}, {addresses: ["10.1.0.2"], '
            "conditions: {ready: false, serving: true, terminating: true}}]"
        ),
        {"TCP 10.96.0.1:80": ["10.1.0.1:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "terminating-serving-used-when-none-ready",
        svc(f"  clusterIP: 10.96.0.1\n{PORT}")
        + eps(
            '[{addresses: ["10.1.0.1"], conditions: {ready: false}}, {addresses: ["10.1.0.2"], '
            'conditions: {ready: false, serving: true, terminating: true}}, {addresses: ["10.1.0.3"], '
            "conditions: {ready: false, serving: false, terminating: true}}]"
        ),
        {"TCP 10.96.0.1:80": ["10.1.0.2:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "external-traffic-local",
        svc(
            "  type: NodePort\n  clusterIP: 10.96.0.1\n  externalTrafficPolicy: Local\n"
            "  ports: [{name: http, port: 80, nodePort: 30080}]"
        )
        + eps('[{addresses: ["10.1.0.1"], nodeName: node-a}, {addresses: ["10.1.0.2"], nodeName: node-b}]'),
        {"TCP 10.96.0.1:80": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"], "TCP 192.0.2.10:30080": ["10.1.0.1:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "internal-traffic-local",
        svc(f"  clusterIP: 10.96.0.1\n  internalTrafficPolicy: Local\n{PORT}")
        + eps('[{addresses: ["10.1.0.1"], nodeName: node-a}, {addresses: ["10.1.0.2"], nodeName: node-b}]'),
        {"TCP 10.96.0.1:80": ["10.1.0.1:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "slices-combine",
        svc(f"  clusterIP: 10.96.0.1\n{PORT}")
        + eps('[{addresses: ["10.1.0.1"]}]')
        + eps('[{addresses: ["10.1.0.2"]}]', slice_name="s-2"),
        {"TCP 10.96.0.1:80": ["10.1.0.1:8080*1", "10.1.0.2:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "v1-endpoints",
        svc(f"  clusterIP: 10.96.0.1\n{PORT}")
        + """
---
apiVersion: v1
kind: Endpoints
metadata: {name: s, namespace: ns}
subsets:
  - addresses: [{ip: 10.1.0.1}]
    notReadyAddresses: [{ip: 10.1.0.2}]
    ports: [{name: http, port: 8080}]
""",
        {"TCP 10.96.0.1:80": ["10.1.0.1:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "slices-win-over-endpoints",
        svc(f"  clusterIP: 10.96.0.1\n{PORT}")
        + eps('[{addresses: ["10.1.0.9"]}]')
        + """
---
apiVersion: v1
kind: Endpoints
metadata: {name: s, namespace: ns}
subsets: [{addresses: [{ip: 10.1.0.1}], ports: [{name: http, port: 8080}]}]
""",
        {"TCP 10.96.0.1:80": ["10.1.0.9:8080*1"]},
        {"10.96.0.1"},
    ),
    (
        "no-endpoints-still-a-virtual-server",
        svc(f"  clusterIP: 10.96.0.1\n{PORT}"),
        {"TCP 10.96.0.1:80": []},
        {"10.96.0.1"},
    ),
]


@pytest.mark.parametrize(("manifest", "expected", "bound"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_translation_table(manifests, manifest: str, expected: dict[str, list[str]], bound: set[str]) -> None:
    """Each Service shape becomes exactly the virtual servers and real servers kube-proxy would make."""
    desired = translate(manifests(manifest), NODE)
    assert desired.problems == ()
    got = {str(k): [f"{r.key}*{r.weight}" for r in d.reals] for k, d in desired.services.items()}
    assert got == expected
    assert {str(k.address) for k, d in desired.services.items() if d.bind} == bound


def test_session_affinity_is_persistence(manifests) -> None:
    """sessionAffinity: ClientIP sets the persistent flag with the configured (or 10800 s) timeout."""
    desired = translate(
        manifests(
            svc(f"  clusterIP: 10.96.0.1\n  sessionAffinity: ClientIP\n{PORT}")
            + svc(
                f"  clusterIP: 10.96.0.2\n  sessionAffinity: ClientIP\n"
                f"  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 600}}}}\n{PORT}",
                name="t",
            ).replace("apiVersion", "---\napiVersion", 1)
        ),
        NODE,
    )
    servers = {str(k.address): d.server for k, d in desired.services.items()}
    assert servers["10.96.0.1"].flags & ServiceFlag.PERSISTENT and servers["10.96.0.1"].timeout == 10800
    assert servers["10.96.0.2"].flags & ServiceFlag.PERSISTENT and servers["10.96.0.2"].timeout == 600


def test_scheduler_annotation_and_flags(manifests) -> None:
    """The ipvsctl.io/scheduler annotation picks the scheduler; scheduler-flags set sh-port/sh-fallback bits."""
    desired = translate(
        manifests(
            svc(
                f"  clusterIP: 10.96.0.1\n{PORT}",
                annotations=("{ipvsctl.io/scheduler: sh, ipvsctl.io/scheduler-flags: 'sh-port,sh-fallback'}"),
            )
        ),
        NODE,
    )
    (d,) = desired.services.values()
    assert d.server.scheduler == "sh"
    assert d.server.flags == ServiceFlag.SCHED1 | ServiceFlag.SCHED2
    assert d.server.key.protocol == Protocol.TCP


def test_default_scheduler_from_settings(manifests) -> None:
    """Without the annotation, the --scheduler default applies."""
    desired = translate(manifests(svc(f"  clusterIP: 10.96.0.1\n{PORT}")), Settings(scheduler="wlc"))
    assert [d.server.scheduler for d in desired.services.values()] == ["wlc"]


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ("{ipvsctl.io/scheduler: roundrobin}", "unknown scheduler 'roundrobin'"),
        ("{ipvsctl.io/scheduler: rr, ipvsctl.io/scheduler-flags: sh-port}", "does not apply to scheduler 'rr'"),
        ("{ipvsctl.io/scheduler: sh, ipvsctl.io/scheduler-flags: sh-everything}", "unknown scheduler flag"),
    ],
    ids=["unknown-scheduler", "flag-for-other-scheduler", "unknown-flag"],
)
def test_bad_scheduler_is_an_error_for_that_service_only(manifests, annotations: str, message: str) -> None:
    """A bad scheduler never falls back silently: that Service is rejected and held, others still translate."""
    text = (
        svc(f"  clusterIP: 10.96.0.1\n{PORT}", name="bad", annotations=annotations)
        + "---"
        + svc(f"  clusterIP: 10.96.0.2\n{PORT}", name="good")
    )
    desired = translate(manifests(text), NODE)
    (problem,) = desired.problems
    assert message in problem.message
    assert problem.field.startswith("metadata.annotations.ipvsctl.io/scheduler")
    assert "Service ns/bad" in str(problem)
    assert desired.held == {("ns", "bad")}
    assert [str(k) for k in desired.services] == ["TCP 10.96.0.2:80"]


def test_two_services_wanting_one_virtual_server(manifests) -> None:
    """The second Service that claims the same VIP:port is reported; the first keeps it."""
    text = svc(f"  clusterIP: 10.96.0.1\n{PORT}", name="a") + "---" + svc(f"  clusterIP: 10.96.0.1\n{PORT}", name="b")
    desired = translate(manifests(text), NODE)
    assert [d.owner.name for d in desired.services.values()] == ["a"]
    assert "already used by ns/a:http" in desired.problems[0].message
