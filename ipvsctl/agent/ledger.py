"""The agent's ownership record in memory, cut into slices and patched a slice at a time.

A partial sync plans a handful of virtual servers. It needs the part of the record that
concerns them (``part``), and afterwards puts that part back changed (``patch``): both cost
work in proportion to the slice, not to the number of Services held. ``whole()`` copies the
entire record, for the full resync that plans everything anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import IPAddress, ServiceKey
from ipvsctl.plan import DrainKey, Ownership

from .index import Index


class Ledger:
    def __init__(self, owned: Ownership) -> None:
        self.services: dict[ServiceKey, Owner] = dict(owned.services)
        self.addresses: set[IPAddress] = set(owned.addresses)
        self.draining: dict[DrainKey, float] = dict(owned.draining)
        # owned virtual servers and draining real servers, by address and by virtual server
        self._at: Index[IPAddress, ServiceKey] = Index()
        self._drains: Index[ServiceKey, DrainKey] = Index()
        for key in self.services:
            self._at.add(key.address, key)
        for dk in self.draining:
            self._drains.add(dk[0], dk)

    def whole(self) -> Ownership:
        return Ownership(dict(self.services), frozenset(self.addresses), dict(self.draining))

    def keys_at(self, address: IPAddress) -> Iterable[ServiceKey]:
        return self._at.get(address)

    def part(self, keys: set[ServiceKey], claimed_elsewhere: Callable[[IPAddress], bool]) -> Ownership:
        """The slice of the record that concerns these virtual servers.

        It holds their owners and drains, and the bound addresses only they use: an address
        that an owned virtual server outside ``keys`` sits on, or that ``claimed_elsewhere``
        says another Service wants, must stay bound whatever these virtual servers do."""
        services = {k: self.services[k] for k in keys if k in self.services}
        addresses = {k.address for k in keys if k.address in self.addresses}
        free = {a for a in addresses if not claimed_elsewhere(a) and all(k in keys for k in self._at.get(a))}
        draining = {dk: self.draining[dk] for k in keys for dk in self._drains.get(k)}
        return Ownership(services, frozenset(free), draining)

    def patch(self, drop: Ownership, put: Ownership) -> None:
        """Remove drop's entries, then add put's (the same patch the journal records)."""
        for key in drop.services:
            if self.services.pop(key, None) is not None:
                self._at.discard(key.address, key)
        self.addresses -= drop.addresses
        for dk in drop.draining:
            if self.draining.pop(dk, None) is not None:
                self._drains.discard(dk[0], dk)
        for key, owner in put.services.items():
            self.services[key] = owner
            self._at.add(key.address, key)
        self.addresses |= put.addresses
        for dk, since in put.draining.items():
            self.draining[dk] = since
            self._drains.add(dk[0], dk)
