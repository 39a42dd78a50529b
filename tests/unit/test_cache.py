"""The parse and translation caches: a cached run gives exactly what an uncached one gives, and a
cache is never trusted."""

from __future__ import annotations

import io
import ipaddress
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipvsctl import cache as cache_module
from ipvsctl import cli, oneshot
from ipvsctl.cache import MAGIC, ParseCache, TranslationCache
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.desired import Desired
from ipvsctl.model.k8s import Snapshot
from ipvsctl.settings import Settings
from ipvsctl.sources import files, fork

SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: ns}}
spec:
  clusterIP: 10.96.0.{ip}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{i}-a, namespace: ns, labels: {{kubernetes.io/service-name: svc-{i}}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints:
  - addresses: ["10.244.0.{ip}"]
  - addresses: ["not an address"]
"""


def _write(directory: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = directory / f"svc-{i}.yaml"
        path.write_text(SERVICE.format(i=i, ip=i + 1))
        paths.append(path)
    return paths


def _run(manifests: Path, state: Path) -> tuple[Snapshot, ParseCache]:
    cache = ParseCache(state)
    snapshot = files.load([str(manifests)], cache)
    cache.save()
    return snapshot, cache


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir()
    _write(directory, 4)
    return directory


def test_a_cached_run_gives_what_parsing_gives_problems_included(manifests: Path, tmp_path: Path) -> None:
    parsed = files.load([str(manifests)])
    assert parsed.problems, "the fixture has a bad endpoint per file, so there are problems to keep"
    first, cold = _run(manifests, tmp_path / "cache")
    second, warm = _run(manifests, tmp_path / "cache")
    assert (cold.hits, cold.misses) == (0, 4)
    assert (warm.hits, warm.misses) == (4, 0)
    assert first == parsed and second == parsed
    assert [str(p) for p in second.problems] == [str(p) for p in parsed.problems]


def test_one_changed_byte_is_parsed_again(manifests: Path, tmp_path: Path) -> None:
    _run(manifests, tmp_path / "cache")
    path = manifests / "svc-2.yaml"
    stat = path.stat()
    path.write_text(path.read_text().replace("10.96.0.3", "10.96.0.9"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: the content decides
    snapshot, cache = _run(manifests, tmp_path / "cache")
    assert (cache.hits, cache.misses) == (3, 1)
    assert snapshot == files.load([str(manifests)])
    assert [str(ip) for s in snapshot.services if s.name == "svc-2" for ip in s.cluster_ips] == ["10.96.0.9"]


def test_a_renamed_file_is_parsed_again_because_problems_name_the_file(manifests: Path, tmp_path: Path) -> None:
    _run(manifests, tmp_path / "cache")
    (manifests / "svc-0.yaml").rename(manifests / "zzz.yaml")
    snapshot, cache = _run(manifests, tmp_path / "cache")
    assert cache.misses == 1
    assert any("zzz.yaml" in str(p) for p in snapshot.problems)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        middle = len(data) - 10
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])
    elif how == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated", "damaged"),
        ("flipped", "damaged"),
        ("garbage", "not an ipvsctl cache"),
    ],
)
def test_a_damaged_cache_is_ignored_with_a_note(manifests: Path, tmp_path: Path, how: str, reason: str) -> None:
    _run(manifests, tmp_path / "cache")
    _damage(tmp_path / "cache" / "parse.pickle", how)
    snapshot, cache = _run(manifests, tmp_path / "cache")
    assert (cache.hits, cache.misses) == (0, 4)
    assert len(cache.notes) == 1 and reason in cache.notes[0]
    assert snapshot == files.load([str(manifests)])
    _, again = _run(manifests, tmp_path / "cache")  # rebuilt by the run that ignored it
    assert (again.hits, again.notes) == (4, [])


def test_an_empty_cache_file_is_ignored(manifests: Path, tmp_path: Path) -> None:
    _run(manifests, tmp_path / "cache")
    _damage(tmp_path / "cache" / "parse.pickle", "empty")
    _, cache = _run(manifests, tmp_path / "cache")
    assert cache.hits == 0 and cache.notes


def test_another_version_or_code_is_ignored(manifests: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(manifests, tmp_path / "cache")
    monkeypatch.setattr(cache_module, "__version__", "99.0.0")
    snapshot, cache = _run(manifests, tmp_path / "cache")
    assert cache.hits == 0
    assert "another ipvsctl version" in cache.notes[0]
    assert snapshot == files.load([str(manifests)])


def _forged(path: Path, payload: bytes) -> None:
    """A cache file with a valid header and checksum around ``payload``: only the unpickler stands."""
    code = cache_module.code_digest()
    checksum = cache_module.hashlib.blake2b(payload, digest_size=32).digest()
    path.write_bytes(MAGIC + code + checksum + payload)
    path.chmod(0o600)


class _Boom:
    """Unpickled by a plain unpickler, this creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_forged_cache_cannot_run_code(manifests: Path, tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    marker = tmp_path / "exploited"
    _forged(tmp_path / "cache" / "parse.pickle", pickle.dumps({b"k": [_Boom(marker)]}))
    _, cache = _run(manifests, tmp_path / "cache")
    assert not marker.exists()
    assert cache.hits == 0 and "not a cached value" in cache.notes[0]


def test_a_cache_of_the_wrong_shape_is_ignored(manifests: Path, tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    _forged(tmp_path / "cache" / "parse.pickle", pickle.dumps([1, 2, 3]))
    _, cache = _run(manifests, tmp_path / "cache")
    assert cache.hits == 0 and "not a mapping" in cache.notes[0]


def test_a_cache_others_may_write_is_not_read(manifests: Path, tmp_path: Path) -> None:
    _run(manifests, tmp_path / "cache")
    (tmp_path / "cache" / "parse.pickle").chmod(0o666)
    _, cache = _run(manifests, tmp_path / "cache")
    assert cache.hits == 0 and "writable by no one else" in cache.notes[0]


def test_the_cache_file_is_private(manifests: Path, tmp_path: Path) -> None:
    _run(manifests, tmp_path / "cache")
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "cache" / "parse.pickle").stat().st_mode & 0o777 == 0o600


def test_an_unwritable_cache_directory_costs_nothing(manifests: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    snapshot, cache = _run(manifests, blocker / "cache")  # a directory under a file: cannot be made
    assert snapshot == files.load([str(manifests)])
    assert cache.unsaved and "not written" in cache.unsaved


def test_no_cache_reads_and_writes_nothing(manifests: Path, tmp_path: Path) -> None:
    cache = ParseCache(None)
    assert files.load([str(manifests)], cache) == files.load([str(manifests)])
    cache.save()
    assert not cache.enabled and cache.hits == 0


def test_the_cache_holds_only_the_last_runs_files(manifests: Path, tmp_path: Path) -> None:
    _run(manifests, tmp_path / "cache")
    (manifests / "svc-3.yaml").unlink()
    _run(manifests, tmp_path / "cache")
    (manifests / "svc-3.yaml").write_text(SERVICE.format(i=3, ip=4))
    _, cache = _run(manifests, tmp_path / "cache")
    assert (cache.hits, cache.misses) == (3, 1)


def test_parsing_on_two_cpus_fills_the_cache_in_file_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork, "usable", lambda count: count >= 2)
    directory = tmp_path / "many"
    directory.mkdir()
    _write(directory, 9)
    sequential = files.load([str(directory)])
    first, _ = _run(directory, tmp_path / "cache")
    second, warm = _run(directory, tmp_path / "cache")
    assert first == sequential and second == sequential and warm.hits == 9


WRITER = """
import sys
from ipvsctl.sources import files
from ipvsctl.cache import ParseCache
manifests, state, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(rounds):
    cache = ParseCache(__import__("pathlib").Path(state))
    files.load([manifests], cache)
    if cache.notes:
        print("NOTE", cache.notes)
    cache._old = {}  # write every round, as a changed input would
    cache.misses += 1
    cache.save()
"""


def test_two_processes_at_once_never_tear_the_cache(tmp_path: Path) -> None:
    """Two writers, each rewriting the cache 30 times while reading it: no reader ever sees a torn
    file (it would note it as damaged), and what is left is a whole cache."""
    directory = tmp_path / "manifests"
    directory.mkdir()
    _write(directory, 40)
    state = tmp_path / "cache"
    argv = [sys.executable, "-c", WRITER, str(directory), str(state), "30"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert "NOTE" not in "".join(outputs), outputs
    _, cache = _run(directory, state)
    assert (cache.hits, cache.notes) == (40, [])
    assert not [p for p in state.iterdir() if p.name != "parse.pickle"], "temporary files left behind"


# The translation cache, through the CLI: what `diff` and `apply` see.

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NODE = ("--node-ip", "192.0.2.10")


@pytest.fixture
def cli_kernel(monkeypatch: pytest.MonkeyPatch) -> MemoryKernel:
    kernel = MemoryKernel(node_addresses=[ipaddress.ip_address("192.0.2.10")])
    monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: kernel)
    return kernel


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _counting_translations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = oneshot.translate
    monkeypatch.setattr(oneshot, "translate", lambda snapshot, settings: calls.append(1) or real(snapshot, settings))
    return calls


def test_an_unchanged_run_is_not_translated_again(
    cli_kernel: MemoryKernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Same files, same settings: the second diff takes the last translation; its output, problems
    and exit code are those of a run without the cache."""
    manifests = tmp_path / "m"
    shutil.copytree(EXAMPLES, manifests)
    (manifests / "bad.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: 7}\n")
    calls = _counting_translations(monkeypatch)
    first = _invoke("diff", "-f", str(manifests), *NODE)
    second = _invoke("diff", "-f", str(manifests), *NODE)
    uncached = _invoke("diff", "-f", str(manifests), *NODE, "--no-cache")
    assert len(calls) == 2, "the cached second run translated again"
    assert first[0] == 3 and first == second == uncached  # exit 3: the bad Service; changes listed too
    assert "bad.yaml" in second[2]


def test_a_changed_setting_or_file_is_translated_again(
    cli_kernel: MemoryKernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifests = tmp_path / "m"
    shutil.copytree(EXAMPLES, manifests)
    calls = _counting_translations(monkeypatch)
    _invoke("diff", "-f", str(manifests), *NODE)
    _, out, _ = _invoke("diff", "-f", str(manifests), *NODE, "--scheduler", "wlc")
    assert len(calls) == 2 and "scheduler=wlc" in out
    web = manifests / "web.yaml"
    web.write_text(web.read_text().replace("198.51.100.10", "198.51.100.99"))
    _, out, _ = _invoke("diff", "-f", str(manifests), *NODE, "--scheduler", "wlc")
    assert len(calls) == 3 and "198.51.100.99" in out
    _invoke("apply", "-f", str(manifests), *NODE, "--scheduler", "wlc")
    assert _invoke("diff", "-f", str(manifests), *NODE, "--scheduler", "wlc")[0] == 0
    assert len(calls) == 3, "apply and the diff after it took the translation from the cache"


def test_a_damaged_translation_is_ignored_with_a_warning(
    cli_kernel: MemoryKernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(state))
    first = _invoke("diff", "-f", str(EXAMPLES), *NODE)
    _damage(state / "cache" / "translation.pickle", "flipped")
    code, out, err = _invoke("diff", "-f", str(EXAMPLES), *NODE)
    assert (code, out) == first[:2]
    assert "cache ignored" in err and "translation.pickle" in err and "damaged" in err


def test_a_translation_for_another_input_is_not_used(tmp_path: Path) -> None:
    cache = TranslationCache(tmp_path)
    cache.put(b"k" * 32, Desired())
    assert TranslationCache(tmp_path).get(b"k" * 32) == Desired()
    assert TranslationCache(tmp_path).get(b"x" * 32) is None
    assert TranslationCache.key(b"a", Settings(scheduler="rr")) != TranslationCache.key(b"a", Settings(scheduler="wlc"))


# The agent's first scan.


def test_the_agents_first_scan_parses_no_unchanged_file_and_later_scans_leave_the_cache(
    manifests: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipvsctl.agent.world import World
    from ipvsctl.sources import directory

    def scanned(cache: ParseCache | None) -> tuple[World, directory.DirectorySource]:
        world = World()
        world.expect(directory.SOURCE)
        source = directory.DirectorySource([str(manifests)], world, threading.Event(), cache=cache)
        source.scan()
        return world, source

    parses: list[str] = []
    real_parse = directory.parse_file
    monkeypatch.setattr(directory, "parse_file", lambda name, data: parses.append(name) or real_parse(name, data))
    uncached, _ = scanned(None)
    assert len(parses) == 4
    _, first = scanned(ParseCache(tmp_path / "cache"))  # an apply or an earlier agent fills it
    assert len(parses) == 8 and first.cache is None, "the cache is dropped after the first scan"
    written = (tmp_path / "cache" / "parse.pickle").stat().st_mtime_ns
    world, source = scanned(ParseCache(tmp_path / "cache"))
    assert len(parses) == 8, "a restart parsed unchanged files again"
    cached_services, uncached_services = world.take().services, uncached.take().services
    assert cached_services and cached_services == uncached_services
    (manifests / "svc-1.yaml").write_text(SERVICE.format(i=1, ip=77))
    source.scan()
    assert parses[8:] == [str(manifests / "svc-1.yaml")]
    assert (tmp_path / "cache" / "parse.pickle").stat().st_mtime_ns == written, "a later scan rewrote the cache"


def test_a_cache_of_many_files_is_written_in_parts_and_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More files than one part holds: one pickle per part, read back as one cache; a run from it parses nothing."""
    monkeypatch.setattr(cache_module, "CHUNK", 3)
    directory = tmp_path / "manifests"
    directory.mkdir()
    _write(directory, 10)
    first, _ = _run(directory, tmp_path / "cache")
    payload = (tmp_path / "cache" / "parse.pickle").read_bytes()[len(MAGIC) + 64 :]
    stream, sizes = io.BytesIO(payload), []
    while stream.tell() < len(payload):
        sizes.append(len(pickle.load(stream)))
    assert sizes == [3, 3, 3, 1]
    again, cache = _run(directory, tmp_path / "cache")
    assert cache.hits == 10 and cache.misses == 0 and again == first


def test_a_part_that_is_not_a_mapping_makes_the_cache_ignored(manifests: Path, tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    _forged(tmp_path / "cache" / "parse.pickle", pickle.dumps({b"k": []}) + pickle.dumps([1]))
    _, cache = _run(manifests, tmp_path / "cache")
    assert cache.hits == 0 and "not a mapping" in cache.notes[0]
