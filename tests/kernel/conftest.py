"""Fixtures for real-kernel IPVS tests (see netns.py for the topology and how to use it).

Every test under tests/kernel is marked ``kernel``. Without root or IPVS they are skipped
with the reason, unless IPVSCTL_KERNEL_TESTS=require (set by scripts/test-kernel, i.e. in
the VM), where a missing prerequisite is an error: there they must run, not skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Backend, Client, Topology, missing_prerequisites

HERE = Path(__file__).resolve().parent


def _unavailable(reason: str) -> None:
    if os.environ.get("IPVSCTL_KERNEL_TESTS") == "require":
        pytest.fail(f"kernel tests required but cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/kernel `kernel` (before `-m` deselects anything)."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(scope="session")
def kernel_available() -> None:
    """Root and a kernel with IPVS, or skip (fail under scripts/test-kernel)."""
    reason = missing_prerequisites()
    if reason is not None:
        _unavailable(reason)


@pytest.fixture(autouse=True)
def _requires_kernel(kernel_available: None) -> None:
    """Applies kernel_available to every test under tests/kernel."""


@pytest.fixture(scope="session")
def topology(kernel_available: None) -> Iterator[Topology]:
    """Backend and client namespaces around the node (this namespace), built once per session."""
    topo = Topology.create()
    try:
        yield topo
    finally:
        topo.destroy()


@pytest.fixture
def client(topology: Topology) -> Iterator[Client]:
    """The client namespace; connections a test left held are closed after it."""
    yield topology.client
    topology.client.close_holds()


@pytest.fixture
def backends(topology: Topology) -> Iterator[dict[str, Backend]]:
    """The backends by name (be1..be4); a server a test stopped is started again after it."""
    yield topology.backends
    for backend in topology.backends.values():
        backend.start_server()


@pytest.fixture(scope="session")
def ipvsadm(kernel_available: None) -> str:
    """Path of the ipvsadm command (skip, or fail under scripts/test-kernel, if missing)."""
    candidates = (shutil.which("ipvsadm"), "/usr/sbin/ipvsadm", "/sbin/ipvsadm")
    path = next((p for p in candidates if p and Path(p).exists()), None)
    if path is None:
        _unavailable("needs the ipvsadm command (apt-get install ipvsadm, or scripts/bootstrap)")
    assert path is not None
    return path
