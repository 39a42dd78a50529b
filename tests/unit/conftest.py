"""Host tests never touch the real state directory (/run/ipvsctl): each gets its own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(tmp_path / "state-dir"))
