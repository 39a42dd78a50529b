"""Manifest files, directories and stdin → a Snapshot (plus the problems found).

Only ``yaml.safe_load`` semantics: no Python object tags. Kinds other than Service,
EndpointSlice and Endpoints are skipped quietly, so a whole application's manifests can be given.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ipvsctl.errors import InputError, Origin, Problem
from ipvsctl.model.k8s import EndpointSlice, Service, Snapshot
from ipvsctl.sources.parse import Node, parse_endpoint_slice, parse_endpoints, parse_service

MAX_FILE_BYTES = 64 * 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")

try:  # the C loader is ~10x faster and just as safe
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader


def expand_paths(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """Files as given, directories walked recursively for *.yaml/*.yml (sorted), '-' for stdin."""
    files: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        if raw == "-":
            files.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
            files.extend(found)
        elif path.is_file():
            files.append(raw)
        else:
            problems.append(Problem(Origin(raw), "", "no such file or directory"))
    return files, problems


def read_text(name: str) -> str:
    if name == "-":
        return sys.stdin.read(MAX_FILE_BYTES + 1)
    with open(name, encoding="utf-8") as handle:
        return handle.read(MAX_FILE_BYTES + 1)


def documents(name: str, text: str) -> Iterator[tuple[int, Any] | Problem]:
    """Each YAML document (index, value) in a file, or a Problem where YAML itself fails."""
    if len(text) > MAX_FILE_BYTES:
        yield Problem(Origin(name), "", f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        return
    index = 0
    try:
        for doc in yaml.load_all(text, Loader=_Loader):
            yield index, doc
            index += 1
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        yield Problem(Origin(name, index), "", f"invalid YAML{where}: {problem}")
    except RecursionError:
        yield Problem(Origin(name, index), "", "YAML nests too deeply")


def objects(doc: Any) -> Iterator[tuple[str, Any]]:
    """Flatten `kind: List` (what `kubectl get -o yaml` prints); yield (field prefix, object)."""
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        for i, item in enumerate(doc["items"]):
            yield f"items[{i}]", item
    elif doc is not None:
        yield "", doc


def load(paths: Iterable[str]) -> Snapshot:
    """Read every object from the given paths into one Snapshot."""
    files, problems = expand_paths(paths)
    services: dict[tuple[str, str], Service] = {}
    slices: list[EndpointSlice] = []
    for name in files:
        try:
            text = read_text(name)
        except (OSError, UnicodeDecodeError) as err:
            problems.append(Problem(Origin(name), "", f"cannot read: {getattr(err, 'strerror', None) or err}"))
            continue
        for item in documents(name, text):
            if isinstance(item, Problem):
                problems.append(item)
                continue
            index, doc = item
            for prefix, obj in objects(doc):
                add_object(Origin(name, index), prefix, obj, services, slices, problems)
    return Snapshot(tuple(services.values()), tuple(slices), tuple(problems))


def add_object(
    origin: Origin,
    prefix: str,
    obj: Any,
    services: dict[tuple[str, str], Service],
    slices: list[EndpointSlice],
    problems: list[Problem],
) -> None:
    """Parse one object into ``services``/``slices``; record what is wrong in ``problems``."""
    parsed = parse_object(origin, prefix, obj)
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


def parse_object(origin: Origin, prefix: str, obj: Any) -> Parsed:
    if not isinstance(obj, dict):
        problem = Problem(origin, prefix, f"a Kubernetes object must be a mapping, not {type(obj).__name__}")
        return Parsed(None, (), (problem,), True)
    kind, api = obj.get("kind"), obj.get("apiVersion")
    wanted = {("Service", "v1"), ("EndpointSlice", "discovery.k8s.io/v1"), ("Endpoints", "v1")}
    if (kind, api) not in wanted:
        return Parsed(None)
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    ns, nm = meta.get("namespace") or "default", meta.get("name") or ""
    origin = replace(origin, kind=str(kind), namespace=str(ns), name=str(nm))
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
        problems.append(Problem(origin, err.field, err.message))
        failed = True
    except RecursionError:
        problems.append(Problem(origin, prefix, "object nests too deeply"))
        failed = True
    problems.extend(Problem(origin, err.field, f"{err.message} (endpoint ignored)") for err in endpoint_errors)
    return Parsed(origin, tuple(values), tuple(problems), failed)
