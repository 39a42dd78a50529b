"""Caches of what manifest files were read and translated into, so unchanged input costs no work.

Reading YAML and checking the objects is most of what ``ipvsctl diff`` and ``apply`` spend on
10,000 unchanged Services (on the host: 4.0 s; loading the same results from a cache: 0.2 s),
and translating them most of the rest. Two caches, both under ``<state-dir>/cache``:

- **parse** (``parse.pickle``): per file, keyed by a digest of its name and its bytes (never its
  mtime: a file edited within one second, or copied with its old mtime, is still seen as
  changed), exactly what parsing the file gave: its objects and its problems, so a cached run
  reports the same mistakes as a parsing one. It holds the last run's files only.
- **translation** (``translation.pickle``): the last run's whole ``Desired`` state, keyed by the
  digests of every file in order and the run's ``Settings``. A no-op ``diff`` then reads and
  digests the files, loads one value and reads the kernel.

Each is one file written whole to a temporary file and renamed over the old one (two ipvsctl
processes at once: the last rename wins, nobody reads a torn file). Neither is ever trusted:

- its header names the format and a digest of the ipvsctl version and of the code that builds
  the cached values (``CODE_MODULES``): another version or changed code gives a cache that is
  ignored;
- a digest of the payload is checked before anything is decoded: a truncated or altered file is
  ignored, with a note saying so;
- it is decoded by an unpickler that builds only the value classes cached values are made of
  (``ALLOWED``), and only from a file that belongs to this user and nobody else may write;
- anything else wrong with it (unreadable, wrong types) also means: ignored, built afresh.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import pickle
import stat
import tempfile
from pathlib import Path
from typing import Any

from ipvsctl import __version__

MAGIC = b"ipvsctl cache 1\n"
PARSE = "parse.pickle"
TRANSLATION = "translation.pickle"
_DIGEST = 32  # bytes of blake2b
CHUNK = 500  # entries of a cached dict per pickle (_dump_parts)

# The modules whose code decides what a file parses and translates to: a change to any of them
# invalidates the caches even when the version number stays the same (an editable install).
CODE_MODULES = (
    "cache.py",
    "errors.py",
    "model/k8s.py",
    "model/ipvs.py",
    "model/desired.py",
    "sources/parse.py",
    "sources/files.py",
    "translate.py",
    "endpoints.py",
    "options.py",
    "rotation.py",
    "checks/spec.py",
    "settings.py",
)

ALLOWED = frozenset(
    {
        ("builtins", "frozenset"),
        ("builtins", "set"),
        ("pathlib", "PosixPath"),
        ("ipvsctl.model.desired", "Desired"),
        ("ipvsctl.model.desired", "DesiredService"),
        ("ipvsctl.model.desired", "Owner"),
        ("ipvsctl.model.desired", "RealServers"),
        ("ipvsctl.model.ipvs", "ServiceKey"),
        ("ipvsctl.model.ipvs", "RealKey"),
        ("ipvsctl.model.ipvs", "RealServer"),
        ("ipvsctl.model.ipvs", "RealServerState"),
        ("ipvsctl.model.ipvs", "Stats"),
        ("ipvsctl.model.ipvs", "VirtualServer"),
        ("ipvsctl.model.ipvs", "Forward"),
        ("ipvsctl.model.ipvs", "ServiceFlag"),
        ("ipaddress", "IPv4Address"),
        ("ipaddress", "IPv6Address"),
        ("ipvsctl.errors", "Origin"),
        ("ipvsctl.errors", "Problem"),
        ("ipvsctl.model.ipvs", "Protocol"),
        ("ipvsctl.model.k8s", "ServicePort"),
        ("ipvsctl.model.k8s", "Service"),
        ("ipvsctl.model.k8s", "EndpointPort"),
        ("ipvsctl.model.k8s", "Endpoint"),
        ("ipvsctl.model.k8s", "Endpoints"),
        ("ipvsctl.model.k8s", "EndpointSlice"),
        ("ipvsctl.sources.files", "Parsed"),
    }
)


def code_digest() -> bytes:
    """A digest of the ipvsctl version and of the code that builds parsed values."""
    package = Path(__file__).resolve().parent
    digest = hashlib.blake2b(__version__.encode(), digest_size=_DIGEST)
    for module in CODE_MODULES:
        try:
            digest.update((package / module).read_bytes())
        except OSError:
            digest.update(b"\0missing " + module.encode())
    return digest.digest()


def key(name: str, data: bytes) -> bytes:
    """What a file's entry is found by: its name (problems name the file) and its bytes."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=_DIGEST)
    digest.update(b"\0")
    digest.update(data)
    return digest.digest()


class _Unpickler(pickle.Unpickler):
    """Builds only the value classes that parsing produces; anything else fails the cache."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a cached value")
        return super().find_class(module, name)


def read_sealed(path: Path, code: bytes, notes: list[str]) -> Any:
    """The value in cache file ``path``, or None when there is none or it is not to be trusted
    (then ``notes`` says why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        notes.append(f"cache {path} ignored: cannot open it: {err.strerror}")
        return None
    with open(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            notes.append(f"cache {path} ignored: not a regular file of this user, writable by no one else")
            return None
        try:
            data = handle.read()
        except OSError as err:
            notes.append(f"cache {path} ignored: cannot read it: {err.strerror}")
            return None
    head = len(MAGIC) + 2 * _DIGEST
    if not data.startswith(MAGIC) or len(data) < head:
        notes.append(f"cache {path} ignored: not an ipvsctl cache of this format")
        return None
    if data[len(MAGIC) : len(MAGIC) + _DIGEST] != code:
        notes.append(f"cache {path} ignored: written by another ipvsctl version or code")
        return None
    checksum, payload = data[len(MAGIC) + _DIGEST : head], data[head:]
    if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != checksum:
        notes.append(f"cache {path} ignored: damaged (its checksum does not match)")
        return None
    try:
        return _load_parts(payload)
    except Exception as err:  # anything an unreadable pickle raises: the cache is just not used
        notes.append(f"cache {path} ignored: unreadable ({type(err).__name__}: {err})")
        return None


def _load_parts(payload: bytes) -> Any:
    """What ``_dump_parts`` wrote: its one value, or the dict its parts make together."""
    stream = io.BytesIO(payload)
    parts = [_Unpickler(stream).load()]
    while stream.tell() < len(payload):
        parts.append(_Unpickler(stream).load())
    if len(parts) == 1:
        return parts[0]
    merged: dict[Any, Any] = {}
    for part in parts:
        if not isinstance(part, dict):
            raise pickle.UnpicklingError("a part of a chunked cache is not a mapping")
        merged.update(part)
    return merged


def _dump_parts(value: Any) -> bytes:
    """``value`` pickled; a dict of more than ``CHUNK`` entries as one pickle per ``CHUNK`` of them.

    One pickle of the parse cache of 10,000 files needs 23 MB while it is made (the pickler keeps
    every object it has written until the end, to share repeats), six times the 3.8 MB it
    writes; in parts of ``CHUNK`` files it needs about one MB more than the bytes it writes,
    and shares repeats within each part only (3,764,148 bytes instead of 3,760,825)."""
    protocol = pickle.HIGHEST_PROTOCOL
    if not isinstance(value, dict) or len(value) <= CHUNK:
        return pickle.dumps(value, protocol=protocol)
    out = io.BytesIO()
    items = iter(value.items())
    while part := dict(itertools.islice(items, CHUNK)):
        pickle.Pickler(out, protocol=protocol).dump(part)
    return out.getvalue()


def write_sealed(path: Path, code: bytes, value: Any) -> str | None:
    """Write ``value`` to cache file ``path`` (atomically, mode 0600); why not, when it could not be."""
    payload = _dump_parts(value)
    checksum = hashlib.blake2b(payload, digest_size=_DIGEST).digest()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", dir=path.parent)
        try:
            with open(fd, "wb") as handle:  # mkstemp: mode 0600
                handle.write(MAGIC + code + checksum)
                handle.write(payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        return f"cache {path} not written: {err.strerror or err}"
    return None


class ParseCache:
    """Entries found in the parse cache file (read at the first lookup), and this run's entries."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.path = directory / PARSE if directory else None
        self.notes: list[str] = []  # why a cache file was ignored, for a log line
        self.unsaved: str | None = None  # why it could not be written (no permission, for one)
        self.hits = 0
        self.misses = 0
        self._old: dict[bytes, list[Any]] | None = None
        self._new: dict[bytes, list[Any]] = {}
        self.code = code_digest() if directory else b""

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def get(self, entry: bytes) -> list[Any] | None:
        if self._old is None:
            self._old = self._read()
        found = self._old.get(entry)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._new[entry] = found
        return found

    def put(self, entry: bytes, results: list[Any]) -> None:
        self._new[entry] = results

    def _read(self) -> dict[bytes, list[Any]]:
        if self.path is None:
            return {}
        entries = read_sealed(self.path, self.code, self.notes)
        if entries is None:
            return {}
        if not isinstance(entries, dict) or not all(
            isinstance(k, bytes) and isinstance(v, list) for k, v in entries.items()
        ):
            self.notes.append(f"cache {self.path} ignored: not a mapping of entries")
            return {}
        return entries

    def save(self) -> None:
        """Write this run's entries, unless they are exactly what the file already holds."""
        if self.path is None or self._old is None:
            return
        if self._new.keys() == self._old.keys() and self.misses == 0:
            return
        self.unsaved = write_sealed(self.path, self.code, self._new)


class TranslationCache:
    """The last run's translation, found again when every file and the settings are the same."""

    def __init__(self, directory: Path | None, code: bytes | None = None) -> None:
        self.path = directory / TRANSLATION if directory else None
        self.code = code if code is not None else (code_digest() if directory else b"")
        self.notes: list[str] = []
        self.unsaved: str | None = None

    @staticmethod
    def key(inputs: bytes, settings: object) -> bytes:
        """What a translation is found by: the files' digest and the settings it was made with."""
        digest = hashlib.blake2b(inputs, digest_size=_DIGEST)
        digest.update(repr(settings).encode("utf-8", "surrogateescape"))
        return digest.digest()

    def get(self, key: bytes) -> Any:
        if self.path is None:
            return None
        found = read_sealed(self.path, self.code, self.notes)
        if found is None:
            return None
        if not (isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], bytes)):
            self.notes.append(f"cache {self.path} ignored: not a translation")
            return None
        return found[1] if found[0] == key else None

    def put(self, key: bytes, desired: object) -> None:
        if self.path is not None:
            self.unsaved = write_sealed(self.path, self.code, (key, desired))
