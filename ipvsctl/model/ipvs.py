"""IPVS values in kernel terms: virtual servers, real servers, their typed keys.

These are plain frozen values. Nothing here talks to the kernel; the codec in
``ipvsctl.kernel.codec`` turns them into netlink messages and back.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Protocol(enum.IntEnum):
    """IP protocol numbers IPVS balances."""

    TCP = 6
    UDP = 17
    SCTP = 132


class Forward(enum.IntEnum):
    """Packet-forwarding method of a real server (``IP_VS_CONN_F_FWD_MASK`` values)."""

    MASQ = 0
    LOCAL = 1
    TUNNEL = 2
    ROUTE = 3
    BYPASS = 4


class ServiceFlag(enum.IntFlag):
    """Virtual-server flags (``IP_VS_SVC_F_*`` in include/uapi/linux/ip_vs.h)."""

    PERSISTENT = 0x0001
    HASHED = 0x0002
    ONEPACKET = 0x0004
    SCHED1 = 0x0008
    SCHED2 = 0x0010
    SCHED3 = 0x0020


# Flags a user may set; HASHED is kernel bookkeeping and is ignored when comparing.
USER_FLAGS = (
    ServiceFlag.PERSISTENT | ServiceFlag.ONEPACKET | ServiceFlag.SCHED1 | ServiceFlag.SCHED2 | ServiceFlag.SCHED3
)

SCHEDULERS: tuple[str, ...] = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "sed",
    "nq",
    "mh",
    "fo",
    "ovf",
    "twos",
)

# Scheduler flag names as ipvsadm spells them; sh and mh share bit positions.
SCHEDULER_FLAGS: dict[str, ServiceFlag] = {
    "sh-fallback": ServiceFlag.SCHED1,
    "sh-port": ServiceFlag.SCHED2,
    "mh-fallback": ServiceFlag.SCHED1,
    "mh-port": ServiceFlag.SCHED2,
}


def address_family(address: IPAddress) -> int:
    """Return AF_INET or AF_INET6 for an address."""
    return 2 if address.version == 4 else 10


def address_sort_key(address: IPAddress) -> tuple[int, int]:
    """A total order over mixed IPv4/IPv6 addresses (IPv4 first)."""
    return (address.version, int(address))


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """Identity of a virtual server: (protocol, address, port), or a firewall mark.

    A firewall-mark service has ``fwmark`` set, ``protocol`` None and no address/port
    beyond the family (``address`` is then the family's zero address).
    """

    protocol: Protocol | None
    address: IPAddress
    port: int
    fwmark: int = 0
    # Keys are hashed on every dict lookup of a sync, and ipaddress hashes through hex(): keep it.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((int(self.address), self.port, self.protocol, self.fwmark)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def family(self) -> int:
        return address_family(self.address)

    def sort_key(self) -> tuple[int, int, int, int, int]:
        return (self.fwmark, *address_sort_key(self.address), self.port, int(self.protocol or 0))

    def __str__(self) -> str:
        if self.fwmark:
            return f"FWM {self.fwmark} IPv{self.address.version}"
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        proto = self.protocol.name if self.protocol else "?"
        return f"{proto} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RealKey:
    """Identity of a real server within its virtual server."""

    address: IPAddress
    port: int

    def __hash__(self) -> int:
        return hash((int(self.address), self.port))

    def sort_key(self) -> tuple[int, int, int]:
        return (*address_sort_key(self.address), self.port)

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class VirtualServer:
    """The configurable attributes of a virtual server (what ``ipvsadm -A/-E`` sets)."""

    key: ServiceKey
    scheduler: str = "rr"
    flags: int = 0
    timeout: int = 0
    netmask: int = 0  # 0 means "the family's full mask" (0xffffffff for v4, 128 for v6)

    def same_config(self, other: VirtualServer) -> bool:
        """True when an edit would change nothing (HASHED is the kernel's, not ours)."""
        return (
            self.key == other.key
            and self.scheduler == other.scheduler
            and (self.flags & USER_FLAGS) == (other.flags & USER_FLAGS)
            and self.timeout == other.timeout
            and self.effective_netmask == other.effective_netmask
        )

    @property
    def effective_netmask(self) -> int:
        if self.netmask:
            return self.netmask
        return 0xFFFFFFFF if self.key.address.version == 4 else 128


@dataclass(frozen=True, slots=True)
class RealServer:
    """The configurable attributes of a real server (what ``ipvsadm -a/-e`` sets)."""

    key: RealKey
    weight: int = 1
    forward: Forward = Forward.MASQ
    upper_threshold: int = 0
    lower_threshold: int = 0

    def same_config(self, other: RealServer) -> bool:
        return (
            self.key == other.key
            and self.weight == other.weight
            and self.forward == other.forward
            and self.upper_threshold == other.upper_threshold
            and self.lower_threshold == other.lower_threshold
        )


@dataclass(frozen=True, slots=True)
class Stats:
    """IPVS 64-bit counters and rates (``IPVS_STATS_ATTR_*``)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


NO_STATS = Stats()  # shared: most real servers the agent has just written have no counters yet


@dataclass(frozen=True, slots=True)
class RealServerState:
    """A real server as read back from the kernel: config plus live counters."""

    server: RealServer
    active_conns: int = 0
    inactive_conns: int = 0
    persistent_conns: int = 0
    stats: Stats = NO_STATS


@dataclass(frozen=True, slots=True)
class VirtualServerState:
    """A virtual server as read back from the kernel, with its real servers."""

    server: VirtualServer
    real_servers: tuple[RealServerState, ...] = ()
    stats: Stats = NO_STATS
