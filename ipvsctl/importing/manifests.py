"""Pure: ``Imported`` virtual servers → Service and EndpointSlice manifests, as documents and YAML.

One v1 Service per virtual server, named for its protocol, address and port
(``tcp-198-51-100-20-80``, ``udp-2001-db8--53-53``), with the address as ``clusterIP``, one port
named for the protocol, and the ``ipvsctl.io/`` annotations that say the rest. Its real servers
go into discovery.k8s.io/v1 EndpointSlices: one per real-server port (so real servers on
different ports stay apart under the same port name), at most 100 endpoints each, all ready.

Before a virtual server is written, its documents are read back through ipvsctl's own parser
and annotation checks (``check``); what they refuse becomes a note, never a manifest that
``ipvsctl apply`` would reject.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from ipvsctl.checks.spec import PREFIX as CHECK_PREFIX
from ipvsctl.checks.spec import spec_of
from ipvsctl.errors import InputError
from ipvsctl.importing.model import Imported, Note, Real
from ipvsctl.model.ipvs import Forward
from ipvsctl.options import FORWARDING_ANNOTATION, QUORUM_ANNOTATION, SORRY_ANNOTATION, WEIGHTS_ANNOTATION, options_of
from ipvsctl.sources.parse import SERVICE_NAME_LABEL, Node, parse_endpoint_slice, parse_service, unusable_address
from ipvsctl.translate import SCHEDULER_ANNOTATION, SCHEDULER_FLAGS_ANNOTATION, scheduler_of

DEFAULT_NAMESPACE = "imported"
SLICE_SIZE = 100  # endpoints per EndpointSlice, as Kubernetes' controller makes them
FORWARDING_NAMES = {Forward.MASQ: "masq", Forward.ROUTE: "dr", Forward.TUNNEL: "tunnel"}


def service_name(server: Imported) -> str:
    """``tcp-198-51-100-20-80``: a DNS label (IPv6 colons become dashes, so ``::`` is ``--``)."""
    address = str(server.address).replace(".", "-").replace(":", "-")
    return f"{server.protocol.name.lower()}-{address}-{server.port}"


def _endpoint(address: object, port: int) -> str:
    text = str(address)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def annotations(server: Imported) -> dict[str, str]:
    out = {SCHEDULER_ANNOTATION: server.scheduler}
    if server.scheduler_flags:
        out[SCHEDULER_FLAGS_ANNOTATION] = ",".join(server.scheduler_flags)
    if server.forward != Forward.MASQ:
        out[FORWARDING_ANNOTATION] = FORWARDING_NAMES[server.forward]
    weighted = sorted(
        {(r.address.version, int(r.address), r.weight, str(r.address)) for r in server.reals if r.weight != 1}
    )
    if weighted:
        out[WEIGHTS_ANNOTATION] = ", ".join(f"{text}={weight}" for _, _, weight, text in weighted)
    if server.sorry is not None:
        out[SORRY_ANNOTATION] = _endpoint(server.sorry.address, server.sorry.port)
        if server.quorum is not None:
            out[QUORUM_ANNOTATION] = str(server.quorum)
    for knob, value in server.check:
        out[f"{CHECK_PREFIX}-{knob}" if knob else CHECK_PREFIX] = value
    return out


def documents(server: Imported, namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
    """The Service and its EndpointSlices."""
    name = service_name(server)
    port_name = server.protocol.name.lower()
    ports = sorted({r.port for r in server.reals})
    port: dict[str, Any] = {"name": port_name, "protocol": server.protocol.name, "port": server.port}
    if len(ports) == 1:
        port["targetPort"] = ports[0]
    spec: dict[str, Any] = {"clusterIP": str(server.address), "ports": [port]}
    if server.persistence is not None:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": server.persistence}}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations(server)},
        "spec": spec,
    }
    out: list[dict[str, Any]] = [service]
    family = "IPv4" if server.address.version == 4 else "IPv6"
    for number in ports:
        reals = [r for r in server.reals if r.port == number]
        for start in range(0, len(reals), SLICE_SIZE):
            out.append(_slice(f"{name}-{len(out)}", namespace, name, family, port_name, server, number,
                              reals[start : start + SLICE_SIZE]))  # fmt: skip
    return out


def _slice(
    name: str, namespace: str, service: str, family: str, port_name: str, server: Imported, port: int, reals: list[Real]
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": family,
        "ports": [{"name": port_name, "protocol": server.protocol.name, "port": port}],
        "endpoints": [{"addresses": [str(r.address)], "conditions": {"ready": True}} for r in reals],
    }


def check(server: Imported, docs: Sequence[dict[str, Any]]) -> Note | None:
    """None if ipvsctl takes these documents as they are; otherwise why not, as a note."""
    try:
        svc = parse_service(Node(docs[0]))
        scheduler_of(svc, "rr")
        options_of(svc)
        spec_of(svc)
        for doc in docs[1:]:
            problems: list[InputError] = []
            parse_endpoint_slice(Node(doc), problems)
            if problems:
                raise problems[0]
        for real in server.reals:
            problem = unusable_address(real.address, "endpoint")
            if problem:
                raise InputError("endpoints", f"{real.address} is {problem}")
    except InputError as err:
        return Note(server.where, f"cannot be expressed: {err.field}: {err.message}; not imported")
    return None


def header(server: Imported) -> str:
    return f"# {service_name(server)}: imported by ipvsctl from {server.where}\n"


# libyaml's emitter when PyYAML has it (about 10x faster), the pure-Python one otherwise: same output.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def to_yaml(docs: Sequence[dict[str, Any]]) -> str:
    return yaml.dump_all(
        docs, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000
    )


def render(servers: Sequence[Imported], namespace: str = DEFAULT_NAMESPACE) -> tuple[dict[str, str], list[Note]]:
    """File name → YAML text for each virtual server ipvsctl can take, and notes for the rest."""
    files: dict[str, str] = {}
    notes: list[Note] = []
    for server in servers:
        docs = documents(server, namespace)
        refused = check(server, docs)
        if refused is not None:
            notes.append(refused)
            continue
        files[f"{service_name(server)}.yaml"] = header(server) + to_yaml(docs)
    return files, notes
