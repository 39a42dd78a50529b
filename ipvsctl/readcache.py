"""What ``ipvsctl diff`` read of the kernel last time, found again by ``/proc/net/ip_vs``.

A no-op diff of 10,000 virtual servers spends most of its time asking the kernel for each one's
real servers: a request and two answers per virtual server, as ``ipvsadm -Ln`` does.
``/proc/net/ip_vs`` shows all of them in one read, with everything of each real server but its
thresholds and persistent connection count (``kernel/procfs.py``). So ``diff`` keeps, in
``<state-dir>/cache/kernel-read.pickle``, each virtual server's real servers as it last read
them, with the digest of its ``/proc`` lines at that moment, and the next diff:

- reads every virtual server's own settings fresh (one dump, without real servers);
- takes a virtual server's real servers from the cache only when its digest is the one cached,
  it is not persistent (its templates are counted only in what ``/proc`` leaves out), and it is
  not its turn: each diff reads one in ``DEEP_EVERY`` of them anyway, in turn, for the
  thresholds, as the agent's periodic resync does;
- reads the others (changed, new, firewall marks, persistent, their turn), and writes the cache
  again, keeping only entries whose digest did not change while it read.

Real servers that are exactly the ones the translation wants (the usual case) are kept as the
bytes that translation packs them into (``RealServers.packed``), with their connection counts
when any is not 0, and handed back as ``RealServerStates`` over the translation's own
``RealServers``: a 10,000-Service cache loads without building 100,000 objects.

``apply`` never uses it: what it writes is planned from a full read. ``--no-cache`` turns it off
for ``diff`` too. The file is sealed as the other caches are (``cache.py``): another version, a
changed byte or a foreign owner, and it is not used.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipvsctl.agent.cache import compact, expand
from ipvsctl.cache import code_digest, read_sealed, write_sealed
from ipvsctl.kernel.base import Kernel
from ipvsctl.model.desired import DesiredService, RealServers
from ipvsctl.model.ipvs import RealServer, RealServerState, ServiceKey, VirtualServer, VirtualServerState

FILE = "kernel-read.pickle"
DEEP_EVERY = 8

Wanted = Callable[[ServiceKey], DesiredService | None]
# As kept: the /proc digest, and either (the translation's packed bytes, newest first, packed
# connection counts or None) or the real servers themselves.
Entry = tuple[int, tuple[bytes, bool, bytes | None] | tuple[RealServer | RealServerState, ...]]


def turn_of(key: ServiceKey) -> int:
    """A virtual server's turn, the same in every process (``hash`` of a str is not)."""
    return zlib.crc32(repr(key.sort_key()).encode()) % DEEP_EVERY


def _load(path: Path, code: bytes, notes: list[str]) -> tuple[int, dict[ServiceKey, Entry]]:
    found: Any = read_sealed(path, code, notes)
    if found is None:
        return 0, {}
    if not (isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], int) and isinstance(found[1], dict)):
        notes.append(f"cache {path} ignored: not a kernel read")
        return 0, {}
    return found[0], found[1]


def _keep(state: VirtualServerState, like: DesiredService | None) -> tuple[Any, ...]:
    _, reals, newest_first, conns = compact(state, like)
    if isinstance(reals, RealServers):
        packed = reals.packed()
        if packed is not None:
            return (packed, newest_first, conns)
        return tuple(expand((state.server, reals, newest_first, conns)).real_servers)
    return reals


def _restore(server: VirtualServer, kept: tuple[Any, ...], like: DesiredService | None) -> VirtualServerState | None:
    """The state an entry was kept from, with ``server`` as read now; None when it was kept as
    a translation's real servers and the translation now wants others (read it again)."""
    if kept and isinstance(kept[0], bytes):
        packed, newest_first, conns = kept
        want = like.reals if like is not None else None
        if not isinstance(want, RealServers) or want.packed() != packed:
            return None
        return expand((server, want, newest_first, conns))
    return expand((server, kept, False, None))  # type: ignore[arg-type]


def read(
    kernel: Kernel, directory: Path, notes: list[str], wanted: Wanted = lambda key: None
) -> dict[ServiceKey, VirtualServerState] | None:
    """Every virtual server with its real servers, as a full dump would give them (real servers
    taken from the cache have no traffic counters); None when ``/proc`` cannot be read (then the
    caller dumps everything). ``wanted``: what the translation wants at a key."""
    summaries = kernel.summaries()
    if summaries is None:
        return None
    code = code_digest()
    path = directory / FILE
    turn, cached = _load(path, code, notes)
    services: dict[ServiceKey, VirtualServerState] = {}
    keep: dict[ServiceKey, Entry] = {}
    for vs in kernel.dump(reals=False):
        key = vs.server.key
        summary = summaries.get(key)
        old = cached.get(key)
        trusted = summary is not None and old is not None and old[0] == summary
        state = None
        if trusted and old is not None and not vs.server.timeout and turn_of(key) != turn:
            state = _restore(vs.server, old[1], wanted(key))
        if state is not None and old is not None:
            keep[key] = old  # as it was: nothing to pack again
        else:
            _, reals = kernel.real_servers(vs.server)
            state = VirtualServerState(vs.server, reals or ())
            if summary is not None:
                keep[key] = (summary, _keep(state, wanted(key)))
        services[key] = VirtualServerState(vs.server, state.real_servers, vs.stats)
    after = kernel.summaries() or {}
    stable = {key: entry for key, entry in keep.items() if after.get(key) == entry[0]}
    unsaved = write_sealed(path, code, ((turn + 1) % DEEP_EVERY, stable))
    if unsaved:
        notes.append(unsaved)
    return services
