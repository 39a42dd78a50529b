"""JSON manifests (``kubectl get -o json``) are read by the JSON decoder, to exactly what YAML reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsctl.sources import files
from ipvsctl.sources.files import MAX_DEPTH, _Budget, _load_all, documents, json_document, load

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.sampled_from(["yes", "no", "on", "~", "1e5", "0x1F", "2024-01-01", "<<", "=", "\u2028", "\x85"])
)
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=25,
).filter(lambda doc: isinstance(doc, dict | list))


def _yaml_reading(text: str) -> list[Any]:
    return list(_load_all(text, _Budget()))


@settings(max_examples=400, deadline=None)
@given(_documents, st.booleans(), st.booleans())
def test_what_the_json_decoder_reads_is_what_yaml_reads(doc: Any, ascii_only: bool, indent: bool) -> None:
    """Whenever the JSON path takes a file, YAML reads the very same value (types included); where
    they would differ (numbers like 1e5, raw NEL, control characters) the JSON path declines."""
    text = json.dumps(doc, ensure_ascii=ascii_only, indent=2 if indent else None)
    value = json_document(text)
    if value is files._NOT_JSON:
        return
    assert repr([value]) == repr(_yaml_reading(text))


def test_json_that_yaml_reads_otherwise_is_left_to_yaml() -> None:
    assert json_document('{"a": 1e5}') is files._NOT_JSON  # YAML 1.1: the string "1e5"
    assert json_document('{"a": 1.5e+5}') == {"a": 150000.0}  # YAML 1.1 wants the sign
    assert json_document('{"a": NaN}') is files._NOT_JSON  # YAML: the string "NaN"
    assert json_document('{"a": "x\x85y"}') is files._NOT_JSON  # NEL is a YAML line break
    assert json_document('{"a": "x\\u0085y"}') == {"a": "x\x85y"}  # escaped it is the same
    assert json_document('{"a": "\\ud83d\\ude00"}') is files._NOT_JSON  # YAML refuses surrogate escapes
    assert json_document(json.dumps({"k" * 1100: 1})) is files._NOT_JSON  # YAML: an implicit key <= 1024
    assert json_document("{a: b}") is files._NOT_JSON  # YAML flow, not JSON
    assert list(documents("f.json", "{a: b}")) == [(0, {"a": "b"})]


def _kubectl_list(paths: list[Path]) -> str:
    items = [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]
    return json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}, indent=4
    )


def test_a_kubectl_json_list_gives_the_snapshot_its_yaml_gives(tmp_path: Path) -> None:
    """The examples as one `kubectl get -o json` List, in a directory as a .json file: same
    Services, slices and problems (object positions aside) as the YAML files."""
    paths = sorted(EXAMPLES.glob("*.yaml"))
    (tmp_path / "all.json").write_text(_kubectl_list(paths))
    (tmp_path / "same.yaml").write_text(_kubectl_list(paths))  # JSON in a .yaml file: the same path
    from_json = load([str(tmp_path / "all.json")])
    from_yaml_list = load([str(tmp_path / "same.yaml")])
    from_examples = load([str(EXAMPLES)])
    assert from_json.services and from_json.slices

    def plain(snapshot: files.Snapshot) -> tuple[Any, ...]:
        strip = {"origin": None}
        return (
            sorted(repr(s.__class__(**{**_fields(s), **strip})) for s in snapshot.services),
            sorted(repr(s.__class__(**{**_fields(s), **strip})) for s in snapshot.slices),
            sorted((p.field.split(".", 1)[-1], p.message) for p in snapshot.problems),
        )

    assert plain(from_json) == plain(from_examples)
    assert [str(p) for p in from_json.problems] == [
        str(p).replace("same.yaml", "all.json") for p in from_yaml_list.problems
    ]
    assert load([str(tmp_path)]).services == from_json.services  # the directory picks .json up


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"kind": "Service", "kind": "List"}', "found duplicate key 'kind'"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nests deeper than {MAX_DEPTH} levels"),
        ('{"a": ' + "9" * 101 + "}", "an integer of 101 characters is too large"),
        ('{"a": "\x01"}', "invalid"),
    ],
    ids=["duplicate-key", "too-deep", "long-integer", "control-character"],
)
def test_json_mistakes_get_the_yaml_readers_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    (problem,) = load([str(path)]).problems
    assert str(problem).startswith(str(path)) and expected in problem.message


def test_the_json_path_is_taken_for_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON file never reaches the YAML reader (that is the speed-up); YAML files do."""
    calls: list[str] = []
    real = files._load_all
    monkeypatch.setattr(files, "_load_all", lambda text, budget: calls.append(text) or real(text, budget))
    assert list(documents("a.json", ' \n{"kind": "Service"}\n')) == [(0, {"kind": "Service"})]
    assert calls == []
    assert list(documents("a.yaml", "kind: Service\n")) == [(0, {"kind": "Service"})]
    assert len(calls) == 1
