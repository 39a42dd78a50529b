"""Reading files on two CPUs gives exactly what reading them one by one gives, whatever the child does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ipvsctl.sources import files, fork


@pytest.fixture
def forking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork, "usable", lambda count: count >= 2)


def _no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _manifests(directory: Path, count: int) -> None:
    for i in range(count):
        text = f"""apiVersion: v1
kind: Service
metadata: {{name: svc-{i % (count // 2)}, namespace: ns}}
spec:
  clusterIP: 10.96.{i // 250}.{1 + i % 250}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{i}-a, namespace: ns, labels: {{kubernetes.io/service-name: svc-{i % (count // 2)}}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints:
  - addresses: ["10.244.{i // 250}.{1 + i % 250}"]
  - addresses: ["{"not an address" if i % 7 == 0 else "10.245.0.1"}"]
"""
        if i % 11 == 0:
            text += "---\nkind: [broken\n"
        (directory / f"m{i:03d}.yaml").write_text(text)


def test_the_split_reading_is_the_sequential_reading(tmp_path: Path, forking: None) -> None:
    """Same Services (the first of each duplicate pair wins, across the halves), same slices,
    same problems in the same order."""
    _manifests(tmp_path, 40)
    parallel = files.load([str(tmp_path)])
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fork, "usable", lambda count: False)
        sequential = files.load([str(tmp_path)])
    assert parallel == sequential
    assert len(parallel.services) == 20 and len(parallel.slices) == 40
    assert any("duplicate Service" in p.message for p in parallel.problems)
    assert any("invalid YAML" in p.message for p in parallel.problems)
    assert _no_children_left()


def test_results_come_back_in_order(forking: None) -> None:
    """The first half is read here, the second by one child; the results are in the names' order."""
    names = [str(i) for i in range(101)]
    results = list(fork.each(names, lambda name: (name, os.getpid())))
    assert [name for name, _ in results] == names
    assert {pid for _, pid in results[:50]} == {os.getpid()}
    (child,) = {pid for _, pid in results[50:]}
    assert child != os.getpid()
    assert _no_children_left()


def test_one_part_per_cpu(forking: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 4 CPUs, 3 children read a part each; with few names, fewer parts (at least MIN_PART each)."""
    monkeypatch.setattr(fork, "cpus", lambda: 4)
    names = [str(i) for i in range(4 * fork.MIN_PART + 3)]
    results = list(fork.each(names, lambda name: (name, os.getpid())))
    assert [name for name, _ in results] == names
    pids = [pid for _, pid in results]
    assert pids[: fork.MIN_PART] == [os.getpid()] * fork.MIN_PART
    children = list(dict.fromkeys(pids[fork.MIN_PART :]))
    assert len(children) == 3 and os.getpid() not in children
    assert [len(part) for part in fork.parts(names)] == [128, 129, 129, 129]
    assert len(fork.parts(names[: 3 * fork.MIN_PART])) == 3
    assert len(fork.parts(names[:10])) == 2
    assert _no_children_left()


@pytest.mark.parametrize("how", ["raises", "unpicklable", "exits", "killed"])
def test_a_failing_child_costs_time_not_results(forking: None, how: str) -> None:
    parent = os.getpid()

    def read(name: str) -> object:
        if os.getpid() != parent:
            if how == "raises":
                raise RuntimeError("child failure")
            if how == "unpicklable":
                return lambda: name
            if how == "exits":
                os._exit(0)  # no results sent at all
            os.kill(os.getpid(), 9)
        return name.upper()

    names = [f"f{i}" for i in range(10)]
    assert list(fork.each(names, read)) == [n.upper() for n in names]
    assert _no_children_left()


def test_when_we_stop_early_the_child_is_killed_and_reaped(forking: None) -> None:
    parent = os.getpid()

    def read(name: str) -> str:
        if os.getpid() != parent:
            threading.Event().wait(60)  # a child still busy
        elif name == "f1":
            raise KeyboardInterrupt
        return name

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(fork.each([f"f{i}" for i in range(6)], read))
    assert _no_children_left()
    assert time.monotonic() - started < 30  # not waited for: its 60 s were cut short


def test_used_only_for_many_files_and_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(fork.threading, "active_count", lambda: 1)
    assert fork.usable(fork.MIN_FILES)
    assert not fork.usable(fork.MIN_FILES - 1)
    monkeypatch.setattr(fork.threading, "active_count", lambda: 2)
    assert not fork.usable(fork.MIN_FILES)  # the agent, with its threads, reads one by one
    monkeypatch.setattr(fork.threading, "active_count", lambda: 1)
    monkeypatch.setattr(fork.os, "cpu_count", lambda: 1)
    assert not fork.usable(fork.MIN_FILES)


CHILD_READER = """
import os, sys, time
from ipvsctl.sources import fork
fork.usable = lambda count: True
marks = sys.argv[1]
def read(name):
    if os.getpid() != parent:
        open(os.path.join(marks, str(os.getpid())), "w").close()
        time.sleep(60)
    return name
parent = os.getpid()
list(fork.each([str(i) for i in range(4)], read))
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that does not reap."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_reader_child_dies_with_its_killed_parent(tmp_path: Path) -> None:
    """SIGKILL of the reading process also ends its forked child at once: the child holds every
    descriptor the parent had, the write lock's among them, and must not outlive it."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD_READER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        (mark,) = tmp_path.iterdir()
        child = int(mark.name)
        assert _alive(child)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child), "the reader child outlived its killed parent"
