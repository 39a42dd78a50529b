"""Pure: a Snapshot of Services and endpoints + Settings → the desired IPVS state.

Follows kube-proxy's IPVS rules (see docs/concepts.md): one virtual server per Service port
and protocol on each ClusterIP, node address (NodePort), load-balancer ingress IP and
external IP; ExternalName and headless Services get none.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from ipvsctl import endpoints, rotation
from ipvsctl.checks.spec import spec_of
from ipvsctl.errors import InputError, Problem
from ipvsctl.model.desired import Desired, DesiredService, Owner
from ipvsctl.model.ipvs import (
    SCHEDULER_FLAGS,
    SCHEDULERS,
    Forward,
    IPAddress,
    RealServer,
    ServiceFlag,
    ServiceKey,
    VirtualServer,
)
from ipvsctl.model.k8s import EndpointSlice, Service, Snapshot
from ipvsctl.options import SORRY_ANNOTATION, options_of
from ipvsctl.settings import Settings

SCHEDULER_ANNOTATION = "ipvsctl.io/scheduler"
SCHEDULER_FLAGS_ANNOTATION = "ipvsctl.io/scheduler-flags"


def scheduler_of(svc: Service, default: str) -> tuple[str, int]:
    """(scheduler, scheduler flag bits) for a Service; InputError names the annotation at fault."""
    field = f"metadata.annotations.{SCHEDULER_ANNOTATION}"
    name = svc.annotation(SCHEDULER_ANNOTATION)
    scheduler = default if name is None else name.strip()
    if scheduler not in SCHEDULERS:
        where = field if name is not None else "--scheduler"
        raise InputError(where, f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    flags = 0
    raw = svc.annotation(SCHEDULER_FLAGS_ANNOTATION)
    if raw:
        for flag in (f.strip() for f in raw.split(",") if f.strip()):
            bit = SCHEDULER_FLAGS.get(flag)
            if bit is None:
                raise InputError(
                    f"metadata.annotations.{SCHEDULER_FLAGS_ANNOTATION}",
                    f"unknown scheduler flag {flag!r}; known: {', '.join(SCHEDULER_FLAGS)}",
                )
            if not flag.startswith(scheduler + "-"):
                raise InputError(
                    f"metadata.annotations.{SCHEDULER_FLAGS_ANNOTATION}",
                    f"flag {flag!r} does not apply to scheduler {scheduler!r}",
                )
            flags |= bit
    return scheduler, flags


def families(svc: Service) -> tuple[int, ...]:
    if svc.cluster_ips:
        return tuple(a.version for a in svc.cluster_ips)
    return svc.ip_families or (4,)


def service_slices(snapshot: Snapshot) -> dict[tuple[str, str], list[EndpointSlice]]:
    """Slices per Service; EndpointSlices win over v1 Endpoints when a Service has both."""
    by_service: dict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
    for es in snapshot.slices:
        by_service[(es.namespace, es.service_name)].append(es)
    for key, found in by_service.items():
        if any(not es.from_endpoints for es in found):
            by_service[key] = [es for es in found if not es.from_endpoints]
    return by_service


def service_entries(
    svc: Service,
    slices: Iterable[EndpointSlice],
    settings: Settings,
    health: rotation.Health | None = None,
    on_failure: str = rotation.DRAIN,
) -> list[DesiredService]:
    """Every virtual server one Service asks for. Raises InputError for what blocks the Service.

    ``health``: the result of the Service's health checks per endpoint (the standalone agent's;
    None: not checked), applied as ``rotation.place`` says with ``on_failure``."""
    if svc.type == "ExternalName" or svc.headless:
        return []
    scheduler, flags = scheduler_of(svc, settings.scheduler)
    options = options_of(svc)
    timeout = 0
    if svc.session_affinity_timeout is not None:
        flags |= ServiceFlag.PERSISTENT
        timeout = svc.session_affinity_timeout
    needs_node = svc.external_traffic_local or svc.internal_traffic_local
    if needs_node and not settings.node_name:
        raise InputError(
            "spec.externalTrafficPolicy" if svc.external_traffic_local else "spec.internalTrafficPolicy",
            "Local traffic policy needs the node's name: pass --node-name",
        )
    internal_node = settings.node_name if svc.internal_traffic_local else None
    external_node = settings.node_name if svc.external_traffic_local else None
    slices = list(slices)
    fams = families(svc)
    if options.sorry is not None and options.sorry.address.version not in fams:
        raise InputError(
            f"metadata.annotations.{SORRY_ANNOTATION}",
            f"sorry server {options.sorry} is IPv{options.sorry.address.version}; "
            f"the Service's virtual servers are IPv{' and IPv'.join(map(str, fams))}",
        )
    out: list[DesiredService] = []
    for port in svc.ports:
        owner = Owner(svc.namespace, svc.name, port.name)
        cands = endpoints.candidates(slices, port)
        # (address, port, node whose endpoints only count or None, bind on the dummy interface)
        targets: list[tuple[IPAddress, int, str | None, bool]] = [
            (ip, port.port, internal_node, True) for ip in svc.cluster_ips
        ]
        if port.node_port and svc.type in ("NodePort", "LoadBalancer"):
            targets += [(ip, port.node_port, external_node, False) for ip in settings.node_ips if ip.version in fams]
        targets += [(ip, port.port, external_node, True) for ip in (*svc.load_balancer_ips, *svc.external_ips)]
        # The virtual servers of one port with the same family and node filter get the same real
        # servers: one tuple of the same objects (a NodePort Service has one per node address).
        # With dr or tunnel forwarding the real servers' port is the virtual server's, so it counts.
        rewrites = options.forward != Forward.MASQ
        selected: dict[tuple[int, str | None, int], Sequence[RealServer]] = {}
        for address, number, local, bind in targets:
            vs = VirtualServer(ServiceKey(port.protocol, address, number), scheduler, flags, timeout)
            chosen = (address.version, local, number if rewrites else 0)
            reals = selected.get(chosen)
            if reals is None:
                reals = selected[chosen] = rotation.place(
                    endpoints.select(cands, address.version, local),
                    options,
                    version=address.version,
                    port=number,
                    health=health,
                    on_failure=on_failure,
                )
            out.append(DesiredService(vs, reals, owner, bind, svc.origin))
    return out


def resolve(claims: dict[ServiceKey, list[DesiredService]]) -> tuple[dict[ServiceKey, DesiredService], list[Problem]]:
    """One owner per virtual server: the first claimant by (namespace, name, port name) wins;
    the others are told, and their other virtual servers are unaffected."""
    wanted: dict[ServiceKey, DesiredService] = {}
    problems: list[Problem] = []
    for key, entries in claims.items():
        winner, *losers = sorted(entries, key=lambda e: e.owner)
        wanted[key] = winner
        problems.extend(clash(key, loser, winner) for loser in losers)
    return wanted, problems


def clash(key: ServiceKey, loser: DesiredService, winner: DesiredService) -> Problem:
    return Problem(loser.origin, "spec", f"virtual server {key} is already used by {winner.owner}; left to it")


def translate(snapshot: Snapshot, settings: Settings) -> Desired:
    """The desired state for every valid Service; problems for the rest (whose VSs are held)."""
    problems = list(snapshot.problems)
    held = {(p.origin.namespace, p.origin.name) for p in problems if p.origin.kind == "Service"}
    incomplete = any(not p.origin.kind for p in problems)
    # A Service one of whose endpoint objects was rejected is kept as the kernel has it: programmed
    # without those endpoints, it would lose backends over a typo.
    present = {(svc.namespace, svc.name): svc for svc in snapshot.services}
    kept: set[tuple[str, str]] = set()
    for p in snapshot.problems:
        ref = (p.origin.namespace, p.holds)
        if p.holds and ref in present and ref not in kept:
            kept.add(ref)
            problems.append(
                Problem(
                    present[ref].origin,
                    "",
                    f"kept as it is in the kernel: its {p.origin.kind} {p.origin.name or '<unnamed>'} "
                    f"({p.origin.file}) was rejected",
                    severity="warning",
                )
            )
    by_service = service_slices(snapshot)
    claims: dict[ServiceKey, list[DesiredService]] = defaultdict(list)
    for svc in sorted(snapshot.services, key=lambda s: (s.namespace, s.name)):
        if (svc.namespace, svc.name) in kept:
            continue
        try:
            entries = service_entries(svc, by_service.get((svc.namespace, svc.name), []), settings)
            spec_of(svc)  # checks are the agent's, but validate, diff and apply catch their mistakes too
        except InputError as err:
            problems.append(Problem(svc.origin, err.field, err.message))
            held.add((svc.namespace, svc.name))
            continue
        for e in entries:
            claims[e.server.key].append(e)
    wanted, clashes = resolve(claims)
    return Desired(wanted, (*problems, *clashes), frozenset(held | kept), incomplete)
