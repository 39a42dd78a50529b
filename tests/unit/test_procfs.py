"""kernel/procfs.py: summaries of /proc/net/ip_vs, read in chunks. The file's format is the
kernel's (ip_vs_info_seq_show); tests/contract checks the summaries against a real kernel."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ipvsctl.kernel import procfs
from ipvsctl.model.ipvs import Protocol, ServiceKey
from tests.conftest import ip

HEADING = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
)


def dest(addr: str, port: int, weight: int = 1, active: int = 0, inactive: int = 0, fwd: str = "Masq") -> str:
    return f"  -> {addr}:{port:04X}      {fwd:<7} {weight:<6} {active:<10} {inactive:<10}\n"


def table(weight: int = 1, active: int = 0, reals: int = 3) -> str:
    return (
        HEADING
        + "TCP  0A600001:0050 rr \n"
        + "".join(dest(f"0AF4000{i}", 8080, *((weight, active) if i == 1 else (1, 0))) for i in range(1, reals + 1))
        + "UDP  [fd00:0000:0000:0000:0000:0000:0000:0035]:0035 wlc persistent 300 FFFFFFFF\n"
        + dest("[fd00:0000:0000:0000:0000:0000:0001:0001]", 53)
        + "FWM  00000007 rr \n"
        + dest("0AF40009", 0, fwd="Route")
        + "SCTP  0A600002:0BB8 sh ops \n"
    )


def summaries(text: str, chunk: int = procfs.CHUNK) -> dict[ServiceKey, int]:
    return procfs.parse(io.BytesIO(text.encode()), chunk)


TCP = ServiceKey(Protocol.TCP, ip("10.96.0.1"), 80)
UDP6 = ServiceKey(Protocol.UDP, ip("fd00::35"), 53)
SCTP = ServiceKey(Protocol.SCTP, ip("10.96.0.2"), 3000)


def test_every_address_keyed_virtual_server_gets_a_summary_firewall_marks_none() -> None:
    assert set(summaries(table())) == {TCP, UDP6, SCTP}


def test_read_in_any_chunk_size_gives_the_same_summaries() -> None:
    text = table()
    whole = summaries(text)
    for chunk in range(1, len(text) + 2):
        assert summaries(text, chunk) == whole, chunk
    assert summaries(text.rstrip("\n"), 7) == whole  # no newline at the end


def test_a_summary_changes_with_what_the_file_shows_and_only_that_server() -> None:
    base = summaries(table())
    for changed in (table(weight=0), table(active=1), table(reals=2)):
        now = summaries(changed)
        assert now[TCP] != base[TCP]
        assert now[UDP6] == base[UDP6] and now[SCTP] == base[SCTP]
    assert summaries(table()) == base


def test_an_unreadable_file_gives_none(tmp_path: Path) -> None:
    assert procfs.read(str(tmp_path / "missing")) is None
    (tmp_path / "ip_vs").write_text(table())
    assert procfs.read(str(tmp_path / "ip_vs")) == summaries(table())


@pytest.mark.parametrize("line", ["TCP  nothex:0050 rr \n", "TCP  [::zz]:0050 rr \n", "garbage\n"])
def test_a_line_it_cannot_read_gives_no_summary_and_no_error(line: str) -> None:
    assert set(summaries(HEADING + line + dest("0AF40001", 80) + "TCP  0A600001:0050 rr \n")) == {TCP}
