"""Pure: which real servers a virtual server puts in rotation, and at what weight, once the
Service's options (``options.py``) and the health of its endpoints are taken into account.

``endpoints.select`` gives kube-proxy's choice (ready endpoints, else serving-and-terminating
ones). On top of it, in this order:

1. weights from ``ipvsctl.io/weights`` (1 when not given; 0 is quiesced);
2. the forwarding method; with ``dr`` or ``tunnel`` the real server's port is the virtual
   server's own, as ``ipvsadm`` sets it (the packet is not rewritten, so no other port can work);
3. health: an endpoint whose check fails is set to weight 0 and drained (keepalived's
   ``inhibit_on_failure``) or left out, per the Service's choice; one not yet checked counts as
   healthy, as keepalived's real servers start;
4. quorum: when the weights of the servers still in rotation add up to less than the quorum (1
   unless ``ipvsctl.io/quorum`` says more) and the Service has a sorry server of this family, the
   sorry server alone takes the traffic, at weight 1. The others are drained by the planner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ipvsctl.model.desired import RealServers
from ipvsctl.model.ipvs import Forward, IPAddress, RealKey, RealServer
from ipvsctl.options import ServiceOptions

# The health of an endpoint, by (address, endpoint port): False when its check has failed;
# True or None (not checked yet) keep it in rotation.
Health = Callable[[IPAddress, int], bool | None]
DRAIN = "drain"
REMOVE = "remove"


def place(
    selected: Sequence[RealServer],
    options: ServiceOptions,
    *,
    version: int,
    port: int,
    health: Health | None = None,
    on_failure: str = DRAIN,
) -> Sequence[RealServer]:
    """The real servers of one virtual server of ``version`` listening on ``port``."""
    if options.plain and health is None:
        return selected
    rewrite = options.forward != Forward.MASQ
    placed: dict[RealKey, RealServer] = {}
    live = 0
    for real in selected:
        address, endpoint_port = real.key.address, real.key.port
        weight = options.weight_of(address)
        if health is not None and health(address, endpoint_port) is False:
            if on_failure == REMOVE:
                continue
            weight = 0
        key = RealKey(address, port if rewrite else endpoint_port)
        if key in placed:
            continue  # with dr or tunnel, two ports of one address are one real server
        placed[key] = RealServer(key, weight, options.forward)
        live += weight
    sorry = options.sorry
    if sorry is not None and sorry.address.version == version and live < options.quorum:
        key = RealKey(sorry.address, port if rewrite else sorry.port)
        return RealServers((RealServer(key, 1, options.forward),))
    return RealServers(placed.values())
