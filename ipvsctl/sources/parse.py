"""Raw Kubernetes object dicts → validated frozen values. Pure; shared by every source.

Each parse_* function either returns a value or raises InputError naming the field path.
Per-endpoint mistakes are collected instead, so one bad address costs one endpoint, not a slice.

Values are kept for as long as the agent runs, so what repeats across objects is shared: a
namespace, a port name or a node name is interned (thousands of objects share one), and a
choice among fixed words returns the word of the options, not the parsed copy. Object names
are not: each is used by one or two objects, and interning costs an entry in Python's table.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ipvsctl.errors import InputError
from ipvsctl.model.ipvs import IPAddress, Protocol
from ipvsctl.model.k8s import Endpoint, EndpointPort, EndpointSlice, Service, ServicePort

T = TypeVar("T")

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
DEFAULT_AFFINITY_TIMEOUT = 10800
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_ANNOTATIONS = 256 * 1024  # characters in one object's annotations (Kubernetes: 256 KiB)


class Node:
    """A value inside a raw object together with its field path, for error messages.

    A child keeps its parent and key and spells its path only when asked (an error message):
    a manifest's fields are read by the hundred thousand and almost never fail."""

    __slots__ = ("_key", "_parent", "_path", "value")

    def __init__(self, value: Any, path: str = "", parent: Node | None = None, key: str | int = "") -> None:
        self.value = value
        self._path: str | None = path if parent is None else None
        self._parent = parent
        self._key = key

    @property
    def path(self) -> str:
        if self._path is None:
            parent, key = self._parent, self._key
            assert parent is not None
            above = parent.path
            self._path = f"{above}[{key}]" if isinstance(key, int) else f"{above}.{key}" if above else key
        return self._path

    def child(self, key: str | int) -> Node:
        if isinstance(key, int):
            return Node(self.value[key], parent=self, key=key)
        value = self.value.get(key) if isinstance(self.value, dict) else None
        return Node(value, parent=self, key=key)

    def at(self, dotted: str) -> Node:
        node = self
        for part in dotted.split("."):
            if node.value is not None and not isinstance(node.value, dict):
                raise InputError(node.path, f"must be a mapping, got {kind_of(node.value)}")
            node = node.child(part)
        return node

    @property
    def missing(self) -> bool:
        return self.value is None

    def fail(self, message: str) -> InputError:
        return InputError(self.path or "<document>", message)

    def mapping(self, default: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.value is None and default is not None:
            return default
        if not isinstance(self.value, dict):
            raise self.fail(f"must be a mapping, got {kind_of(self.value)}")
        return self.value

    def items(self) -> list[Node]:
        """A list's elements as Nodes; a missing list is empty."""
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            raise self.fail(f"must be a list, got {kind_of(self.value)}")
        return [self.child(i) for i in range(len(self.value))]

    def string(self, default: str | None = None) -> str:
        if self.value is None and default is not None:
            return default
        if not isinstance(self.value, str):
            raise self.fail(f"must be a string, got {kind_of(self.value)}")
        return self.value

    def integer(self, low: int, high: int, default: int | None = None) -> int:
        if self.value is None and default is not None:
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail(f"must be an integer, got {kind_of(self.value)}")
        if not low <= self.value <= high:
            raise self.fail(f"must be between {low} and {high}, got {self.value}")
        return self.value

    def boolean(self, default: bool) -> bool:
        if self.value is None:
            return default
        if not isinstance(self.value, bool):
            raise self.fail(f"must be true or false, got {kind_of(self.value)}")
        return self.value

    def choice(self, options: tuple[str, ...], default: str) -> str:
        value = self.string(default)
        for option in options:
            if value == option:
                return option  # the shared constant, not this document's copy
        raise self.fail(f"must be one of {', '.join(options)}; got {show(value)}")

    def shared(self, default: str | None = None) -> str:
        """A string that many long-lived values hold (a namespace, a port or node name):
        interned, so that equal ones are one object."""
        return intern(self.string(default))

    def address(self, purpose: str = "service") -> IPAddress:
        text = self.string()
        addr: IPAddress
        try:
            addr = _ipv4(text)
        except (OSError, ValueError, UnicodeError):  # not a dotted quad: IPv6, or not an address
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                raise self.fail(f"{show(text)} is not an IPv4 or IPv6 address") from None
            if addr.version == 6 and addr.scope_id is not None:
                zone = show(addr.scope_id, 20)[1:-1]
                raise self.fail(f"{show(text)} has a zone index (%{zone}): IPVS cannot use it") from None
        problem = unusable_address(addr, purpose)
        if problem:
            raise self.fail(f"{text} is {problem}")
        return addr


def _ipv4(text: str) -> ipaddress.IPv4Address:
    """A dotted-quad IPv4 address, through inet_pton: it takes exactly what ``ipaddress`` takes
    as IPv4 (four decimal numbers up to 255, no leading zeros, nothing around them) at a fifth of
    the cost. Raises OSError (or ValueError, UnicodeError) for anything else."""
    return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))


def _unusable_ipv4(value: int, purpose: str) -> str | None:
    """``unusable_address`` for an IPv4 address given as its integer: unspecified, multicast
    (224/4), loopback (127/8), broadcast, and for a service link-local (169.254/16)."""
    if value == 0:
        return "the unspecified address"
    if value >> 28 == 0xE:
        return "a multicast address"
    if value >> 24 == 127:
        return "a loopback address"
    if value == 0xFFFFFFFF:
        return "the broadcast address"
    if purpose == "service" and value >> 16 == 0xA9FE:
        return "an IPv4 link-local address"
    return None


def intern(text: str) -> str:
    """``text`` as the one shared object of its value (``sys.intern``; a str subclass as is)."""
    return sys.intern(text) if type(text) is str else text


def kind_of(value: Any) -> str:
    """What a YAML value is, in words, for messages ("a string", "a mapping", ...)."""
    if value is None:
        return "nothing"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


def show(value: Any, limit: int = 60) -> str:
    """A value quoted for a message: repr (so control characters show as escapes), cut to ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def display(value: Any) -> str:
    """A namespace or name as it appears in messages: as written if it is a plain printable
    string of sane length, otherwise quoted and cut (a name must not forge a line of output)."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 253:
        return value
    return show(value)


def unusable_address(addr: IPAddress, purpose: str) -> str | None:
    """Why an address cannot be a virtual (or backend) address, or None if it can."""
    if addr.version == 4:
        return _unusable_ipv4(int(addr), purpose)
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.ipv4_mapped is not None:
        return f"an IPv4-mapped IPv6 address: write {addr.ipv4_mapped}"
    if addr.is_link_local and purpose == "service":
        return "an IPv6 link-local address"
    return None


def metadata(doc: Node, subdomain: bool = False) -> tuple[str, str]:
    """(namespace, name) of an object; name is required, namespace defaults to 'default'.

    As in Kubernetes, a namespace is a DNS label (lower-case letters, digits, '-'; at most 63),
    and so is a name, or a DNS subdomain (labels joined by '.'; at most 253) if ``subdomain``."""
    meta = doc.child("metadata")
    meta.mapping()
    name_node = meta.child("name")
    name = name_node.string()
    if not name:
        raise name_node.fail("must not be empty")
    if subdomain:
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise name_node.fail(f"{show(name)} is not a DNS subdomain (lower-case letters, digits, '-', '.')")
    elif len(name) > 63 or not _DNS_LABEL.fullmatch(name):
        raise name_node.fail(f"{show(name)} is not a DNS label (at most 63 lower-case letters, digits, '-')")
    ns_node = meta.child("namespace")
    namespace = ns_node.shared("default") or "default"
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise ns_node.fail(f"{show(namespace)} is not a DNS label (at most 63 lower-case letters, digits, '-')")
    return namespace, name


def protocol(node: Node) -> Protocol:
    return Protocol[node.choice(("TCP", "UDP", "SCTP"), "TCP")]


def each(nodes: list[Node], parse: Callable[[Node], T]) -> tuple[T, ...]:
    return tuple(parse(n) for n in nodes)


def parse_service(doc: Node) -> Service:
    """A v1 Service. Raises InputError naming the first bad field."""
    namespace, name = metadata(doc)
    spec = doc.child("spec")
    spec.mapping()
    stype = spec.child("type").choice(SERVICE_TYPES, "ClusterIP")
    annotations_node = doc.at("metadata.annotations")
    annotations = annotations_node.mapping({})
    size = 0
    for key, value in annotations.items():
        if not isinstance(key, str):
            raise annotations_node.fail(f"keys must be strings, got {kind_of(key)} {show(key, 30)}")
        if not isinstance(value, str):
            path = f"{annotations_node.path}.{display(key)}"
            raise InputError(path, f"must be a string, got {kind_of(value)}")
        size += len(key) + len(value)
    if size > MAX_ANNOTATIONS:
        raise annotations_node.fail(
            f"must hold at most {MAX_ANNOTATIONS // 1024} Ki characters in all (Kubernetes' limit is 256 KiB)"
        )

    cluster_ip = spec.child("clusterIP")
    headless = cluster_ip.value == "None"
    cluster_ips: tuple[IPAddress, ...] = ()
    if stype != "ExternalName" and not headless:
        ips_node = spec.child("clusterIPs")
        if not ips_node.missing and ips_node.items():
            cluster_ips = each(ips_node.items(), Node.address)
            if len(cluster_ips) > 2 or len({a.version for a in cluster_ips}) != len(cluster_ips):
                raise ips_node.fail("must hold at most one IPv4 and one IPv6 address")
        elif not cluster_ip.missing and cluster_ip.value != "":
            cluster_ips = (cluster_ip.address(),)

    families: list[int] = []
    for node in spec.child("ipFamilies").items():
        families.append(4 if node.choice(("IPv4", "IPv6"), "IPv4") == "IPv4" else 6)

    ports: list[ServicePort] = []
    seen: set[tuple[str, Protocol, int]] = set()
    names: set[str] = set()
    port_nodes = spec.child("ports").items()
    for pnode in port_nodes:
        pnode.mapping()
        pname = pnode.child("name").shared("")
        if pname and (len(pname) > 63 or not _PORT_NAME.fullmatch(pname)):
            raise pnode.child("name").fail(f"{show(pname)} is not a valid port name (lower-case letters, digits, '-')")
        if len(port_nodes) > 1 and not pname:
            raise pnode.child("name").fail("is required when a Service has more than one port")
        if pname in names:
            raise pnode.child("name").fail(f"duplicate port name {show(pname)}")
        names.add(pname)
        proto = protocol(pnode.child("protocol"))
        number = pnode.child("port").integer(1, 65535)
        if (pname, proto, number) in seen or any(p == proto and n == number for _, p, n in seen):
            raise pnode.child("port").fail(f"duplicate port {number}/{proto.name}")
        seen.add((pname, proto, number))
        tnode = pnode.child("targetPort")
        target: int | str | None
        if tnode.missing:
            target = None
        elif isinstance(tnode.value, str):
            target = tnode.value
            if not target:
                raise tnode.fail("must not be empty")
        else:
            target = tnode.integer(1, 65535)
        node_port = None
        if stype in ("NodePort", "LoadBalancer"):
            npnode = pnode.child("nodePort")
            node_port = None if npnode.missing else npnode.integer(1, 65535)
        ports.append(ServicePort(pname, proto, number, target, node_port))

    affinity = spec.child("sessionAffinity").choice(("None", "ClientIP"), "None")
    affinity_timeout = None
    if affinity == "ClientIP":
        affinity_timeout = spec.at("sessionAffinityConfig.clientIP.timeoutSeconds").integer(
            1, 86400, DEFAULT_AFFINITY_TIMEOUT
        )

    lb_ips: list[IPAddress] = []
    if stype == "LoadBalancer":
        for ing in doc.at("status.loadBalancer.ingress").items():
            ing.mapping()
            if not ing.child("ip").missing:
                lb_ips.append(ing.child("ip").address())

    return Service(
        namespace=namespace,
        name=name,
        type=stype,
        cluster_ips=cluster_ips,
        headless=headless,
        ip_families=tuple(families),
        ports=tuple(ports),
        external_ips=each(spec.child("externalIPs").items(), Node.address) if stype != "ExternalName" else (),
        load_balancer_ips=tuple(lb_ips),
        session_affinity_timeout=affinity_timeout,
        external_traffic_local=spec.child("externalTrafficPolicy").choice(("Cluster", "Local"), "Cluster") == "Local",
        internal_traffic_local=spec.child("internalTrafficPolicy").choice(("Cluster", "Local"), "Cluster") == "Local",
        annotations=tuple(sorted((str(k), v) for k, v in annotations.items())),
    )


def _endpoint_port(node: Node) -> EndpointPort:
    node.mapping()
    name = node.child("name").shared("")
    return EndpointPort(name, node.child("port").integer(1, 65535), protocol(node.child("protocol")))


def parse_endpoint_slice(doc: Node, problems: list[InputError]) -> EndpointSlice | None:
    """A discovery.k8s.io/v1 EndpointSlice. Bad endpoints are dropped into ``problems``.

    Returns None for slices ipvsctl cannot use (FQDN address type)."""
    namespace, name = metadata(doc, subdomain=True)
    labels = doc.at("metadata.labels").mapping({})
    service = labels.get(SERVICE_NAME_LABEL)
    if not isinstance(service, str) or not service:
        raise (
            doc.at("metadata.labels")
            .child(SERVICE_NAME_LABEL)
            .fail("is required: it names the Service this slice belongs to")
        )
    address_type = doc.child("addressType").choice(("IPv4", "IPv6", "FQDN"), "")
    if address_type == "FQDN":
        return None
    version = 4 if address_type == "IPv4" else 6
    ports = each(doc.child("ports").items(), _endpoint_port)
    endpoints: list[Endpoint] = []
    for enode in doc.child("endpoints").items():
        found = _plain_ipv4_endpoint(enode.value) if version == 4 else None
        if found is not None:
            endpoints.append(found)
            continue
        try:
            enode.mapping()
            addrs = each(enode.child("addresses").items(), lambda n: n.address("endpoint"))
            if not addrs:
                raise enode.child("addresses").fail("must hold at least one address")
            for i, addr in enumerate(addrs):
                if addr.version != version:
                    raise enode.child("addresses").child(i).fail(f"is not an {address_type} address")
            cond = enode.child("conditions")
            cond.mapping({})
            ready = cond.child("ready").boolean(True)
            serving = cond.child("serving").boolean(ready)
            terminating = cond.child("terminating").boolean(False)
            node_name = enode.child("nodeName").shared("") or None
        except InputError as err:
            problems.append(err)
            continue
        endpoints.append(Endpoint(addrs, ready, serving, terminating, node_name))
    return EndpointSlice(namespace, name, service, ports, tuple(endpoints))


def _plain_ipv4_endpoint(raw: Any) -> Endpoint | None:
    """What the general reading below makes of an IPv4 endpoint with nothing wrong in it, read
    straight from the mapping (most of a large manifest is endpoints); None for anything else:
    a wrong type, an address that is not a usable dotted quad, ... which the general reading
    then handles, error messages and all."""
    if type(raw) is not dict:
        return None
    texts = raw.get("addresses")
    if type(texts) is not list or not texts:
        return None
    addresses: list[IPAddress] = []
    for text in texts:
        if type(text) is not str:
            return None
        try:
            addr = _ipv4(text)
        except (OSError, ValueError, UnicodeError):
            return None
        if _unusable_ipv4(int(addr), "endpoint"):
            return None
        addresses.append(addr)
    cond = raw.get("conditions")
    if cond is None:
        cond = {}
    elif type(cond) is not dict:
        return None
    ready = cond.get("ready")
    ready = True if ready is None else ready
    serving = cond.get("serving")
    serving = ready if serving is None else serving
    terminating = cond.get("terminating")
    terminating = False if terminating is None else terminating
    node_name = raw.get("nodeName")
    if type(ready) is not bool or type(serving) is not bool or type(terminating) is not bool:
        return None
    if node_name is not None and type(node_name) is not str:
        return None
    return Endpoint(tuple(addresses), ready, serving, terminating, intern(node_name) if node_name else None)


def parse_endpoints(doc: Node, problems: list[InputError]) -> list[EndpointSlice]:
    """A v1 Endpoints object: each subset becomes one slice-shaped value."""
    namespace, name = metadata(doc)
    slices: list[EndpointSlice] = []
    for i, subset in enumerate(doc.child("subsets").items()):
        subset.mapping()
        ports = each(subset.child("ports").items(), _endpoint_port)
        endpoints: list[Endpoint] = []
        for field_name, ready in (("addresses", True), ("notReadyAddresses", False)):
            for anode in subset.child(field_name).items():
                try:
                    anode.mapping()
                    addr = anode.child("ip").address("endpoint")
                    node_name = anode.child("nodeName").shared("") or None
                except InputError as err:
                    problems.append(err)
                    continue
                endpoints.append(Endpoint((addr,), ready, ready, False, node_name))
        slices.append(EndpointSlice(namespace, f"{name}[subset {i}]", name, ports, tuple(endpoints), True))
    return slices
