"""Manifest files, directories and stdin → a Snapshot (plus the problems found).

YAML is read with PyYAML's safe constructor only (no Python object tags, no custom tags) and
within fixed limits, because manifests may come from anyone who can write to a watched
directory (docs/security.md):

- a file holds at most ``MAX_FILE_BYTES``; it is read in pieces, never all at once past that;
- a node nests at most ``MAX_DEPTH`` levels: documents are composed from libyaml's event stream
  without recursion (libyaml's own composer recurses in C and crashes the process on deep
  nesting), so no input can exhaust the stack;
- aliases are never expanded, and the nodes they stand for count against ``MAX_ALIAS_NODES``
  per file: an alias bomb is an error, not a CPU or memory sink; an alias to a node that
  contains it is an error (Kubernetes refuses it too);
- a key twice in one mapping is an error (which value was meant?), as with kubectl;
- timestamps stay strings (as Kubernetes reads them), integers longer than ``MAX_INT_CHARS``
  characters are an error.

A document that fails costs only itself: the file is split at its ``---`` lines and the other
documents are still read (at most ``MAX_FILE_ERRORS`` failures are reported per file). Kinds
other than Service, EndpointSlice and Endpoints are skipped quietly, so a whole application's
manifests can be given.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ipvsctl.cache import ParseCache
from ipvsctl.cache import key as cache_key
from ipvsctl.errors import InputError, Origin, Problem
from ipvsctl.model.k8s import EndpointSlice, Service, Snapshot
from ipvsctl.sources import fork, parse
from ipvsctl.sources.parse import Node, display, parse_endpoint_slice, parse_endpoints, parse_service

MAX_FILE_BYTES = 16 * 1024 * 1024  # 16 MiB: >10,000 Services with their endpoints in one file
MAX_DEPTH = 256  # nesting levels of one node; real manifests stay well under 50
MAX_ALIAS_NODES = 100_000  # nodes that aliases stand for, per file (what expanding them would cost)
MAX_INT_CHARS = 100  # longer integers are an error (Python refuses > 4300 digits anyway)
MAX_FILE_ERRORS = 100  # documents reported as unreadable per file; the rest of the file is then skipped
MAX_OBJECT_PROBLEMS = 100  # problems reported per object (e.g. bad endpoints); the rest are counted
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")  # JSON is YAML; read faster (json_document)

_READ_PIECE = 1 << 20
_TAG = "tag:yaml.org,2002:"
_MERGE_TAG, _INT_TAG, _TIMESTAMP_TAG = _TAG + "merge", _TAG + "int", _TAG + "timestamp"
_STR_TAG, _VALUE_TAG, _SEQ_TAG, _MAP_TAG = _TAG + "str", _TAG + "value", _TAG + "seq", _TAG + "map"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "binary", "timestamp"))
_DOCUMENT_START = re.compile(rb"^---(?=[ \t\r\n]|$)", re.MULTILINE)


def expand_paths(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """Files as given, directories walked recursively for *.yaml/*.yml/*.json (sorted), '-' for stdin."""
    files: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        if raw == "-":
            files.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
            files.extend(found)
        elif path.is_file():
            files.append(raw)
        else:
            problems.append(Problem(Origin(raw), "", "no such file or directory"))
    return files, problems


def read_file(name: str) -> bytes:
    """A file's bytes ('-': standard input), at most ``MAX_FILE_BYTES`` + 1 of them (more is an error
    ``documents`` reports). Read in pieces: a huge file costs no more memory than the limit."""
    if name == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text stream (tests replace stdin)
            return sys.stdin.read(MAX_FILE_BYTES + 1).encode("utf-8", "surrogateescape")
        return _read_limited(stream)
    # O_NONBLOCK: a FIFO named *.yaml must not block the reader until someone writes to it.
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb", closefd=True) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return _read_limited(handle)


def _read_limited(stream: Any) -> bytes:
    pieces: list[bytes] = []
    size = 0
    while size <= MAX_FILE_BYTES:
        piece = stream.read(min(_READ_PIECE, MAX_FILE_BYTES + 1 - size))
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)


class LimitExceeded(yaml.constructor.ConstructorError):
    """A document goes past one of the input limits (nesting, aliases, integer size)."""


@dataclass
class _Budget:
    """What aliases may still stand for in one file."""

    alias_nodes: int = MAX_ALIAS_NODES


class _Collection:
    """A list or mapping being read: its items so far and how many nodes it holds."""

    __slots__ = ("anchor", "data", "key", "key_is_merge", "key_mark", "mark", "merges", "size")

    def __init__(self, mapping: bool, anchor: str | None, mark: yaml.Mark) -> None:
        self.data: Any = {} if mapping else []
        self.anchor = anchor
        self.mark = mark
        self.size = 1  # nodes in it, counting what aliases stand for
        self.key: Any = _NO_KEY  # a mapping's key waiting for its value
        self.key_is_merge = False
        self.key_mark = mark
        self.merges: list[Any] = []  # values of '<<' keys, in order

    def add(self, value: Any, size: int, tag: str | None, mark: yaml.Mark) -> None:
        self.size += size
        data = self.data
        if isinstance(data, list):
            data.append(value)
        elif self.key is _NO_KEY:
            try:
                hash(value)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", self.mark, "found unhashable key", mark
                ) from None
            self.key, self.key_mark = value, mark
            self.key_is_merge = tag == _MERGE_TAG
        else:
            key, self.key = self.key, _NO_KEY
            if self.key_is_merge:
                merges = value if isinstance(value, list) else [value]
                for merged in merges:
                    if not isinstance(merged, dict):
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping",
                            self.mark,
                            f"expected a mapping or list of mappings for merging, but found {parse.kind_of(merged)}",
                            mark,
                        )
                self.merges.append(value)
            elif key in data and any(type(k) is type(key) for k in data if k == key):  # not 1 and true
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", self.mark, f"found duplicate key {_short(key)}", self.key_mark
                )
            else:
                data[key] = value

    def finish(self) -> Any:
        """The value: a list, or the mapping with its merges under its own keys (YAML's '<<')."""
        if not self.merges:
            return self.data
        merged: dict[Any, Any] = {}
        for value in self.merges:  # a later '<<' wins; within one, the first mapping listed wins
            for mapping in reversed(value) if isinstance(value, list) else (value,):
                merged.update(mapping)
        merged.update(self.data)
        return merged


_NO_KEY = object()
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Loader(yaml.CSafeLoader):
    """libyaml's parser and PyYAML's safe scalar constructors, with values built straight from the
    event stream: no node tree is kept (a node costs ~100x its text), nothing recurses, and an
    alias gives the very value of its anchor (never a copy)."""

    # Timestamps are strings, as in Kubernetes (a Service may be called 2024-01-01).
    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_bounded_int(self, node: ScalarNode) -> int:
        if len(node.value) > MAX_INT_CHARS:
            raise LimitExceeded(None, None, f"an integer of {len(node.value)} characters is too large", node.start_mark)
        return self.construct_yaml_int(node)

    # Plain (untagged, unquoted) scalars already read, by text: keys and small values repeat
    # thousands of times across a directory of manifests, and a plain scalar's value follows from
    # its text alone. Only immutable values are kept (str, int, float, bool, None); emptied when full.
    _plain: ClassVar[dict[str, tuple[Any, str]]] = {}
    _PLAIN_MAX: ClassVar[int] = 4096

    def _scalar(self, event: ScalarEvent) -> tuple[Any, str]:
        tag = event.tag
        if tag is None and event.implicit[0]:
            found = self._plain.get(event.value)
            if found is None:
                tag = self.resolve(ScalarNode, event.value, event.implicit)
                found = self._construct(event, tag), tag
                if type(found[0]) in _IMMUTABLE:
                    if len(self._plain) >= self._PLAIN_MAX:
                        self._plain.clear()
                    self._plain[event.value] = found
            return found
        if tag is None or tag == "!":
            tag = self.resolve(ScalarNode, event.value, event.implicit)
        return self._construct(event, tag), tag

    def _construct(self, event: ScalarEvent, tag: str) -> Any:
        if tag in (_STR_TAG, _VALUE_TAG, _MERGE_TAG):  # '<<' and '=' are strings unless they are keys
            return event.value
        if tag not in _SCALAR_TAGS:  # python/*, custom !tags, collection tags on a scalar
            raise yaml.constructor.ConstructorError(
                None, None, f"could not determine a constructor for the tag {_short(tag, 80)}", event.start_mark
            )
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        try:
            return self.yaml_constructors[tag](self, node)
        except yaml.YAMLError:
            raise
        except Exception as err:  # !!timestamp 2001-13-45, !!float x, !!bool maybe, ...
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_short(event.value)} as {tag.rsplit(':', 1)[-1]}: {err}", event.start_mark
            ) from None

    def load_bounded(self, budget: _Budget) -> Any:
        """The next document's value."""
        self.get_event()  # DOCUMENT-START
        anchors: dict[str, tuple[Any, int]] = {}  # value and size; size -1: the collection is still open
        stack: list[_Collection] = []
        root: Any = None
        while True:
            event = self.get_event()
            kind = type(event)
            tag: str | None = None
            mark = event.start_mark
            if kind is ScalarEvent:
                value, tag = self._scalar(event)
                size = 1
                if event.anchor is not None:
                    _anchor(anchors, event, value, 1)
            elif kind is AliasEvent:
                found = anchors.get(event.anchor)
                if found is None:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {_short(event.anchor)}", event.start_mark
                    )
                value, size = found
                if size < 0:
                    raise yaml.composer.ComposerError(
                        None, None, f"alias {_short(event.anchor)} refers to a node that contains it", event.start_mark
                    )
                budget.alias_nodes -= size
                if budget.alias_nodes < 0:
                    raise LimitExceeded(
                        None,
                        None,
                        f"aliases stand for more than {MAX_ALIAS_NODES} nodes in this file (an alias bomb?)",
                        event.start_mark,
                    )
            elif kind is SequenceStartEvent or kind is MappingStartEvent:
                mapping = kind is MappingStartEvent
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self.resolve(MappingNode if mapping else SequenceNode, None, event.implicit)
                if tag != (_MAP_TAG if mapping else _SEQ_TAG):  # python/*, !!set, !!omap, custom !tags
                    raise yaml.constructor.ConstructorError(
                        None, None, f"could not determine a constructor for the tag {_short(tag, 80)}", event.start_mark
                    )
                if event.anchor is not None:
                    _anchor(anchors, event, None, -1)
                stack.append(_Collection(mapping, event.anchor, event.start_mark))
                if len(stack) > MAX_DEPTH:
                    raise LimitExceeded(None, None, f"nests deeper than {MAX_DEPTH} levels", event.start_mark)
                continue
            elif kind is SequenceEndEvent or kind is MappingEndEvent:
                done = stack.pop()
                value, size, mark = done.finish(), done.size, done.mark
                if done.anchor is not None:
                    anchors[done.anchor] = (value, size)
            elif kind is DocumentEndEvent:
                return root
            else:  # pragma: no cover - libyaml emits nothing else inside a document
                raise yaml.composer.ComposerError(None, None, f"unexpected {event}", event.start_mark)
            if stack:
                stack[-1].add(value, size, tag, mark)
            else:
                root = value


def _anchor(anchors: dict[str, tuple[Any, int]], event: Any, value: Any, size: int) -> None:
    if event.anchor in anchors:
        raise yaml.composer.ComposerError(
            f"found duplicate anchor {_short(event.anchor)}; first occurrence",
            None,
            "second occurrence",
            event.start_mark,
        )
    anchors[event.anchor] = (value, size)


_Loader.add_constructor(_INT_TAG, _Loader.construct_bounded_int)

# What a broken document raises: YAML errors, and what constructors raise on bad values
# (an explicit !!timestamp that is no date, !!float that is no number).
_DOCUMENT_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError)


def _load_all(text: str, budget: _Budget) -> Iterator[Any]:
    """Every document of ``text``, within the limits."""
    loader = _Loader(text)
    try:
        loader.get_event()  # STREAM-START
        while not loader.check_event(StreamEndEvent):
            yield loader.load_bounded(budget)
    finally:
        loader.dispose()


def _describe(err: BaseException, first_line: int, data: bytes) -> str:
    """Why a document failed, with its line and column in the file."""
    if isinstance(err, RecursionError):
        return "YAML nests too deeply"
    if isinstance(err, yaml.reader.ReaderError):
        before = data[: max(err.position, 0)]
        line = first_line + before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        return f"invalid YAML (line {line}, column {column}): {err.reason}"
    if isinstance(err, yaml.YAMLError):
        mark = getattr(err, "problem_mark", None)
        where = f" (line {first_line + mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        return f"invalid YAML{where}: {problem}"
    return f"invalid YAML: {type(err).__name__}: {str(err)[:200]}"


def _chunks(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The file cut before each ``---`` line (and the directives just above it): (first line, bytes).

    YAML forbids ``---`` at the start of a line inside any scalar, so each piece is one document."""
    cuts = [0]
    for match in _DOCUMENT_START.finditer(data):
        cut = match.start()
        while cut > cuts[-1]:  # take %YAML / %TAG directives along with their document
            previous = data.rfind(b"\n", 0, cut - 1) + 1
            if not data.startswith(b"%", previous):
                break
            cut = previous
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(len(data))
    line = 0
    for start, stop in itertools.pairwise(cuts):
        yield line, data[start:stop]
        line += data.count(b"\n", start, stop)


def documents(name: str, data: bytes | str) -> Iterator[tuple[int, Any] | Problem]:
    """Each YAML document (index, value) in a file, or a Problem for each document YAML itself fails on.

    The whole file is tried first (PyYAML's reading exactly); if any document fails, the file is
    read again piece by piece, so one broken document does not hide the others."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if len(raw) > MAX_FILE_BYTES:
        yield Problem(Origin(name), "", f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if raw.lstrip()[:1] in (b"{", b"["):
            value = json_document(text)
            if value is not _NOT_JSON:
                yield 0, value
                return
        try:
            docs = list(_load_all(text, _Budget()))
        except _DOCUMENT_ERRORS:
            pass
        else:
            yield from enumerate(docs)
            return
    yield from _documents_apart(name, raw)


_NOT_JSON = object()


class _NotPlainJSON(ValueError):
    """JSON that YAML might read differently, or that the YAML reader has the error message for."""


# YAML allows an implicit key of at most 1024 characters as written; an escaped JSON key may be six
# times its length, so a longer key than this goes to the YAML reader, which says what it makes of it.
_LONGEST_KEY = 1024 // 6 - 2


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        raise _NotPlainJSON("duplicate key")
    if any(len(key) > _LONGEST_KEY for key in mapping):
        raise _NotPlainJSON("a key YAML may not take as it is written")
    return mapping


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_CHARS:
        raise _NotPlainJSON("integer too long")
    return int(text)


# What YAML 1.1 reads as a float (PyYAML's resolver); JSON's 1e5 is a string there.
_YAML_FLOAT = next(
    regexp for tag, regexp in yaml.resolver.Resolver.yaml_implicit_resolvers["1"] if tag == _TAG + "float"
)
# Characters that YAML reads otherwise than JSON when written raw: those PyYAML's reader refuses,
# and the line breaks NEL, LS and PS, which YAML folds inside a quoted string (escaped, as
# "\u0085", they read the same in both).
_NOT_PLAIN = re.compile("[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# A UTF-16 surrogate escape ("\\ud83d\\ude00"): JSON joins the pair into one character, YAML
# refuses it. Go's encoder (kubectl) writes such characters raw, so this costs nothing in practice.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _yaml_float(text: str) -> float:
    if not _YAML_FLOAT.match(text):
        raise _NotPlainJSON("a number YAML reads as a string")
    return float(text)


def _not_a_yaml_constant(text: str) -> Any:
    raise _NotPlainJSON(f"{text} is not JSON")  # NaN, Infinity: Python's extension, not JSON


def json_document(text: str) -> Any:
    """The value of a file that is one JSON document, which is what YAML would read from it; or
    ``_NOT_JSON`` when it is not JSON, or is JSON the YAML reader must see (a duplicate key, an
    integer past the limit, nesting past ``MAX_DEPTH``, a character YAML refuses: its errors say
    where; NaN, Infinity and numbers such as 1e5, which YAML 1.1 reads as strings; an escaped
    surrogate pair, which YAML refuses).

    ``kubectl get -o json`` output, the usual JSON manifest, is read this way about ten times as
    fast as through libyaml (docs/performance.md); JSON is YAML, so nothing else changes."""
    if _NOT_PLAIN.search(text) or _SURROGATE_ESCAPE.search(text):
        return _NOT_JSON
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_int=_bounded_int,
            parse_float=_yaml_float,
            parse_constant=_not_a_yaml_constant,
        )
    except (ValueError, RecursionError):
        return _NOT_JSON
    return value if _within_depth(value) else _NOT_JSON


def _within_depth(root: Any) -> bool:
    """Whether no list or mapping in ``root`` nests deeper than ``MAX_DEPTH`` levels (no recursion)."""
    if type(root) is not dict and type(root) is not list:
        return True
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return True


def _documents_apart(name: str, raw: bytes) -> Iterator[tuple[int, Any] | Problem]:
    """Each ``---`` piece of the file on its own; a broken piece is one Problem."""
    budget = _Budget()
    index = errors = 0
    for first_line, piece in _chunks(raw):
        if errors >= MAX_FILE_ERRORS:
            message = f"more than {MAX_FILE_ERRORS} invalid documents: the rest of the file is skipped"
            yield Problem(Origin(name, index), "", message)
            return
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError as err:
            before = piece[: err.start]
            line = first_line + before.count(b"\n") + 1
            column = len(before) - (before.rfind(b"\n") + 1) + 1
            message = f"not UTF-8 (line {line}, column {column}): byte {piece[err.start]:#04x}"
            if piece.startswith((b"\xff\xfe", b"\xfe\xff")):
                message += " (a UTF-16 file? save it as UTF-8)"
            yield Problem(Origin(name, index), "", message)
            index += 1
            errors += 1
            continue
        try:
            for doc in _load_all(text, budget):
                yield index, doc
                index += 1
        except _DOCUMENT_ERRORS as err:
            yield Problem(Origin(name, index), "", _describe(err, first_line, piece))
            index += 1
            errors += 1


def single_document(name: str, data: bytes) -> Any:
    """The value of a file meant to hold one YAML document (a configuration file), read within
    the limits manifests are read with; None for an empty file. Raises ValueError saying what is
    wrong (not UTF-8, invalid YAML with its line, too deep, more than one document)."""
    values: list[Any] = []
    for item in documents(name, data):
        if isinstance(item, Problem):
            raise ValueError(item.message)
        values.append(item[1])
    if len(values) > 1:
        raise ValueError(f"holds {len(values)} YAML documents, not one")
    return values[0] if values else None


def objects(doc: Any) -> Iterator[tuple[str, Any]]:
    """Flatten `kind: List` (what `kubectl get -o yaml` prints); yield (field prefix, object).

    A List whose ``items`` is not a list yields an InputError in place of the object."""
    if isinstance(doc, dict) and doc.get("kind") == "List" and "items" in doc:
        items = doc["items"]
        if isinstance(items, list):
            for i, item in enumerate(items):
                yield f"items[{i}]", item
        elif items is not None:
            yield "items", Node(items, "items").fail(f"must be a list, got {parse.kind_of(items)}")
    elif doc is not None:
        yield "", doc


@dataclass(frozen=True)
class Inputs:
    """The manifest files of one run, read: each file's name with its bytes (or why it could not be
    read) and its cache key, plus the paths that named nothing."""

    files: tuple[tuple[str, bytes | Problem, bytes], ...]
    problems: tuple[Problem, ...] = ()

    @property
    def digest(self) -> bytes:
        """One digest of everything the run reads: changes when any file, name or problem does."""
        digest = hashlib.blake2b(digest_size=32)
        for _, data, entry in self.files:
            digest.update(entry if not isinstance(data, Problem) else str(data).encode("utf-8", "surrogateescape"))
        for problem in self.problems:
            digest.update(str(problem).encode("utf-8", "surrogateescape"))
        return digest.digest()


def read_inputs(paths: Iterable[str]) -> Inputs:
    """Every file the paths give, read (each once: what is digested is what gets parsed)."""
    names, problems = expand_paths(paths)
    files: list[tuple[str, bytes | Problem, bytes]] = []
    for name in names:
        try:
            data = read_file(name)
        except OSError as err:
            files.append((name, Problem(Origin(name), "", f"cannot read: {err.strerror or err}"), b""))
            continue
        files.append((name, data, cache_key(name, data)))
    return Inputs(tuple(files), tuple(problems))


def load(paths: Iterable[str], cache: ParseCache | None = None) -> Snapshot:
    """Read every object from the given paths into one Snapshot. Never raises for what the files hold.

    A file whose name and bytes are in ``cache`` is not parsed again; the files that are parsed
    are read on two CPUs when there are many (``sources/fork.py``). The result is the same
    either way. The caller saves the cache."""
    if cache is None or not cache.enabled:
        files, problems = expand_paths(paths)
        return _snapshot(fork.each(files, read_objects), problems)
    return load_inputs(read_inputs(paths), cache)


def load_inputs(inputs: Inputs, cache: ParseCache) -> Snapshot:
    """``load`` for files already read."""
    return _snapshot(_each_file(inputs, cache), list(inputs.problems))


def _snapshot(each: Iterable[list[Problem | Parsed]], problems: list[Problem]) -> Snapshot:
    services: dict[tuple[str, str], Service] = {}
    slices: list[EndpointSlice] = []
    for results in each:
        for item in results:
            if isinstance(item, Problem):
                problems.append(item)
            else:
                merge(item, services, slices, problems)
    return Snapshot(tuple(services.values()), tuple(slices), tuple(problems))


def _each_file(inputs: Inputs, cache: ParseCache) -> Iterator[list[Problem | Parsed]]:
    """What each file gives, in order: from the cache where its entry is there, parsed otherwise."""
    found: list[list[Problem | Parsed] | None] = []
    wanted: list[tuple[str, bytes]] = []
    entries: list[bytes] = []
    for name, data, entry in inputs.files:
        if isinstance(data, Problem):
            found.append([data])
            continue
        results = cache.get(entry)
        if results is None:
            wanted.append((name, data))
            entries.append(entry)
        found.append(results)
    parsed = iter(fork.each(wanted, _parse_item))
    kept = iter(entries)
    for results in found:
        if results is None:
            results = next(parsed)
            cache.put(next(kept), results)
        yield results


def _parse_item(item: tuple[str, bytes]) -> list[Problem | Parsed]:
    return parse_file(*item)


def read_objects(name: str) -> list[Problem | Parsed]:
    """What one file gives, in order: each object parsed, and each problem YAML itself found."""
    try:
        data = read_file(name)
    except OSError as err:
        return [Problem(Origin(name), "", f"cannot read: {err.strerror or err}")]
    return parse_file(name, data)


def parse_file(name: str, data: bytes) -> list[Problem | Parsed]:
    """What the bytes of file ``name`` give, in order: each object parsed, each problem found."""
    out: list[Problem | Parsed] = []
    for item in documents(name, data):
        if isinstance(item, Problem):
            out.append(item)
            continue
        index, doc = item
        for prefix, obj in objects(doc):
            out.append(parse_object(Origin(name, index), prefix, obj))
    return out


def merge(
    parsed: Parsed,
    services: dict[tuple[str, str], Service],
    slices: list[EndpointSlice],
    problems: list[Problem],
) -> None:
    """Add one object's values to ``services``/``slices`` (the first of two equal Services wins)
    and its problems to ``problems``."""
    problems.extend(parsed.problems)
    for value in parsed.values:
        if isinstance(value, Service):
            if (value.namespace, value.name) in services:
                problems.append(
                    Problem(value.origin, "metadata.name", "duplicate Service: the first definition is used")
                )
            else:
                services[(value.namespace, value.name)] = value
        else:
            slices.append(value)


@dataclass(frozen=True)
class Parsed:
    """One object's values (a v1 Endpoints object gives one slice per subset) and its problems.

    ``origin`` names the object (kind, namespace, name) when it is one ipvsctl reads; ``failed``:
    the object was rejected as a whole (values is then empty)."""

    origin: Origin | None
    values: tuple[Service | EndpointSlice, ...] = ()
    problems: tuple[Problem, ...] = ()
    failed: bool = False


WANTED = {("Service", "v1"), ("EndpointSlice", "discovery.k8s.io/v1"), ("Endpoints", "v1")}


def _service_name(kind: str, name: object, meta: dict[str, Any]) -> str:
    """The Service an endpoint object belongs to, as far as a rejected object still says it."""
    if kind == "Endpoints":
        return name if isinstance(name, str) else ""
    if kind == "EndpointSlice":
        labels = meta.get("labels")
        owner = labels.get(parse.SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
        return owner if isinstance(owner, str) else ""
    return ""


def parse_object(origin: Origin, prefix: str, obj: Any) -> Parsed:
    if isinstance(obj, InputError):  # from objects(): not an object at all
        return Parsed(None, (), (Problem(origin, obj.field, obj.message),), True)
    if not isinstance(obj, dict):
        problem = Problem(origin, prefix, f"a Kubernetes object must be a mapping, not {parse.kind_of(obj)}")
        return Parsed(None, (), (problem,), True)
    kind, api = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api, str) or (kind, api) not in WANTED:
        return Parsed(None)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    ns, nm = meta.get("namespace") or "default", meta.get("name") or ""
    kind, ns = parse.intern(kind), parse.intern(ns) if isinstance(ns, str) else ns  # shared across objects
    origin = replace(origin, kind=kind, namespace=display(ns), name=display(nm))
    node = Node(obj, prefix)
    endpoint_errors: list[InputError] = []
    values: list[Service | EndpointSlice] = []
    problems: list[Problem] = []
    failed = False
    try:
        if kind == "Service":
            values.append(replace(parse_service(node), origin=origin))
        elif kind == "EndpointSlice":
            es = parse_endpoint_slice(node, endpoint_errors)
            if es is not None:
                values.append(replace(es, origin=origin))
        else:
            values.extend(replace(es, origin=origin) for es in parse_endpoints(node, endpoint_errors))
    except InputError as err:
        problems.append(Problem(origin, err.field, err.message, holds=_service_name(kind, nm, meta)))
        failed = True
    except RecursionError:
        problems.append(Problem(origin, prefix, "object nests too deeply", holds=_service_name(kind, nm, meta)))
        failed = True
    problems.extend(
        Problem(origin, err.field, f"{err.message} (endpoint ignored)") for err in endpoint_errors[:MAX_OBJECT_PROBLEMS]
    )
    if len(endpoint_errors) > MAX_OBJECT_PROBLEMS:
        more = len(endpoint_errors) - MAX_OBJECT_PROBLEMS
        field = "subsets" if kind == "Endpoints" else "endpoints"
        field = f"{prefix}.{field}" if prefix else field
        problems.append(Problem(origin, field, f"{more} more endpoints ignored for the same kind of reasons"))
    return Parsed(origin, tuple(values), tuple(problems), failed)
