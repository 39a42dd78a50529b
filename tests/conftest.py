"""Shared helpers for every suite."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from ipvsctl.model.k8s import Snapshot
from ipvsctl.sources.files import load


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
