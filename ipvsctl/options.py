"""Pure: the per-Service annotations that shape real servers beyond kube-proxy's rules, parsed
and validated: forwarding method, per-endpoint weights, a sorry server and a quorum.

These are what keepalived's ``virtual_server`` blocks say with ``lb_kind``, ``weight``,
``sorry_server`` and ``quorum``. Every error names the annotation at fault (an ``InputError``
whose field is ``metadata.annotations.<key>``), so only that Service is held.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ipvsctl.errors import InputError
from ipvsctl.model.ipvs import Forward, IPAddress
from ipvsctl.model.k8s import Service

FORWARDING_ANNOTATION = "ipvsctl.io/forwarding"
WEIGHTS_ANNOTATION = "ipvsctl.io/weights"
SORRY_ANNOTATION = "ipvsctl.io/sorry-server"
QUORUM_ANNOTATION = "ipvsctl.io/quorum"

FORWARDING = {"masq": Forward.MASQ, "dr": Forward.ROUTE, "tunnel": Forward.TUNNEL}
MAX_WEIGHT = 65535  # ipvsadm's limit for -w
MAX_QUORUM = 2**31 - 1


@dataclass(frozen=True, slots=True)
class SorryServer:
    address: IPAddress
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if self.address.version == 6 else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    forward: Forward = Forward.MASQ
    weights: tuple[tuple[IPAddress, int], ...] = ()  # (endpoint address, weight), sorted
    sorry: SorryServer | None = None
    quorum: int = 1  # total weight of the servers in rotation below which the sorry server answers

    @property
    def plain(self) -> bool:
        """Nothing beyond kube-proxy's rules: masqueraded, weight 1, no sorry server."""
        return self.forward == Forward.MASQ and not self.weights and self.sorry is None

    def weight_of(self, address: IPAddress) -> int:
        for known, weight in self.weights:
            if known == address:
                return weight
        return 1


PLAIN = ServiceOptions()


def _field(key: str) -> str:
    return f"metadata.annotations.{key}"


def forwarding(raw: str) -> Forward:
    name = raw.strip().lower()
    if name not in FORWARDING:
        raise InputError(
            _field(FORWARDING_ANNOTATION), f"unknown forwarding method {raw!r}; choose one of {', '.join(FORWARDING)}"
        )
    return FORWARDING[name]


def _address(text: str, key: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InputError(_field(key), f"{what} {text!r} is not an IP address") from None


def weights(raw: str) -> tuple[tuple[IPAddress, int], ...]:
    """``"ADDRESS=WEIGHT, …"``: each address once, weights 0…65535 (0: quiesced, no new connections)."""
    found: dict[IPAddress, int] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        address_text, sep, weight_text = item.rpartition("=")
        if not sep or not address_text.strip():
            raise InputError(_field(WEIGHTS_ANNOTATION), f"{item!r} is not ADDRESS=WEIGHT")
        address = _address(address_text.strip(), WEIGHTS_ANNOTATION, "endpoint")
        text = weight_text.strip()
        if not text.isascii() or not text.isdigit() or int(text) > MAX_WEIGHT:
            raise InputError(
                _field(WEIGHTS_ANNOTATION), f"weight {text!r} of {address} must be a whole number 0…{MAX_WEIGHT}"
            )
        if address in found:
            raise InputError(_field(WEIGHTS_ANNOTATION), f"{address} is given a weight twice")
        found[address] = int(text)
    if not found:
        raise InputError(_field(WEIGHTS_ANNOTATION), "is empty; give ADDRESS=WEIGHT pairs separated by commas")
    return tuple(sorted(found.items(), key=lambda item: (item[0].version, int(item[0]))))


def sorry_server(raw: str) -> SorryServer:
    """``"IP:PORT"`` or ``"[IPv6]:PORT"``."""
    text = raw.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            sep = ""  # an IPv6 address without brackets: the port cannot be told apart
    if not sep or not host:
        raise InputError(_field(SORRY_ANNOTATION), f"{raw!r} is not IP:PORT (an IPv6 address as [ADDRESS]:PORT)")
    address = _address(host, SORRY_ANNOTATION, "address")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InputError(_field(SORRY_ANNOTATION), f"port {port_text!r} must be 1…65535")
    return SorryServer(address, int(port_text))


def quorum(raw: str) -> int:
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_QUORUM:
        raise InputError(_field(QUORUM_ANNOTATION), f"{raw!r} must be a whole number 1…{MAX_QUORUM}")
    return int(text)


def options_of(svc: Service) -> ServiceOptions:
    """The Service's options; PLAIN when it has none of the annotations. Raises InputError."""
    raw_forward = svc.annotation(FORWARDING_ANNOTATION)
    raw_weights = svc.annotation(WEIGHTS_ANNOTATION)
    raw_sorry = svc.annotation(SORRY_ANNOTATION)
    raw_quorum = svc.annotation(QUORUM_ANNOTATION)
    if raw_forward is None and raw_weights is None and raw_sorry is None and raw_quorum is None:
        return PLAIN
    sorry = sorry_server(raw_sorry) if raw_sorry is not None else None
    if raw_quorum is not None and sorry is None:
        raise InputError(
            _field(QUORUM_ANNOTATION),
            f"a quorum needs a sorry server to answer below it: add {SORRY_ANNOTATION}",
        )
    return ServiceOptions(
        forward=forwarding(raw_forward) if raw_forward is not None else Forward.MASQ,
        weights=weights(raw_weights) if raw_weights is not None else (),
        sorry=sorry,
        quorum=quorum(raw_quorum) if raw_quorum is not None else 1,
    )
