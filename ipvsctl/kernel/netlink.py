"""The real kernel: IPVS over generic netlink, addresses over rtnetlink.

IPVS requests go through one plain ``AF_NETLINK``/``NETLINK_GENERIC`` socket
with messages built by ``codec``: consecutive IPVS operations are sent about
256 to a ``sendmsg``, each with its own sequence number; only the last asks
for an ack, and the kernel answers the others only when they fail (it runs
the requests of a datagram in order and carries on after a failure), so the
answers that come back are matched to requests by sequence number. Addresses
on the dummy interface (one per virtual address: thousands on a cold start)
go the same way over a ``NETLINK_ROUTE`` socket with messages built by
``rtnl`` (on a second thread, beside the IPVS requests, when there are many
of both), and are listed with one rtnetlink dump; ``rtnl`` also creates the dummy interface and sets it up. Only
conntrack entries go through pyroute2 (``NFCTSocket``), deleted after a UDP real
server is removed: pyroute2 is imported then and never otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ipvsctl.kernel import codec, procfs, rtnl
from ipvsctl.kernel.base import KernelError, KernelUnavailable
from ipvsctl.model.ipvs import (
    IPAddress,
    Protocol,
    RealKey,
    RealServerState,
    ServiceKey,
    VirtualServer,
    VirtualServerState,
    address_sort_key,
)
from ipvsctl.model.ops import (
    AddressOperation,
    AddService,
    BindAddress,
    EditService,
    Operation,
)

if TYPE_CHECKING:
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

log = logging.getLogger(__name__)

NETLINK_GENERIC = 16
SOL_NETLINK = rtnl.SOL_NETLINK
NETLINK_CAP_ACK = rtnl.NETLINK_CAP_ACK  # error acks carry only the request's header, not the whole request

NO_IPVS = "this kernel has no IPVS: load it with `modprobe ip_vs` (CONFIG_IP_VS)"
NO_PERMISSION = "IPVS refused us (EPERM): ipvsctl needs CAP_NET_ADMIN (run it as root)"

BATCH = 256
# address operations run beside the IPVS ones (NetlinkKernel._overlapped) when both kinds are at least this many
OVERLAP = 64
_RECV_CHUNK = 1 << 20
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
# errno of a kernel without conntrack or ctnetlink (nf_conntrack, nfnetlink, nf_conntrack_netlink)
_NO_CONNTRACK = frozenset({errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL})


class NetlinkKernel:
    """``Kernel`` over netlink. Connects lazily: constructing it never touches the kernel.

    ``modprobe`` is the command (argv prefix) used to load ip_vs and scheduler
    modules when the kernel has not loaded them itself; failures are ignored
    and the kernel's own error then explains.
    """

    def __init__(
        self,
        *,
        interface: str = "ipvsctl0",
        modprobe: Sequence[str] = ("modprobe",),
        sysctl_root: str | os.PathLike[str] = "/proc/sys",
        timeout: float = 120.0,
    ) -> None:
        self.interface = interface
        self._modprobe = tuple(modprobe)
        self._sysctl_root = Path(sysctl_root)
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._family = 0
        self._seq = 0
        self._buf = bytearray(_RECV_CHUNK)
        self._view = memoryview(self._buf)
        self._tried_modules: set[str] = set()
        self._route = rtnl.RouteSocket(timeout=timeout)  # addresses and links; opens on first use
        self._nfct: dict[int, NFCTSocket] = {}  # per address family, created on first flush_conntrack
        self._ifindex: int | None = None
        self._up = False  # the dummy interface was set up by this session

    # --- connection ---

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        except OSError as exc:
            raise KernelUnavailable(f"cannot open a generic netlink socket: {exc}") from exc
        try:
            sock.bind((0, 0))
            rtnl.grow_buffers(sock)
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            sock.settimeout(self._timeout)
            self._sock = sock
            family = self._lookup_family()
            if family is None:
                self._load_module("ip_vs")
                family = self._lookup_family()
            if family is None:
                raise KernelUnavailable(NO_IPVS)
            self._family = family
        except BaseException:
            self._sock = None
            sock.close()
            raise
        return sock

    def _lookup_family(self) -> int | None:
        """The IPVS family id, or None when the kernel has no such family (even after its autoload)."""
        seq = self._next_seq()
        self._send(codec.encode_get_family(seq))
        for mtype, _flags, mseq, off, length in self._receive():
            if mseq != seq:
                continue
            if mtype == codec.NLMSG_ERROR:
                code = codec.decode_error(self._view, off)
                if code in (errno.ENOENT, 0):
                    return None
                raise KernelUnavailable(f"looking up the IPVS netlink family failed: {os.strerror(code)}")
            if mtype == codec.GENL_ID_CTRL:
                return codec.decode_family_id(self._view, off, length)
        return None

    def _load_module(self, name: str) -> None:
        """Try ``modprobe name`` once; ignore every failure (the kernel's error will explain)."""
        if name in self._tried_modules:
            return
        self._tried_modules.add(name)
        if Path("/sys/module", name).exists():
            return
        try:
            subprocess.run([*self._modprobe, name], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("modprobe %s failed: %s", name, exc)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _send(self, data: bytes | bytearray) -> None:
        assert self._sock is not None
        try:
            self._sock.send(data)
        except PermissionError as exc:
            raise KernelUnavailable(NO_PERMISSION) from exc

    def _recv(self) -> int:
        """Receive the next datagram into ``self._buf``; its length."""
        assert self._sock is not None
        try:
            return self._sock.recv_into(self._buf)
        except TimeoutError as exc:
            raise KernelUnavailable("the kernel did not answer an IPVS netlink request in time") from exc
        except PermissionError as exc:
            raise KernelUnavailable(NO_PERMISSION) from exc
        except OSError as exc:  # ENOBUFS: replies were dropped, what the kernel did is unknown
            self.close()
            raise KernelUnavailable(f"IPVS netlink socket failed: {exc}") from exc

    def _receive(self):
        """Yield (type, flags, seq, offset, length) per message of the next datagram.

        The offsets point into ``self._view``, valid until the next receive.
        """
        yield from codec.iter_messages(self._view, self._recv())

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._route.close()
        for nfct in self._nfct.values():
            nfct.close()
        self._nfct.clear()

    def __enter__(self) -> NetlinkKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ---

    def _dump(self, request: bytes, seq: int) -> list[tuple[bytes | memoryview, int, int]]:
        """Run one dump request: (buffer, offset, length) of every IPVS reply message.

        The kernel sends NLMSG_DONE in a datagram of its own, so the data must outlive the
        receive buffer: every datagram but the last is copied (once, whole); the last stays in
        ``self._view``, valid until the next receive. The messages are walked inline: this loop
        runs for every virtual server of every resync."""
        self._send(request)
        held: list[tuple[bytes | memoryview, int, int]] = []
        view = self._view
        family = self._family
        header = codec.NLMSG_HDRLEN
        unpack = codec.NLMSG_HEADER.unpack_from
        done = False
        while not done:
            n = self._recv()
            off = 0
            here: list[tuple[int, int]] = []
            while off + header <= n:
                length, mtype, _flags, mseq, _pid = unpack(view, off)
                if length < header or off + length > n:
                    break
                if mseq == seq:
                    if mtype == family:
                        here.append((off, length))
                    elif mtype == codec.NLMSG_DONE:
                        self._raise_for(codec.decode_error(view, off) if length >= 20 else 0)
                        done = True
                        break
                    elif mtype == codec.NLMSG_ERROR:
                        code = codec.decode_error(view, off)
                        self._raise_for(code)
                        if code:
                            done = True
                            break
                off += (length + 3) & ~3
            if here:
                data: bytes | memoryview = view if done else bytes(view[:n])
                held.extend((data, o, length) for o, length in here)
        return held

    @staticmethod
    def _decode_all(held: list[tuple[bytes | memoryview, int, int]], decode: Callable[..., Any]) -> list[Any]:
        """decode(buffer, offset, length) of each message, skipping what our model cannot express."""
        out = []
        for buf, off, length in held:
            try:
                out.append(decode(buf, off, length))
            except codec.DecodeError as exc:
                log.warning("skipping an IPVS entry ipvsctl cannot represent: %s", exc)
        return out

    @staticmethod
    def _raise_for(code: int) -> None:
        if code == errno.EPERM:
            raise KernelUnavailable(NO_PERMISSION)
        if code:
            raise KernelUnavailable(f"IPVS dump failed: {os.strerror(code)}")

    def real_servers(
        self, server: VirtualServer, known: bytes = b""
    ) -> tuple[bytes, tuple[RealServerState, ...] | None]:
        """The destinations of one virtual server.

        Each reply message's payload (everything after the netlink header, whose sequence number
        changes per request) goes into the digest. Counters and connection counts are part of the
        bytes, so a real server that carried traffic changes it."""
        self._connect()
        held = self._dest_messages(server)
        digest = hashlib.blake2b(digest_size=16)
        header = codec.NLMSG_HDRLEN
        for buf, off, length in held:
            digest.update(memoryview(buf)[off + header : off + length])
        fingerprint = digest.digest()
        if fingerprint == known:
            return fingerprint, None
        return fingerprint, self._decode_dests(server, held)

    def summaries(self) -> dict[ServiceKey, int] | None:
        return procfs.read()

    def _dest_messages(self, server: VirtualServer) -> list[tuple[bytes | memoryview, int, int]]:
        seq = self._next_seq()
        return self._dump(codec.encode_dump_dests(self._family, seq, server.key), seq)

    def _decode_dests(
        self, server: VirtualServer, held: list[tuple[bytes | memoryview, int, int]]
    ) -> tuple[RealServerState, ...]:
        af = codec.service_family(server)
        return tuple(self._decode_all(held, lambda buf, off, length: codec.decode_dest(buf, off, length, af)))

    def _dests(self, server: VirtualServer) -> tuple[RealServerState, ...]:
        """The destinations, for ``dump`` and ``get``: nobody keeps a digest of those reads."""
        return self._decode_dests(server, self._dest_messages(server))

    def dump(self, reals: bool = True) -> list[VirtualServerState]:
        self._connect()
        seq = self._next_seq()
        services = self._decode_all(
            self._dump(codec.encode_dump_services(self._family, seq), seq), codec.decode_service
        )
        if not reals:
            return [VirtualServerState(server, (), stats) for server, stats in services]
        # One destination dump per service: a netlink socket runs one dump at a time.
        return [VirtualServerState(server, self._dests(server), stats) for server, stats in services]

    def get(self, key: ServiceKey) -> VirtualServerState | None:
        self._connect()
        seq = self._next_seq()
        self._send(codec.encode_get_service(self._family, seq, key))
        found = None
        while found is None:
            for mtype, _flags, mseq, off, length in self._receive():
                if mseq != seq:
                    continue
                if mtype == codec.NLMSG_ERROR:
                    code = codec.decode_error(self._view, off)
                    if code == errno.EPERM:
                        raise KernelUnavailable(NO_PERMISSION)
                    if code in (errno.ESRCH, errno.ENOENT):
                        return None
                    raise KernelUnavailable(f"IPVS GET_SERVICE failed: {os.strerror(code)}")
                if mtype == self._family:
                    found = codec.decode_service(self._view, off, length)
                    break
        server, stats = found
        return VirtualServerState(server, self._dests(server), stats)

    # --- writing ---

    def execute(self, ops: Sequence[Operation]) -> list[KernelError | None]:
        results: list[KernelError | None] = [None] * len(ops)
        addresses = [i for i, op in enumerate(ops) if isinstance(op, AddressOperation)]
        if len(addresses) >= OVERLAP and len(ops) - len(addresses) >= OVERLAP:
            self._overlapped(ops, addresses, results)
            return results
        i = 0
        while i < len(ops):
            if isinstance(ops[i], AddressOperation):
                j = i + 1
                while j < len(ops) and isinstance(ops[j], AddressOperation):
                    j += 1
                results[i:j] = self._run_addresses(cast(Sequence[AddressOperation], ops[i:j]))
            else:
                j = i + 1
                while j < len(ops) and j - i < BATCH and not isinstance(ops[j], AddressOperation):
                    j += 1
                self._run_batch(ops, range(i, j), results)
            i = j
        return results

    def _overlapped(self, ops: Sequence[Operation], addresses: list[int], results: list[KernelError | None]) -> None:
        """Run the address operations on a second thread while this one runs the IPVS operations.

        Each kind still runs in its own order, and neither kind's results depend on the other (an
        address on the dummy interface and a virtual server are separate kernel objects, under
        separate locks), so the results are those of running everything in order; only the order
        in which the two kinds reach the kernel differs. Worth it on a cold start: the kernel
        walks the interface's whole address list on every bind, so thousands of binds take as
        long as the virtual servers, and the two can proceed on two CPUs."""
        failure: list[BaseException] = []

        def bind() -> None:
            try:
                done = self._run_addresses([cast(AddressOperation, ops[i]) for i in addresses])
            except BaseException as exc:  # re-raised on the calling thread
                failure.append(exc)
                return
            for i, res in zip(addresses, done, strict=True):
                results[i] = res

        worker = threading.Thread(target=bind, name="ipvsctl-addresses", daemon=True)
        worker.start()
        try:
            # Batches taken as they come: a list of all 110,000 positions at 10,000 Services
            # would hold as many int objects (4 MB) for the whole write.
            bound = set(addresses)
            batch: list[int] = []
            for i in range(len(ops)):
                if i in bound:
                    continue
                batch.append(i)
                if len(batch) == BATCH:
                    self._run_batch(ops, batch, results)
                    batch = []
            if batch:
                self._run_batch(ops, batch, results)
        finally:
            worker.join()
        if failure:
            raise failure[0]

    def _run_batch(self, ops: Sequence[Operation], indices: Sequence[int], results: list[KernelError | None]) -> None:
        """Send the IPVS operations ``ops[i] for i in indices`` in one datagram. Only the last asks
        for an ack: the kernel answers a request without NLM_F_ACK only when it fails, and it runs
        and answers the requests of a datagram in order, so once the last one's answer is in,
        every failure before it is too."""
        self._connect()
        for index in indices:
            op = ops[index]
            if isinstance(op, AddService | EditService):
                self._load_module(f"ip_vs_{op.server.scheduler}")
        seqs: dict[int, int] = {}
        out = bytearray()
        last = 0
        final = indices[-1]
        for index in indices:
            last = self._next_seq()
            seqs[last] = index
            out += codec.encode_operation(self._family, last, ops[index], ack=index == final)  # type: ignore[arg-type]
        self._send(out)
        view = self._view
        done = False
        while not done:
            for mtype, _flags, mseq, off, _length in self._receive():
                index = seqs.get(mseq)
                if mtype != codec.NLMSG_ERROR or index is None:
                    continue  # a late answer to an earlier request
                code = codec.decode_error(view, off)
                if code == errno.EPERM:
                    raise KernelUnavailable(NO_PERMISSION)
                if code:
                    results[index] = KernelError(ops[index], code)
                done = done or mseq == last

    # --- addresses and the dummy interface (rtnetlink, our codec) ---

    @contextlib.contextmanager
    def _route_errors(self) -> Iterator[None]:
        """Socket-level rtnetlink failures as KernelUnavailable (kernel errors per request are results)."""
        try:
            yield
        except PermissionError as exc:
            raise KernelUnavailable(NO_PERMISSION) from exc
        except TimeoutError as exc:
            raise KernelUnavailable("the kernel did not answer an rtnetlink request in time") from exc
        except OSError as exc:  # ENOBUFS (replies lost), a dump that never came out consistent, ...
            raise KernelUnavailable(f"rtnetlink failed: {exc}") from exc

    def _links(self) -> list[rtnl.Link]:
        with self._route_errors():
            return self._route.links()

    def _addresses(self, keep: Callable[[int], bool]) -> list[tuple[int, IPAddress]]:
        with self._route_errors():
            return self._route.addresses(keep)

    def _dummy_index(self, create: bool, links: Sequence[rtnl.Link] | None = None) -> int | None:
        """The dummy interface's index (cached), None when it does not exist and ``create`` is
        false; ``links``: a link dump to look in instead of taking one.

        Raises _LinkFailed when creating it or setting it up failed."""
        if self._ifindex is not None and (self._up or not create):
            return self._ifindex
        index = self._find_link(links)
        if index is None and create:
            with self._route_errors():
                code = self._route.create_link(self.interface)
            if code and code != errno.EEXIST:
                raise _LinkFailed(code)
            index = self._find_link(None)
        if index is None:
            return None
        if create:
            with self._route_errors():
                code = self._route.set_up(index)
            if code:
                raise _LinkFailed(code)
            # Set up once per session, whoever made the interface: a run killed between creating
            # it and setting it up leaves it down, and addresses on a down interface are not local.
            self._up = True
        self._ifindex = index
        return index

    def _find_link(self, links: Sequence[rtnl.Link] | None) -> int | None:
        for link in self._links() if links is None else links:
            if link.name == self.interface:
                return link.index
        return None

    def _run_addresses(self, ops: Sequence[AddressOperation]) -> list[KernelError | None]:
        """Bind and unbind addresses on the dummy interface: one rtnetlink request each, sent in batches.

        The results are those of running them one by one: a bind creates the interface when it is
        missing; an unbind when it is missing is EADDRNOTAVAIL; ENODEV (the interface went away
        under the cached index) is the result of the first operation that meets it, the index is
        forgotten, and the operations after it that failed the same way run again.
        """
        results: list[KernelError | None] = [None] * len(ops)
        pending = list(range(len(ops)))
        while pending:
            binds = [isinstance(ops[i], BindAddress) for i in pending]
            try:
                index = self._dummy_index(create=any(binds))
            except _LinkFailed as exc:
                if exc.code == errno.EPERM:
                    raise KernelUnavailable(NO_PERMISSION) from exc
                for i, bind in zip(pending, binds, strict=True):
                    results[i] = KernelError(ops[i], exc.code if bind else errno.EADDRNOTAVAIL)
                break
            if index is None:
                for i in pending:
                    results[i] = KernelError(ops[i], errno.EADDRNOTAVAIL)
                break
            changes = [rtnl.AddressChange(b, index, ops[i].address) for i, b in zip(pending, binds, strict=True)]
            with self._route_errors():
                codes = self._route.change_addresses(changes)
            if errno.EPERM in codes:
                raise KernelUnavailable(NO_PERMISSION)
            gone = False
            again: list[int] = []
            for i, code in zip(pending, codes, strict=True):
                if code == errno.ENODEV and gone:
                    again.append(i)
                    continue
                if code == errno.ENODEV:
                    gone = True
                    self._ifindex, self._up = None, False
                results[i] = KernelError(ops[i], code) if code else None
            pending = again
        return results

    def bound_addresses(self) -> set[IPAddress]:
        index = self._dummy_index(create=False)
        if index is None:
            return set()
        return {addr for _idx, addr in self._addresses(lambda idx: idx == index)}

    def node_addresses(self) -> list[IPAddress]:
        links = self._links()
        skip = {link.index for link in links if link.flags & rtnl.IFF_LOOPBACK}
        dummy = self._dummy_index(create=False, links=links)
        if dummy is not None:
            skip.add(dummy)
        found: dict[IPAddress, None] = {}
        for _idx, addr in self._addresses(lambda idx: idx not in skip):
            if addr.is_loopback:
                continue
            if addr.version == 6 and addr in _LINK_LOCAL:
                continue
            found[addr] = None
        return sorted(found, key=address_sort_key)

    # --- conntrack (ctnetlink through pyroute2) ---

    def flush_conntrack(self, service: ServiceKey, real: RealKey | None) -> int:
        if service.protocol != Protocol.UDP or service.fwmark:
            return 0
        from pyroute2 import NetlinkError
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        family = service.family
        try:
            nfct = self._conntrack(family)
            # The kernel filters on the original destination (Linux >= 5.8; older ones send every
            # entry), but not on an IPv6 address: that filter matches every address except the one
            # asked for (seen on 6.1 and 6.18). matches() checks the destination again, and the reply
            # source: the kernel's filter on reply tuples was broken until recently.
            wanted = NFCTAttrTuple(
                family=family,
                daddr=str(service.address) if family == socket.AF_INET else None,
                proto=socket.IPPROTO_UDP,
                dport=service.port,
            )
            flows = [f for msg in nfct.dump(tuple_orig=wanted) if (f := _flow(msg)) and f.matches(service, real)]
        except (NetlinkError, OSError) as exc:
            code = exc.code if isinstance(exc, NetlinkError) else exc.errno
            level = logging.DEBUG if code in _NO_CONNTRACK else logging.WARNING
            log.log(level, "reading conntrack entries of %s failed: %s", service, exc)
            return 0
        deleted = 0
        for flow in flows:
            orig = NFCTAttrTuple(
                family=family,
                saddr=str(flow.source),
                daddr=str(flow.destination),
                proto=socket.IPPROTO_UDP,
                sport=flow.source_port,
                dport=flow.destination_port,
            )
            try:
                # With its id the kernel deletes this entry only, not a newer one with the same tuple.
                nfct.entry("del", tuple_orig=orig, id=flow.id)
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:  # ENOENT: it expired meanwhile
                    log.warning("deleting a conntrack entry of %s failed: %s", service, exc)
                continue
            except OSError as exc:
                log.warning("deleting conntrack entries of %s failed: %s", service, exc)
                break
            deleted += 1
        return deleted

    def _conntrack(self, family: int) -> NFCTSocket:
        nfct = self._nfct.get(family)
        if nfct is None:
            from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

            nfct = self._nfct[family] = NFCTSocket(nfgen_family=family)
        return nfct

    # --- sysctls ---

    def set_sysctls(self, values: Mapping[str, str]) -> dict[str, str]:
        changed: dict[str, str] = {}
        for name, value in values.items():
            path = self._sysctl_root.joinpath(*name.split("."))
            try:
                current = path.read_text().strip()
                if current == str(value):
                    continue
                path.write_text(f"{value}\n")
            except OSError:
                continue  # missing (module not loaded) or read-only: not ours to fix
            changed[name] = str(value)
        return changed


class _LinkFailed(Exception):
    """Creating the dummy interface, or setting it up, failed with this errno."""

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.code = code


@dataclass(frozen=True)
class _Flow:
    """One UDP conntrack entry: its original tuple, where its replies come from, its id."""

    source: IPAddress
    source_port: int
    destination: IPAddress
    destination_port: int
    reply_source: IPAddress
    reply_source_port: int
    id: int | None

    def matches(self, service: ServiceKey, real: RealKey | None) -> bool:
        if (self.destination, self.destination_port) != (service.address, service.port):
            return False
        return real is None or (self.reply_source, self.reply_source_port) == (real.address, real.port)


def _flow(msg) -> _Flow | None:
    """A UDP entry of a ctnetlink dump as a _Flow; None for anything else."""
    v = "V4" if msg["nfgen_family"] == socket.AF_INET else "V6"
    get = msg.get_nested
    if get("CTA_TUPLE_ORIG", "CTA_TUPLE_PROTO", "CTA_PROTO_NUM") != socket.IPPROTO_UDP:
        return None
    try:
        return _Flow(
            source=ipaddress.ip_address(get("CTA_TUPLE_ORIG", "CTA_TUPLE_IP", f"CTA_IP_{v}_SRC")),
            source_port=get("CTA_TUPLE_ORIG", "CTA_TUPLE_PROTO", "CTA_PROTO_SRC_PORT"),
            destination=ipaddress.ip_address(get("CTA_TUPLE_ORIG", "CTA_TUPLE_IP", f"CTA_IP_{v}_DST")),
            destination_port=get("CTA_TUPLE_ORIG", "CTA_TUPLE_PROTO", "CTA_PROTO_DST_PORT"),
            reply_source=ipaddress.ip_address(get("CTA_TUPLE_REPLY", "CTA_TUPLE_IP", f"CTA_IP_{v}_SRC")),
            reply_source_port=get("CTA_TUPLE_REPLY", "CTA_TUPLE_PROTO", "CTA_PROTO_SRC_PORT"),
            id=get("CTA_ID"),
        )
    except (TypeError, ValueError):  # an attribute missing
        return None
