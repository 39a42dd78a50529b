"""Shared helpers for every suite."""

from __future__ import annotations

import ipaddress
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from ipvsctl.model.k8s import Snapshot
from ipvsctl.sources.files import load

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float = 2.0,
    what: str = "condition",
    interval: float = 0.005,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail after ``timeout``
    seconds saying ``what`` was awaited (and ``describe()``, e.g. the state last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f": {describe()}" if describe else f" (last value {value!r})"
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.fixture
def manifests(tmp_path: Path):
    """Write YAML text to a file and load it into a Snapshot."""

    def make(text: str, name: str = "m.yaml") -> Snapshot:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return load([str(path)])

    return make
