"""Read many manifest files on every CPU: forked children read parts of the list while we read the first.

Reading YAML into Python objects is most of a cold ``ipvsctl apply`` at 10,000 Services, and it
is per-file work with no shared state, so it splits cleanly. The child starts as a copy of this
process (``fork``: nothing is imported again), reads its files with the very function the parent
uses, and sends back what each gave, pickled through a pipe; the parent merges every file's
results in file order, so the outcome is exactly that of reading them one after the other.
There is one part per CPU this process may run on, each of at least ``MIN_PART`` files.

Used only where it is safe and worth it: at least ``MIN_FILES`` files, more than one CPU, a
platform with ``fork``, and a process with no other thread (a forked child gets only the
forking thread: the agent reads its manifests before it starts any, see
``DirectorySource.prime``). If a child fails in any way (exits non-zero, is killed, sends
something unreadable), the parent reads its part itself: a child can cost time, never a result.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

MIN_FILES = 256  # below this, forking costs more than it saves
MIN_PART = 128  # files per part, at least
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

A = TypeVar("A")
T = TypeVar("T")


def cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as a container's cpuset sets it)."""
    count = os.cpu_count() or 1
    with contextlib.suppress(AttributeError, OSError):
        count = min(count, len(os.sched_getaffinity(0)))
    return count


def usable(count: int) -> bool:
    """Whether reading ``count`` files would be split over child processes."""
    return count >= MIN_FILES and cpus() > 1 and hasattr(os, "fork") and threading.active_count() == 1


def parts(names: Sequence[A]) -> list[Sequence[A]]:
    """``names`` cut into one contiguous part per CPU (fewer when parts would be small)."""
    count = max(2, min(cpus(), len(names) // MIN_PART))
    size, extra = divmod(len(names), count)
    out: list[Sequence[A]] = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i >= count - extra else 0)  # the parent's part is never the larger
        out.append(names[start:end])
        start = end
    return out


def each(names: Sequence[A], read: Callable[[A], T]) -> Iterator[T]:
    """``read(name)`` for every name, in order; all parts but the first read by forked children
    when ``usable``.

    A name is a file name, or anything else: a child is a copy of this process, so it has them."""
    if not usable(len(names)):
        yield from map(read, names)
        return
    mine, *theirs = parts(names)
    children: list[_Child | None] = []
    try:
        children = [_start(part, read) for part in theirs]
        yield from map(read, mine)
        for child, part in zip(children, theirs, strict=True):
            results = _collect(child, len(part))
            _end(child)
            yield from results if results is not None else map(read, part)
    finally:
        for child in children:
            _end(child)


class _Child:
    __slots__ = ("pid", "reader")

    def __init__(self, pid: int, reader: int) -> None:
        self.pid = pid
        self.reader = reader


def _start(names: Sequence[A], read: Callable[[A], T]) -> _Child | None:
    """Fork a child that reads ``names`` and writes the pickled list of results to a pipe."""
    try:
        reader, writer = os.pipe()
    except OSError:
        return None
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        os.close(reader)
        os.close(writer)
        return None
    if pid == 0:  # the child: never returns
        status = 1
        try:
            _die_with(parent)
            os.close(reader)
            with os.fdopen(writer, "wb") as out:
                pickle.dump([read(name) for name in names], out, protocol=pickle.HIGHEST_PROTOCOL)
            status = 0
        except BaseException:  # any failure: the parent reads these files itself
            pass
        finally:
            os._exit(status)
    os.close(writer)
    return _Child(pid, reader)


def _die_with(parent: int) -> None:
    """In the child: be killed when the parent dies (Linux), and stop now if it already has.

    The child inherits every descriptor, the write lock's among them: a child that outlived a
    parent killed with SIGKILL would hold the lock, and stall the next ipvsctl, until it had
    read its half of the files for nobody."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _collect(child: _Child | None, count: int) -> list[T] | None:
    """The child's results, or None when it failed (the caller then reads its files)."""
    if child is None:
        return None
    try:
        with os.fdopen(os.dup(child.reader), "rb") as data:
            results = pickle.load(data)
    except Exception:  # a child that died mid-write, or sent garbage
        return None
    _, status = os.waitpid(child.pid, 0)
    child.pid = 0
    if status != 0 or not isinstance(results, list) or len(results) != count:
        return None
    return results


def _end(child: _Child | None) -> None:
    """Close the pipe and reap the child (killing it first when we stop before it is done).
    Ending a child twice does nothing the second time."""
    if child is None or child.reader < 0:
        return
    os.close(child.reader)
    child.reader = -1
    if child.pid:
        with contextlib.suppress(OSError):
            os.kill(child.pid, 9)
        with contextlib.suppress(OSError):
            os.waitpid(child.pid, 0)
