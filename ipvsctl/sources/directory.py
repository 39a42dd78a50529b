"""A watched manifest directory (or files) feeding the agent's World.

Change detection: inotify on every directory (wakes us at once) plus a rescan every
``rescan`` seconds as a safety net (network file systems, missed events). A rescan compares
each file's (inode, size, mtime, ctime), following symlinks so the ``..data`` swap a
Kubernetes ConfigMap volume does is seen; only files that changed are read again.

A file that cannot be read or is not valid YAML keeps its last good content in force, and the
problem is reported against the file. An object that is rejected keeps its last good value;
the file's other objects are unaffected. A removed file takes its objects with it.

The last good content is what the World holds for the file: nothing of it is kept here but
each file's signature (32 bytes), so the parsed manifests are held once, by the World.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ipvsctl import logs
from ipvsctl.agent.world import ObjectKey, Value, World
from ipvsctl.cache import ParseCache
from ipvsctl.cache import key as cache_key
from ipvsctl.errors import Origin, Problem
from ipvsctl.sources import fork
from ipvsctl.sources.files import MANIFEST_SUFFIXES, Parsed, parse_file, read_file

log = logs.get()

SOURCE = "files"
Signature = bytes  # inode, size, mtime and ctime (ns), packed: 65 bytes where a tuple of ints took 212
_SIGNATURE = struct.Struct("=Qqqq")

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
)


def file_source(path: str) -> str:
    """The World source tag for one file's objects."""
    return f"file:{path}"


class Inotify:
    """Just enough inotify to be woken when something under some directories changes."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        self.watched: set[str] = set()

    def watch(self, directories: Iterable[str]) -> None:
        for d in directories:
            if d not in self.watched and self._add(self.fd, os.fsencode(d), _MASK) >= 0:
                self.watched.add(d)

    def wait(self, timeout: float) -> bool:
        """True if something changed within ``timeout`` seconds (events are drained)."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not ready:
            return False
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        os.close(self.fd)


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _SIGNATURE.pack(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _parse_named(item: tuple[str, Signature]) -> tuple[bytes, list[Problem | Parsed]] | None:
    """One file's parse cache key and results, or None when it cannot be read (``prime``)."""
    name = item[0]
    try:
        data = read_file(name)
    except OSError:
        return None
    return cache_key(name, data), parse_file(name, data)


class DirectorySource:
    """Keeps the World in step with manifest files under ``paths``. Start with ``start()``."""

    def __init__(
        self,
        paths: Iterable[str],
        world: World,
        stop: threading.Event,
        rescan: float = 2.0,
        cache: ParseCache | None = None,
    ) -> None:
        self.paths = list(paths)
        # The parse cache serves the first scan only (a restart with 10,000 unchanged files
        # parses none of them); it is saved then and dropped, so the running agent keeps no copy.
        self.cache = cache
        self.world = world
        self.stop = stop
        self.rescan = rescan
        self.signatures: dict[str, Signature] = {}
        self.good: set[str] = set()  # files read successfully at least once (the World holds their content)
        self.incomplete: set[str] = set()  # files never read successfully
        self._thread: threading.Thread | None = None
        self._inotify: Inotify | None = None
        self._scanned = False
        self._primed: dict[str, tuple[Signature, list[Problem | Parsed]]] = {}  # see prime()

    # --- scanning (also callable directly, e.g. from tests) ---

    def files_and_dirs(self) -> tuple[set[str], set[str]]:
        files: set[str] = set()
        dirs: set[str] = set()
        for raw in self.paths:
            path = Path(raw)
            if path.is_dir():
                dirs.add(str(path))
                seen: set[tuple[int, int]] = set()  # directories by (device, inode): symlink loops end here
                for root, subdirs, names in os.walk(path, followlinks=True):
                    try:
                        st = os.stat(root)
                    except OSError:
                        subdirs[:] = []
                        continue
                    if (st.st_dev, st.st_ino) in seen:
                        subdirs[:] = []
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    subdirs[:] = [d for d in subdirs if not d.startswith("..")]  # ConfigMap internals
                    dirs.add(root)
                    files.update(
                        os.path.join(root, n) for n in names if n.endswith(MANIFEST_SUFFIXES) and not n.startswith(".")
                    )
            else:
                files.add(raw)
                dirs.add(str(path.parent))
        return files, dirs

    def prime(self) -> int:
        """Read and parse every manifest now, on every CPU (``sources/fork.py``: call this before
        the agent starts any thread); the first scan then takes these results for each file whose
        signature is still the one seen here. Returns how many files were parsed (not cached).

        Only results are kept, never the files' bytes: a file the parse cache does not have is
        read again by whoever parses it, and cached under the digest of what that read gave."""
        files, _ = self.files_and_dirs()
        misses: list[tuple[str, Signature]] = []
        for name in sorted(files):
            sig = _signature(name)
            if sig is None:
                continue
            if self.cache is not None:
                try:
                    cached = self.cache.get(cache_key(name, read_file(name)))
                except OSError:
                    continue  # the scan reports it
                if cached is not None:
                    self._primed[name] = (sig, cached)
                    continue
            misses.append((name, sig))
        for (name, sig), parsed in zip(misses, fork.each(misses, _parse_named), strict=True):
            if parsed is None:
                continue  # unreadable now: the scan reports it
            key, results = parsed
            if self.cache is not None:
                self.cache.put(key, results)
            self._primed[name] = (sig, results)
        return len(misses)

    def scan(self) -> int:
        """Read every file that changed since the last scan; return how many were read."""
        first = not self._scanned
        started = time.monotonic()
        files, dirs = self.files_and_dirs()
        if self._inotify is not None:
            self._inotify.watch(d for d in dirs if os.path.isdir(d))
        read = 0
        for gone in sorted(set(self.signatures) - files):
            self._forget(gone)
        for name in sorted(files):
            if self.stop.is_set():
                return read  # stopping: the agent syncs nothing more, so what is left unread does not matter
            sig = _signature(name)
            if sig is None:
                if name in self.signatures:
                    self._forget(name)  # it was there: removed on purpose
                elif not self._scanned and name not in self.incomplete:
                    self._keep(name, [Problem(Origin(name), "", "no such file or directory")])
                continue
            if self.signatures.get(name) == sig:
                continue
            self.signatures[name] = sig
            self._read(name, sig)
            read += 1
        self.world.set_incomplete(SOURCE, bool(self.incomplete))
        self._scanned = True
        self._primed = {}
        if first:
            log.info(
                "manifests read",
                files=read,
                unusable=len(self.incomplete),
                seconds=round(time.monotonic() - started, 3),
            )
        if self.cache is not None:
            self._save_cache(self.cache)
            self.cache = None
        return read

    def _save_cache(self, cache: ParseCache) -> None:
        cache.save()
        for note in cache.notes:
            log.warning("cache ignored", reason=note)
        if cache.unsaved:
            log.debug("cache not written", reason=cache.unsaved)

    def _forget(self, name: str) -> None:
        self.signatures.pop(name, None)
        self.good.discard(name)
        self.incomplete.discard(name)
        self.world.replace_kind(file_source(name), None, {}, problems={})
        log.info("manifest file removed", file=name)

    def _read(self, name: str, sig: Signature | None = None) -> None:
        source = file_source(name)
        file_key: ObjectKey = (source, "", "", "")
        primed = self._primed.pop(name, None)
        if primed is not None and primed[0] == sig:
            results = primed[1]
        else:
            try:
                data = read_file(name)
            except OSError as err:
                self._keep(name, [Problem(Origin(name), "", f"cannot read: {err.strerror or err}")])
                return
            results = self._parsed(name, data)
        unreadable = next((item for item in results if isinstance(item, Problem)), None)
        if unreadable is not None:  # a document YAML itself fails on: the file as a whole is unusable
            self._keep(name, [unreadable])
            return
        new: dict[ObjectKey, tuple[Value, ...]] = {}
        problems: dict[ObjectKey, list[Problem]] = {}
        for parsed in results:
            if not isinstance(parsed, Problem):
                o = parsed.origin
                key: ObjectKey = (source, o.kind, o.namespace, o.name) if o else file_key
                if parsed.problems:
                    problems.setdefault(key, []).extend(parsed.problems)
                if key in new and parsed.values:
                    problems.setdefault(key, []).append(
                        Problem(o or Origin(name), "metadata.name", "duplicate object: the first is used")
                    )
                elif parsed.values:
                    new[key] = parsed.values
                elif parsed.failed and key not in new and (last := self.world.values(key)):
                    new[key] = last  # rejected: the last good value stays in force
        self.good.add(name)
        self.incomplete.discard(name)
        self.world.replace_kind(source, None, new, problems=problems)
        for plist in problems.values():
            for p in plist:
                log.error("manifest problem", file=name, problem=str(p))
        # one line per file after the first scan; the first sums them up (10,000 lines cost seconds)
        (log.info if self._scanned else log.debug)(
            "manifest file read", file=name, objects=len(new), problems=sum(map(len, problems.values()))
        )

    def _parsed(self, name: str, data: bytes) -> list[Problem | Parsed]:
        """What the file's bytes give: from the parse cache while there is one, parsed otherwise."""
        if self.cache is None:
            return parse_file(name, data)
        entry = cache_key(name, data)
        results = self.cache.get(entry)
        if results is None:
            results = parse_file(name, data)
            self.cache.put(entry, results)
        return results

    def _keep(self, name: str, problems: list[Problem]) -> None:
        """The file as a whole is unusable: keep its last good content and report why."""
        if name not in self.good:
            self.incomplete.add(name)
        self.world.report((file_source(name), "", "", ""), problems)
        for p in problems:
            log.error("manifest file unusable; its last good content stays in force", file=name, problem=str(p))

    # --- the watching thread ---

    def start(self) -> None:
        try:
            self._inotify = Inotify()
        except OSError as err:
            log.warning("inotify unavailable; polling the manifests", error=str(err), every=self.rescan)
        self.scan()
        self.world.mark_ready(SOURCE)
        self._thread = threading.Thread(target=self._run, name="manifests", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if self._inotify is not None:
                if self._inotify.wait(self.rescan):
                    self.stop.wait(0.05)  # let a writer finish (editors write, rename, chmod)
            else:
                self.stop.wait(self.rescan)
            if self.stop.is_set():
                break
            try:
                self.scan()
            except Exception as err:  # keep watching whatever one scan hit
                log.exception("manifest scan failed", error=str(err))

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
