"""A content-addressed cache of parsed manifest files, so that unchanged files are not read again.

Reading YAML and checking the objects is most of what ``ipvsctl diff`` and ``apply`` spend on
10,000 unchanged Services (on the host: 4.0 s; loading the same results from this cache: 0.2 s).
An entry is keyed by a digest of the file's name and its bytes (never its mtime: a file edited
within one second, or copied with its old mtime, is still seen as changed) and holds exactly
what parsing the file gave: its objects and its problems, so a cached run reports the same
mistakes as a parsing one.

The cache is one file, ``<state-dir>/cache/parse.pickle``, written whole to a temporary file and
renamed over the old one (two ipvsctl processes at once: the last rename wins, nobody reads a
torn file). It is never trusted:

- its header names the format, the ipvsctl version and a digest of the code that builds the
  parsed values (``CODE``): another version or changed code gives a cache that is ignored;
- a digest of the payload is checked before anything is decoded: a truncated or altered file is
  ignored, with a note saying so;
- it is decoded by an unpickler that builds only the value classes parsing produces
  (``_ALLOWED``), and only from a file that belongs to this user and nobody else may write;
- anything else wrong with it (unreadable, wrong types) also means: ignored, parsed afresh.

After a run the cache holds the entries of that run's files only, so it never grows beyond one
copy of the parsed manifests.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import stat
import tempfile
from pathlib import Path
from typing import Any

from ipvsctl import __version__

MAGIC = b"ipvsctl parse cache 1\n"
NAME = "parse.pickle"
_DIGEST = 32  # bytes of blake2b

# The modules whose code decides what a file parses to: a change to any of them invalidates the
# cache even when the version number stays the same (an editable install, a patched package).
_CODE_MODULES = (
    "errors.py",
    "model/k8s.py",
    "model/ipvs.py",
    "sources/parse.py",
    "sources/files.py",
    "sources/cache.py",
)

_ALLOWED = frozenset(
    {
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
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.blake2b(__version__.encode(), digest_size=_DIGEST)
    for module in _CODE_MODULES:
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
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not a parsed value")
        return super().find_class(module, name)


class ParseCache:
    """Entries found in the cache file, and the ones this run used or added."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.path = directory / NAME if directory else None
        self.notes: list[str] = []  # why the cache file was ignored, for a log line
        self.unsaved: str | None = None  # why it could not be written (no permission, for one)
        self.hits = 0
        self.misses = 0
        self._old: dict[bytes, list[Any]] = {}
        self._new: dict[bytes, list[Any]] = {}
        self._code = code_digest() if directory else b""
        self._read()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def get(self, entry: bytes) -> list[Any] | None:
        found = self._old.get(entry)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._new[entry] = found
        return found

    def put(self, entry: bytes, results: list[Any]) -> None:
        self._new[entry] = results

    def _read(self) -> None:
        if self.path is None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        except OSError as err:
            self.notes.append(f"parse cache {self.path} ignored: cannot open it: {err.strerror}")
            return
        with open(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
                self.notes.append(
                    f"parse cache {self.path} ignored: not a regular file of this user, writable by no one else"
                )
                return
            try:
                data = handle.read()
            except OSError as err:
                self.notes.append(f"parse cache {self.path} ignored: cannot read it: {err.strerror}")
                return
        self._old = self._decode(data)

    def _decode(self, data: bytes) -> dict[bytes, list[Any]]:
        head = len(MAGIC) + 2 * _DIGEST
        if not data.startswith(MAGIC) or len(data) < head:
            self.notes.append(f"parse cache {self.path} ignored: not a parse cache of this format")
            return {}
        code = data[len(MAGIC) : len(MAGIC) + _DIGEST]
        if code != self._code:
            self.notes.append(f"parse cache {self.path} ignored: written by another ipvsctl version or code")
            return {}
        checksum, payload = data[len(MAGIC) + _DIGEST : head], data[head:]
        if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != checksum:
            self.notes.append(f"parse cache {self.path} ignored: damaged (its checksum does not match)")
            return {}
        try:
            entries = _Unpickler(io.BytesIO(payload)).load()
        except Exception as err:  # anything an unreadable pickle raises: the cache is just not used
            self.notes.append(f"parse cache {self.path} ignored: unreadable ({type(err).__name__}: {err})")
            return {}
        if not isinstance(entries, dict) or not all(
            isinstance(k, bytes) and isinstance(v, list) for k, v in entries.items()
        ):
            self.notes.append(f"parse cache {self.path} ignored: not a mapping of entries")
            return {}
        return entries

    def save(self) -> None:
        """Write this run's entries, unless they are exactly what the file already holds."""
        if self.directory is None or self.path is None:
            return
        if self._new.keys() == self._old.keys() and self.misses == 0:
            return
        payload = pickle.dumps(self._new, protocol=pickle.HIGHEST_PROTOCOL)
        checksum = hashlib.blake2b(payload, digest_size=_DIGEST).digest()
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".parse.", dir=self.directory)
            try:
                with open(fd, "wb") as handle:  # mkstemp: mode 0600
                    handle.write(MAGIC + self._code + checksum)
                    handle.write(payload)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            self.unsaved = f"parse cache {self.path} not written: {err.strerror or err}"
