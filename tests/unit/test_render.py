"""The `list` table: alignment, colour on the plain text's widths, and rates measured by --watch."""

from __future__ import annotations

import pytest

from ipvsctl.colour import BOLD, DIM, RED, YELLOW, paint, strip, wanted
from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import (
    Protocol,
    RealKey,
    RealServer,
    RealServerState,
    ServiceKey,
    Stats,
    VirtualServer,
    VirtualServerState,
)
from ipvsctl.render import rate_text, render_table, table
from ipvsctl.watch import Rates
from tests.conftest import ip

WEB = ServiceKey(Protocol.TCP, ip("198.51.100.10"), 80)
EMPTY = ServiceKey(Protocol.TCP, ip("198.51.100.11"), 80)
DRAINED = ServiceKey(Protocol.TCP, ip("198.51.100.12"), 80)
FOREIGN = ServiceKey(Protocol.UDP, ip("198.51.100.200"), 53)
A, B = RealKey(ip("203.0.113.11"), 8080), RealKey(ip("203.0.113.12"), 8080)


def real(key: RealKey, weight: int = 1, active: int = 0) -> RealServerState:
    return RealServerState(RealServer(key, weight), active_conns=active)


def owner(name: str) -> Owner:
    return Owner("demo", name, "http")


ITEMS = [
    (VirtualServerState(VirtualServer(WEB), (real(A, active=3), real(B, weight=0, active=12))), owner("web")),
    (VirtualServerState(VirtualServer(EMPTY)), owner("empty")),
    (VirtualServerState(VirtualServer(DRAINED), (real(A, weight=0),)), owner("drained")),
    (VirtualServerState(VirtualServer(FOREIGN, "wlc"), (real(A),)), None),
]


def line_of(text: str, needle: str) -> str:
    return next(line for line in text.splitlines() if needle in strip(line))


@pytest.mark.parametrize("wide", [False, True])
def test_colour_changes_no_visible_character(wide: bool) -> None:
    """A coloured table, escape codes removed, is exactly the plain table: widths come from the plain text."""
    plain_text = render_table(ITEMS, wide=wide, stats=True, rate=True)
    coloured = render_table(ITEMS, wide=wide, stats=True, rate=True, colour=True)
    assert "\x1b[" in coloured and "\x1b[" not in plain_text
    assert strip(coloured) == plain_text


def test_colour_marks_header_foreign_draining_and_dead_rows() -> None:
    """Header bold, <foreign> dim, a weight-0 real server yellow, no real server taking connections red."""
    out = render_table(ITEMS, colour=True)
    assert out.splitlines()[0].startswith(paint("NAME", BOLD))
    web = line_of(out, "demo/web:http")
    assert paint("203.0.113.12:8080*0", YELLOW) in web and paint("203.0.113.11:8080*1") in web
    assert paint("demo/web:http", RED) not in web
    assert paint("demo/empty:http", RED) in line_of(out, "demo/empty:http")
    assert paint("<none>", RED) in line_of(out, "demo/empty:http")
    assert paint("demo/drained:http", RED) in line_of(out, "demo/drained:http")
    assert paint("<foreign>", DIM) in line_of(out, "<foreign>")


def test_wide_colours_each_draining_real_server_row() -> None:
    """-o wide paints the sub-row of a weight-0 real server yellow and leaves weight-1 rows plain."""
    out = render_table(ITEMS[:1], wide=True, colour=True)
    lines = out.splitlines()
    assert paint("weight 0", YELLOW) in lines[3]
    assert "\x1b[" not in lines[2]


def test_table_aligns_on_plain_width_of_coloured_pieces() -> None:
    """A cell made of coloured pieces takes its plain width, so the next column starts where it would unpainted."""
    out = table(["A", "B"], [[(("xx", YELLOW), (",y", "")), "1"], ["z", "2"]], colour=True)
    first, second = (strip(line) for line in out.splitlines()[1:])
    assert first.index("1") == second.index("2") == len("xx,y") + 3


def test_measured_rates_replace_the_kernels() -> None:
    """Given measured rates, the rate columns show them (one decimal below 10); a missing entry shows '-'."""
    vs = VirtualServerState(VirtualServer(WEB), (real(A),), Stats(cps=99, inpps=99))
    items = [(vs, owner("web"))]
    measured = {(WEB, None): Rates(cps=0.5, inpps=150, outpps=0, inbps=25_000, outbps=1_500_000)}
    row = render_table(items, rate=True, rates=measured).splitlines()[1].split()
    assert row[-5:] == ["0.5", "150", "0", "25.0K", "1.5M"]
    assert render_table(items, rate=True, rates={}).splitlines()[1].split()[-5:] == ["-"] * 5
    assert render_table(items, rate=True).splitlines()[1].split()[-5:] == ["99", "99", "0", "0", "0"]


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (0.26, "0.3"), (2, "2.0"), (9.96, "10"), (10.4, "10"), (1234, "1.2K")]
)
def test_rate_text(value: float, text: str) -> None:
    """Rates below 10 keep one decimal; from 10 on they are whole and shortened like counters."""
    assert rate_text(value) == text


@pytest.mark.parametrize(
    ("mode", "isatty", "environ", "expected"),
    [
        ("auto", True, {"TERM": "xterm"}, True),
        ("auto", False, {"TERM": "xterm"}, False),
        ("auto", True, {"TERM": "xterm", "NO_COLOR": "1"}, False),
        ("auto", True, {"TERM": "xterm", "NO_COLOR": ""}, True),
        ("auto", True, {"TERM": "dumb"}, False),
        ("always", False, {"NO_COLOR": "1", "TERM": "dumb"}, True),
        ("never", True, {"TERM": "xterm"}, False),
    ],
)
def test_when_to_colour(mode: str, isatty: bool, environ: dict[str, str], expected: bool) -> None:
    """auto colours a terminal unless NO_COLOR is non-empty or TERM=dumb; always and never are absolute."""
    assert wanted(mode, isatty=isatty, environ=environ) is expected
