"""One frozen Settings object: everything a run needs to know besides the manifests."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from ipvsctl.model.ipvs import IPAddress

DEFAULT_SYSCTLS: dict[str, str] = {
    "net.ipv4.vs.conntrack": "1",
    "net.ipv4.vs.expire_nodest_conn": "1",
    "net.ipv4.vs.expire_quiescent_template": "1",
    "net.ipv4.ip_forward": "1",
}


@dataclass(frozen=True)
class Settings:
    # like kube-proxy's hostname default, for Local traffic policies
    node_name: str | None = field(default_factory=lambda: socket.gethostname().lower())
    node_ips: tuple[IPAddress, ...] = ()
    scheduler: str = "rr"
    interface: str = "ipvsctl0"
    state_dir: Path = Path("/run/ipvsctl")
    set_sysctls: bool = True
    adopt: bool = False
    drain_timeout: float = 60.0
    lock_timeout: float = 10.0
