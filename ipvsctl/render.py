"""What people read: the `list` table and its json/yaml forms, and the `diff` lines."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import yaml

from ipvsctl.checks.report import Health, Table, summary
from ipvsctl.model.desired import Owner
from ipvsctl.model.ipvs import (
    Forward,
    RealServerState,
    ServiceFlag,
    ServiceKey,
    Stats,
    VirtualServerState,
)
from ipvsctl.model.ops import Operation, describe, service_of

if TYPE_CHECKING:
    from ipvsctl.watch import RateKey, Rates

FLAG_NAMES = {
    ServiceFlag.PERSISTENT: "persistent",
    ServiceFlag.ONEPACKET: "ops",
    ServiceFlag.SCHED1: "flag-1",
    ServiceFlag.SCHED2: "flag-2",
    ServiceFlag.SCHED3: "flag-3",
}
SCHED_FLAG_NAMES = {
    "sh": {ServiceFlag.SCHED1: "sh-fallback", ServiceFlag.SCHED2: "sh-port"},
    "mh": {ServiceFlag.SCHED1: "mh-fallback", ServiceFlag.SCHED2: "mh-port"},
}


def flag_names(vs: VirtualServerState) -> list[str]:
    names = []
    sched = SCHED_FLAG_NAMES.get(vs.server.scheduler, {})
    for bit, name in FLAG_NAMES.items():
        if vs.server.flags & bit:
            names.append(sched.get(bit, name))
    return names


def forward_name(forward: Forward) -> str:
    return {
        Forward.MASQ: "masq",
        Forward.ROUTE: "route",
        Forward.TUNNEL: "tunnel",
        Forward.LOCAL: "local",
        Forward.BYPASS: "bypass",
    }[forward]


def rows(
    dump: Sequence[VirtualServerState], owners: Mapping[ServiceKey, Owner], show_all: bool
) -> list[tuple[VirtualServerState, Owner | None]]:
    """Virtual servers to show, owned first in name order, foreign ones last (only with --all).

    Real servers are sorted by address: the kernel lists them newest first, which reads badly."""
    dump = [
        replace(vs, real_servers=tuple(sorted(vs.real_servers, key=lambda r: r.server.key.sort_key()))) for vs in dump
    ]
    owned = [(vs, owners[vs.server.key]) for vs in dump if vs.server.key in owners]
    owned.sort(key=lambda item: (item[1], item[0].server.key.sort_key()))
    foreign: list[tuple[VirtualServerState, Owner | None]] = []
    if show_all:
        foreign = [(vs, None) for vs in dump if vs.server.key not in owners]
        foreign.sort(key=lambda item: item[0].server.key.sort_key())
    return [*owned, *foreign]


def _stats(stats: Stats) -> dict[str, int]:
    return asdict(stats)


def _health_of(health: Table | None, owner: Owner | None, rs: RealServerState) -> Health | None:
    if health is None or owner is None:
        return None
    return health.get(owner.namespace, owner.name, rs.server.key.address, rs.server.key.port)


def real_json(rs: RealServerState, checked: Health | None = None) -> dict[str, Any]:
    return {
        "address": str(rs.server.key.address),
        "port": rs.server.key.port,
        "weight": rs.server.weight,
        "forward": forward_name(rs.server.forward),
        "upper_threshold": rs.server.upper_threshold,
        "lower_threshold": rs.server.lower_threshold,
        "active_conns": rs.active_conns,
        "inactive_conns": rs.inactive_conns,
        "persistent_conns": rs.persistent_conns,
        "stats": _stats(rs.stats),
        "health": checked.to_json() if checked else None,
    }


def to_objects(
    items: list[tuple[VirtualServerState, Owner | None]], health: Table | None = None
) -> list[dict[str, Any]]:
    """The documented `list -o json` shape; ``health``: the running agent's checks."""
    out = []
    for vs, owner in items:
        key = vs.server.key
        out.append(
            {
                "protocol": key.protocol.name if key.protocol else None,
                "address": str(key.address),
                "port": key.port,
                "fwmark": key.fwmark,
                "scheduler": vs.server.scheduler,
                "flags": flag_names(vs),
                "persistence_timeout": vs.server.timeout,
                "owner": "ipvsctl" if owner else "foreign",
                "service": {"namespace": owner.namespace, "name": owner.name, "port_name": owner.port_name}
                if owner
                else None,
                "real_servers": [real_json(rs, _health_of(health, owner, rs)) for rs in vs.real_servers],
                "stats": _stats(vs.stats),
            }
        )
    return out


def render_json(items: list[tuple[VirtualServerState, Owner | None]], health: Table | None = None) -> str:
    return json.dumps(to_objects(items, health), indent=2)


def render_yaml(items: list[tuple[VirtualServerState, Owner | None]], health: Table | None = None) -> str:
    return yaml.safe_dump(to_objects(items, health), sort_keys=False)


def virtual_text(key: ServiceKey) -> str:
    if key.fwmark:
        return f"fwmark:{key.fwmark}"
    host = f"[{key.address}]" if key.address.version == 6 else str(key.address)
    return f"{host}:{key.port}"


def human(n: int) -> str:
    """Counters the way `kubectl top` would: 1234567 → 1.2M."""
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


Span = tuple[str, str]  # a piece of a cell's text and its colour code ("" for none)
Cell = str | tuple[Span, ...]  # a cell: plain text, or pieces coloured separately


def plain(cell: Cell) -> str:
    return cell if isinstance(cell, str) else "".join(text for text, _ in cell)


def table(headers: list[str], body: list[list[Cell]], styles: Sequence[str] = (), colour: bool = False) -> str:
    """Columns three spaces apart, widths measured on the plain text.

    ``styles`` gives each body row a colour code, used only with ``colour`` (the header is then bold);
    a cell's own pieces are painted in the row's code plus theirs."""
    widths = [max([len(h), *(len(plain(r[i])) for r in body)]) for i, h in enumerate(headers)]
    if not colour:
        texts = [headers, *([plain(c) for c in r] for r in body)]
        return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in texts)
    from ipvsctl.colour import BOLD, paint

    def line(cells: Sequence[Cell], style: str) -> str:
        out = []
        for cell, width in zip(cells, widths, strict=True):
            pieces = [(cell, "")] if isinstance(cell, str) else cell
            text = "".join(paint(t, style, code) for t, code in pieces)
            out.append(text + " " * (width - len(plain(cell))))
        return "   ".join(out).rstrip()

    row_styles = list(styles) + [""] * (len(body) - len(styles))
    return "\n".join([line(headers, BOLD), *(line(r, st) for r, st in zip(body, row_styles, strict=True))])


def rate_text(value: float) -> str:
    """A measured rate: one decimal below 10 (0.5 connections a second is not 0), else as ``human``."""
    if value == 0:
        return "0"
    if round(value, 1) < 10:
        return f"{value:.1f}"
    return human(round(value))


def render_table(
    items: list[tuple[VirtualServerState, Owner | None]],
    *,
    wide: bool = False,
    stats: bool = False,
    rate: bool = False,
    rates: Mapping[RateKey, Rates] | None = None,
    colour: bool = False,
    health: Table | None = None,
) -> str:
    """kubectl-like table, one row per virtual server (``wide``: one row per real server too).

    ``rates``, when given, replaces the kernel's own rate estimates in the ``rate`` columns (a
    missing entry shows as ``-``). ``colour`` paints it for a terminal: bold header, ``<foreign>``
    rows dim, rows with no real server taking new connections red, weight-0 real servers yellow."""
    if not items:
        return "No virtual servers owned by ipvsctl."
    from ipvsctl.colour import DIM, RED, YELLOW

    headers = ["NAME", "PROTO", "VIRTUAL", "SCHEDULER", "REAL SERVERS", "ACTIVE", "INACTIVE"]
    checks = {(id(vs), rs.server.key): _health_of(health, owner, rs) for vs, owner in items for rs in vs.real_servers}
    checked = any(h is not None for h in checks.values())
    if checked:
        headers.append("HEALTH")
    if wide:
        headers += ["FLAGS", "PERSISTENCE"]
    if stats:
        headers += ["CONNS", "INPKTS", "OUTPKTS", "INBYTES", "OUTBYTES"]
    if rate:
        headers += ["CPS", "INPPS", "OUTPPS", "INBPS", "OUTBPS"]
    body: list[list[Cell]] = []
    styles: list[str] = []
    for vs, owner in items:
        key = vs.server.key
        reals = vs.real_servers
        real_text: Cell
        if wide:
            real_text = f"{len(reals)}"
        elif not reals:
            real_text = "<none>"
        else:
            pieces: list[Span] = []
            for i, rs in enumerate(reals):
                if i:
                    pieces.append((",", ""))
                pieces.append((f"{rs.server.key}*{rs.server.weight}", "" if rs.server.weight else YELLOW))
            real_text = tuple(pieces)
        row: list[Cell] = [
            str(owner) if owner else "<foreign>",
            key.protocol.name if key.protocol else "FWM",
            virtual_text(key),
            vs.server.scheduler,
            real_text,
            str(sum(r.active_conns for r in reals)),
            str(sum(r.inactive_conns for r in reals)),
        ]
        if checked:
            row.append(summary(checks[(id(vs), r.server.key)] for r in reals))
        if wide:
            row += [",".join(flag_names(vs)) or "-", f"{vs.server.timeout}s" if vs.server.timeout else "-"]
        row += _counter_cells(vs.stats, stats, rate, rates, (key, None))
        body.append(row)
        dim = "" if owner else DIM
        styles.append(";".join(filter(None, [dim, "" if any(r.server.weight for r in reals) else RED])))
        if wide:
            for rs in reals:
                sub: list[Cell] = [
                    "",
                    "",
                    f"  -> {rs.server.key}",
                    forward_name(rs.server.forward),
                    f"weight {rs.server.weight}",
                    str(rs.active_conns),
                    str(rs.inactive_conns),
                    *([_health_text(checks[(id(vs), rs.server.key)])] if checked else []),
                    "",
                    "",
                ]
                body.append(sub + _counter_cells(rs.stats, stats, rate, rates, (key, rs.server.key)))
                styles.append(";".join(filter(None, [dim, "" if rs.server.weight else YELLOW])))
    return table(headers, body, styles, colour)


def _health_text(checked: Health | None) -> str:
    if checked is None:
        return "-"
    return f"{checked.state} ({checked.reason})" if checked.reason and checked.state != "up" else checked.state


def _counter_cells(
    s: Stats, stats: bool, rate: bool, rates: Mapping[RateKey, Rates] | None, key: RateKey
) -> list[Cell]:
    cells: list[Cell] = []
    if stats:
        cells += [human(s.conns), human(s.inpkts), human(s.outpkts), human(s.inbytes), human(s.outbytes)]
    if rate and rates is None:
        cells += [str(s.cps), str(s.inpps), str(s.outpps), human(s.inbps), human(s.outbps)]
    elif rate:
        r = rates.get(key)
        values = (r.cps, r.inpps, r.outpps, r.inbps, r.outbps) if r else None
        cells += [rate_text(v) for v in values] if values else ["-"] * 5
    return cells


def render_diff(ops: Sequence[Operation], owners: Mapping[ServiceKey, Owner]) -> str:
    """One line per operation: '+' adds, '~' edits, '-' deletes; the Service it is for at the end."""
    lines = []
    for op in ops:
        kind = type(op).__name__
        sign = "+" if kind.startswith(("Add", "Bind")) else "-" if kind.startswith(("Delete", "Unbind")) else "~"
        key = service_of(op)
        owner = owners.get(key) if key else None
        suffix = f"  ({owner})" if owner else ""
        lines.append(f"{sign} {describe(op)}{suffix}")
    return "\n".join(lines)
