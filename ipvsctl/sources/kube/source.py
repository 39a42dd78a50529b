"""The Kubernetes API as a source for the agent's World: Services, EndpointSlices and this Node.

Three reflectors, each in its own thread, turn what the API server says into World calls:
a list becomes ``replace_kind``, an event ``put``/``remove``, a parse failure a ``report``
(the last good value stays in force; an object never seen good is only reported). The Node's
InternalIP and ExternalIP addresses become ``set_node_ips``. The World hears ``mark_ready``
once every kind has been listed once.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ipvsctl import logs
from ipvsctl.agent.world import ObjectKey, Value, World
from ipvsctl.errors import InputError, Origin, Problem
from ipvsctl.model.ipvs import IPAddress
from ipvsctl.sources.kube.client import Client
from ipvsctl.sources.kube.reflector import DEFAULT_BACKOFF, Backoff, Reflector
from ipvsctl.sources.parse import Node, parse_endpoint_slice, parse_service

log = logs.get()

SOURCE = "kubernetes"
SERVICES = "/api/v1/services"
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
NODES = "/api/v1/nodes"
NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")

ListHandler = Callable[[list[Any]], None]
Parsed = tuple[ObjectKey | None, tuple[Value, ...] | None, list[Problem]]  # key, values, problems


def _key(kind: str, obj: dict[str, Any]) -> ObjectKey | None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    return (SOURCE, kind, namespace, name)


def parse_object(key: ObjectKey, obj: dict[str, Any]) -> tuple[tuple[Value, ...] | None, list[Problem]]:
    """An API object's values (None: it does not parse) and its problems."""
    _, kind, namespace, name = key
    origin = Origin(SOURCE, -1, kind, namespace, name)
    node = Node(obj, "")
    errors: list[InputError] = []
    try:
        if kind == "Service":
            values: tuple[Value, ...] = (replace(parse_service(node), origin=origin),)
        else:
            es = parse_endpoint_slice(node, errors)
            values = () if es is None else (replace(es, origin=origin),)
    except InputError as err:
        return None, [Problem(origin, err.field, err.message)]
    except RecursionError:
        return None, [Problem(origin, "", "object nests too deeply")]
    return values, [Problem(origin, err.field, f"{err.message} (endpoint ignored)") for err in errors]


def node_addresses(obj: dict[str, Any]) -> list[IPAddress]:
    """A Node's InternalIP and ExternalIP addresses, in the order of status.addresses, without repeats."""
    status = obj.get("status")
    entries = status.get("addresses") if isinstance(status, dict) else None
    out: list[IPAddress] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("type") not in NODE_ADDRESS_TYPES:
            continue
        try:
            addr = ipaddress.ip_address(str(entry.get("address")))
        except ValueError:
            log.warning("node address is not an IP address", address=str(entry.get("address")))
            continue
        if addr not in out:
            out.append(addr)
    return out


class _Objects:
    """World updates for one kind (Service or EndpointSlice). Used by one reflector thread only."""

    def __init__(self, world: World, kind: str) -> None:
        self.world = world
        self.kind = kind
        self.good: dict[ObjectKey, tuple[Value, ...]] = {}  # the values in force, kept through parse failures
        self.bad: set[ObjectKey] = set()  # keys with problems reported

    def convert(self, obj: dict[str, Any]) -> Parsed:
        """One listed object, parsed as its page arrives (the reflector's thread; no World call)."""
        key = _key(self.kind, obj)
        if key is None:
            return None, None, []
        values, found = parse_object(key, obj)
        return key, values, found

    def on_list(self, items: list[Parsed]) -> None:
        objects: dict[ObjectKey, tuple[Value, ...]] = {}
        problems: dict[ObjectKey, list[Problem]] = {}
        for key, values, found in items:
            if key is None:
                log.warning("object without a name", resource=self.kind)
                continue
            if values is not None:
                objects[key] = values
            elif key in self.good:
                objects[key] = self.good[key]  # rejected: the last good value stays in force
            if found:
                problems[key] = found
        self.world.replace_kind(SOURCE, self.kind, objects, problems)
        self.good = {k: v for k, v in objects.items() if v}
        self.bad = set(problems)

    def on_event(self, event: str, obj: dict[str, Any]) -> None:
        key = _key(self.kind, obj)
        if key is None:
            log.warning("object without a name", resource=self.kind, event_type=event)
            return
        if event == "DELETED":
            self.world.remove(key)
            self.good.pop(key, None)
            self.bad.discard(key)
            return
        values, found = parse_object(key, obj)
        if values is not None:
            self.world.put(key, values)
            if values:
                self.good[key] = values
            else:
                self.good.pop(key, None)
        if found:
            self.world.report(key, found)
            self.bad.add(key)
        elif key in self.bad:
            self.world.report(key, [])
            self.bad.discard(key)


class KubeSource:
    """Feeds a World from the API server until ``stop`` is set. ``node_name`` None: no Node watch."""

    def __init__(
        self,
        client: Client,
        world: World,
        node_name: str | None,
        stop: threading.Event,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        watch_timeout: int = 300,
        read_timeout: float | None = None,
    ) -> None:
        self.world = world
        self.node_name = node_name
        self.stop = stop
        self._lock = threading.Lock()
        self._pending = {"Service", "EndpointSlice"} | ({"Node"} if node_name else set())
        self._threads: list[threading.Thread] = []
        options: dict[str, Any] = {"backoff": backoff, "watch_timeout": watch_timeout, "read_timeout": read_timeout}
        services, slices = _Objects(world, "Service"), _Objects(world, "EndpointSlice")
        self.reflectors = [
            Reflector(
                client,
                SERVICES,
                "Service",
                self._listed(services.on_list, "Service"),
                services.on_event,
                stop,
                convert=services.convert,
                **options,
            ),
            Reflector(
                client,
                ENDPOINT_SLICES,
                "EndpointSlice",
                self._listed(slices.on_list, "EndpointSlice"),
                slices.on_event,
                stop,
                convert=slices.convert,
                **options,
            ),
        ]
        if node_name:
            self.reflectors.append(
                Reflector(
                    client,
                    NODES,
                    "Node",
                    self._listed(self._on_node_list, "Node"),
                    self._on_node_event,
                    stop,
                    params={"fieldSelector": f"metadata.name={node_name}"},
                    **options,
                )
            )

    def start(self) -> None:
        for reflector in self.reflectors:
            thread = threading.Thread(target=reflector.run, name=f"kube-{reflector.kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` seconds in all for the threads to end (set ``stop`` first)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        """Some thread still runs."""
        return any(t.is_alive() for t in self._threads)

    def _listed(self, handler: ListHandler, kind: str) -> ListHandler:
        """``handler``, then: the first list of every kind makes the source ready."""

        def on_list(items: list[Any]) -> None:
            handler(items)
            with self._lock:
                if kind not in self._pending:
                    return
                self._pending.discard(kind)
                ready = not self._pending
            if ready:
                log.info("kubernetes source ready")
                self.world.mark_ready(SOURCE)

        return on_list

    def _on_node_list(self, items: list[dict[str, Any]]) -> None:
        mine = [obj for obj in items if (key := _key("Node", obj)) is not None and key[3] == self.node_name]
        if not mine:
            log.warning("this node is not in the API; keeping the addresses known so far", node=self.node_name)
            return
        self._on_node_event("ADDED", mine[0])

    def _on_node_event(self, event: str, obj: dict[str, Any]) -> None:
        if event == "DELETED":
            log.warning("this node was deleted from the API; keeping its last addresses", node=self.node_name)
            return
        ips = node_addresses(obj)
        if not ips:
            log.warning("this node has no InternalIP or ExternalIP address yet", node=self.node_name)
            return
        self.world.set_node_ips(ips)
