"""`ipvsctl diff` with the kernel-read cache (readcache.py), on the in-memory kernel: what it reads
again, what it sees at once, what it sees within DEEP_EVERY runs, and a cache it must not trust."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ipvsctl import cli, readcache
from ipvsctl.bench import rules
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import RealServer
from ipvsctl.model.ops import EditReal
from tests.conftest import ip
from tests.unit.test_cli import run

SERVICES = 64


class Counting(MemoryKernel):
    """Counts the per-virtual-server reads (what costs two round trips each on netlink)."""

    def __init__(self) -> None:
        super().__init__(node_addresses=[ip("192.0.2.10")])
        self.reads = 0
        self.read_keys: list[object] = []

    def real_servers(self, server, known=b""):  # type: ignore[no-untyped-def]
        self.reads += 1
        self.read_keys.append(server.key)
        return super().real_servers(server, known)

    def dump(self, reals=True):  # type: ignore[no-untyped-def]
        states = super().dump(reals)
        if reals:
            self.reads += len(states)  # a full dump reads every one
        return states


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Counting, Path, Path]:
    kernel = Counting()
    monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: kernel)
    state = tmp_path / "state"
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(state))
    manifests = tmp_path / "m"
    manifests.mkdir()
    for svc in rules.rule_set(SERVICES):
        (manifests / f"{svc.name}.yaml").write_text(rules.manifest(svc))
    code, _, err = run("apply", "-f", str(manifests), "--node-ip", "192.0.2.10", "--no-sysctls")
    assert code == 0, err
    return kernel, manifests, state


def diff(kernel: Counting, manifests: Path, *extra: str) -> tuple[int, str, int]:
    kernel.reads = 0
    code, out, err = run("diff", "-f", str(manifests), "--node-ip", "192.0.2.10", *extra)
    assert code in (0, 1), err
    return code, out, kernel.reads


def test_a_no_op_diff_reads_again_only_one_in_deep_every(setup: tuple[Counting, Path, Path]) -> None:
    kernel, manifests, _ = setup
    assert diff(kernel, manifests)[::2] == (0, SERVICES)  # no cache yet: every one read
    keys = [vs.server.key for vs in kernel.dump(reals=False)]
    for turn in range(1, 2 * readcache.DEEP_EVERY):
        code, _, reads = diff(kernel, manifests)
        assert code == 0
        assert reads == sum(1 for k in keys if readcache.turn_of(k) == turn % readcache.DEEP_EVERY)
    assert diff(kernel, manifests, "--no-cache")[::2] == (0, SERVICES)


def test_a_change_proc_shows_is_seen_at_once(setup: tuple[Counting, Path, Path]) -> None:
    kernel, manifests, _ = setup
    diff(kernel, manifests)
    vs = kernel.dump()[5]
    real = vs.real_servers[3].server
    kernel.execute([EditReal(vs.server.key, replace(real, weight=7))])  # what `ipvsadm -e -w 7` does
    code, out, _ = diff(kernel, manifests)
    assert code == 1 and f"{real.key.address}" in out and "weight=1" in out


def test_a_threshold_change_is_seen_within_deep_every_diffs(setup: tuple[Counting, Path, Path]) -> None:
    kernel, manifests, _ = setup
    diff(kernel, manifests)
    vs = kernel.dump()[9]
    real: RealServer = vs.real_servers[0].server
    kernel.execute([EditReal(vs.server.key, replace(real, upper_threshold=50))])  # not in /proc/net/ip_vs
    assert diff(kernel, manifests, "--no-cache")[0] == 1  # a full read sees it at once
    runs = 0
    while True:
        runs += 1
        if diff(kernel, manifests)[0] == 1:
            break
        assert runs < readcache.DEEP_EVERY
    assert runs <= readcache.DEEP_EVERY


def test_a_persistent_virtual_server_is_always_read(setup: tuple[Counting, Path, Path]) -> None:
    kernel, manifests, _ = setup
    one = manifests / "svc-00000.yaml"
    one.write_text(one.read_text().replace("spec:\n", "spec:\n  sessionAffinity: ClientIP\n", 1))
    assert run("apply", "-f", str(manifests), "--node-ip", "192.0.2.10", "--no-sysctls")[0] == 0
    persistent = next(vs.server.key for vs in kernel.dump(reals=False) if vs.server.timeout)
    diff(kernel, manifests)
    for _ in range(readcache.DEEP_EVERY):
        kernel.read_keys.clear()
        assert diff(kernel, manifests)[0] == 0
        assert persistent in kernel.read_keys  # its templates are not in /proc: never from the cache
        assert len(kernel.read_keys) < SERVICES


def test_a_damaged_cache_is_ignored_and_rebuilt(setup: tuple[Counting, Path, Path]) -> None:
    kernel, manifests, state = setup
    diff(kernel, manifests)
    path = state / "cache" / readcache.FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    code, _, reads = diff(kernel, manifests)
    assert (code, reads) == (0, SERVICES)  # nothing trusted: everything read
    assert diff(kernel, manifests)[2] < SERVICES  # and the rebuilt cache is used


def test_real_servers_the_translation_wants_are_kept_packed(setup: tuple[Counting, Path, Path]) -> None:
    from ipvsctl.cache import code_digest, read_sealed

    kernel, manifests, state = setup
    diff(kernel, manifests)
    _, entries = read_sealed(state / "cache" / readcache.FILE, code_digest(), [])
    assert len(entries) == SERVICES and all(isinstance(kept[0], bytes) for _, kept in entries.values())
    # the translation now wants other real servers: that packed entry no longer fits, so that
    # virtual server is read again even when it is not its turn, and the change is reported
    svc = rules.service(3)
    one = manifests / svc.file_name
    one.write_text(rules.manifest(svc, not_ready=[0]))
    kernel.read_keys.clear()
    code, out, _ = diff(kernel, manifests)
    assert code == 1 and svc.endpoints[0] in out, out
    assert ip(svc.vip) in {k.address for k in kernel.read_keys}  # type: ignore[attr-defined]
