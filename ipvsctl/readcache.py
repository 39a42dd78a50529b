"""What ``ipvsctl diff`` read of the kernel last time, found again by ``/proc/net/ip_vs``.

A no-op diff of 10,000 virtual servers spends most of its time asking the kernel for each one's
real servers: a request and two answers per virtual server, as ``ipvsadm -Ln`` does.
``/proc/net/ip_vs`` shows all of them in one read, with everything of each real server but its
thresholds and persistent connection count (``kernel/procfs.py``). So ``diff`` keeps, in
``<state-dir>/cache/kernel-read.pickle``, each virtual server's real servers as it last read them,
with the summary of its ``/proc`` lines at that moment, and the next diff:

- reads every virtual server's own settings fresh (one dump, without real servers);
- takes a virtual server's real servers from the cache only when its summary is the one
  cached, it is not persistent (its templates are counted only in what ``/proc`` leaves out),
  and it is not its turn: each diff reads one in ``DEEP_EVERY`` of them anyway, in turn, for the
  thresholds, as the agent's periodic resync does;
- reads the others (changed, new, firewall marks, persistent, their turn), and writes the cache
  again, with only entries whose summary did not change while it read.

``apply`` never uses it: what it writes is planned from a full read. ``--no-cache`` turns it off
for ``diff`` too. The cache file is sealed as the other caches are (``cache.py``): another
version, a changed byte or a foreign owner, and it is not used.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from ipvsctl.cache import code_digest, read_sealed, write_sealed
from ipvsctl.kernel.base import Kernel
from ipvsctl.model.ipvs import NO_STATS, RealServerState, ServiceKey, VirtualServerState

FILE = "kernel-read.pickle"
DEEP_EVERY = 8

Entry = tuple[int, tuple[RealServerState, ...]]  # the /proc summary, and the real servers then


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


def read(kernel: Kernel, directory: Path, notes: list[str]) -> dict[ServiceKey, VirtualServerState] | None:
    """Every virtual server with its real servers, as a full dump would give them (traffic
    counters of real servers taken from the cache are 0); None when ``/proc`` cannot be read
    (then the caller dumps everything)."""
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
        if (
            summary is not None
            and old is not None
            and old[0] == summary
            and not vs.server.timeout
            and (turn_of(key) != turn)
        ):
            reals = old[1]
        else:
            _, fresh = kernel.real_servers(vs.server)
            reals = fresh or ()
        services[key] = VirtualServerState(vs.server, reals, vs.stats)
        if summary is not None:
            keep[key] = (summary, tuple(replace(r, stats=NO_STATS) if r.stats is not NO_STATS else r for r in reals))
    after = kernel.summaries() or {}
    stable = {key: entry for key, entry in keep.items() if after.get(key) == entry[0]}
    unsaved = write_sealed(path, code, ((turn + 1) % DEEP_EVERY, stable))
    if unsaved:
        notes.append(unsaved)
    return services
