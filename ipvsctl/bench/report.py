"""Render benchmark results: ``python -m ipvsctl.bench.report results.json``.

Writes the generated sections of docs/performance.md (between ``<!-- bench:begin NAME -->`` and
``<!-- bench:end NAME -->``; the prose around them is left alone, and a missing section is
appended) and the plot docs/performance.svg. The text form (``render_text``) is what the guest
prints at the end of a run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ipvsctl.bench.floors import Floor, check, ratio
from ipvsctl.bench.results import Results, Size, Timing
from ipvsctl.bench.svg import Series, log_log_chart

REPO = Path(__file__).resolve().parent.parent.parent
SECTIONS = ("machine", "results", "floors")
TIMES = "\u00d7"  # the multiplication sign after a ratio
NONE = "\u2013"  # an en dash: no value


@dataclass(frozen=True)
class Measure:
    field: str  # a Timing field of Size
    label: str
    tool: str  # ipvsctl, ipvsadm or keepalived
    kind: str  # cold, resync or flip


MEASURES = (
    Measure("cold_ipvsctl", "cold: ipvsctl apply", "ipvsctl", "cold"),
    Measure("cold_ipvsadm", "cold: ipvsadm -R", "ipvsadm", "cold"),
    Measure("cold_keepalived", "cold: keepalived", "keepalived", "cold"),
    Measure("cold_ipvsctl_json", "cold: ipvsctl apply, JSON", "ipvsctl", "cold-json"),
    Measure("manifests_agent_start", "start: agent --manifests", "ipvsctl", "start"),
    Measure("kube_agent_start", "start: agent --kubernetes", "ipvsctl", "start-kube"),
    Measure("dump_diff_ipvsctl", "resync: agent full resync", "ipvsctl", "resync"),
    Measure("dump_diff_fresh_ipvsctl", "resync: ipvsctl dump+diff, fresh", "ipvsctl", "resync-fresh"),
    Measure("list_ipvsadm", "resync: ipvsadm -Ln", "ipvsadm", "resync"),
    Measure("flip_agent_sync", "flip: agent sync", "ipvsctl", "flip"),
    Measure("flip_agent_end_to_end", "flip: agent, file → kernel", "ipvsctl", "flip-e2e"),
    Measure("edit_ipvsadm", "flip: one ipvsadm -e", "ipvsadm", "flip"),
    Measure("kube_flip_end_to_end", "flip: agent, API → kernel", "ipvsctl", "flip-kube"),
)
COLORS = {"ipvsctl": "#1f5fa8", "ipvsadm": "#c8491b", "keepalived": "#2e8b3a"}
MARKERS = {"ipvsctl": "circle", "ipvsadm": "square", "keepalived": "triangle"}
DASHES = {
    "cold": "",
    "cold-json": "1 2",
    "start": "12 3",
    "start-kube": "12 3 1 3",
    "resync": "7 4",
    "resync-fresh": "4 2",
    "flip": "2 3",
    "flip-e2e": "9 3 2 3",
    "flip-kube": "9 3 1 3 1 3",
}


# --- numbers as text ----------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    if value is None:
        return NONE
    if value >= 100:
        return f"{value:.0f} s"
    if value >= 10:
        return f"{value:.1f} s"
    if value >= 1:
        return f"{value:.2f} s"
    ms = value * 1000
    if ms >= 10:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def decade_seconds(value: float) -> str:
    """An axis label for a power of ten seconds: 1 ms, 10 ms, 1 s, 100 s."""
    return f"{value:g} s" if value >= 1 else f"{round(value * 1000, 6):g} ms"


def times(value: float | None) -> str:
    if value is None:
        return NONE
    if value >= 100:
        return f"{value:.0f}{TIMES}"
    if value >= 10:
        return f"{value:.1f}{TIMES}"
    return f"{value:.2f}{TIMES}"


def cell(timing: Timing) -> str:
    if timing.error:
        return "**failed**"
    return seconds(timing.seconds)


def floor_value(floor: Floor) -> str:
    if floor.value is None:
        return NONE
    if floor.unit == "MB":
        return f"{floor.value:.1f} MB"
    return f"{floor.value:.3f} s" if floor.unit == "s" else times(floor.value)


def floor_limit(floor: Floor) -> str:
    return f"≤ {floor.limit:g}" + {"MB": " MB", "s": " s"}.get(floor.unit, TIMES)


# --- tables -------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], *, numbers: bool = True) -> str:
    """A Markdown table; with ``numbers`` every column but the first is right-aligned."""
    rule = "|" + "|".join("---:" if i and numbers else "---" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_section(results: Results) -> str:
    m = results.machine
    cores = f", {m.host_cores} cores" if m.host_cores else ""
    rows = [
        ["host CPU", f"{m.host_cpu}{cores}"],
        ["host kernel", m.host_kernel],
        ["emulation", m.emulation],
        ["guest", f"kernel {m.guest_kernel}, {m.guest_cpus} vCPUs ({m.guest_cpu}), {m.guest_memory_mb} MB"],
        ["Python (guest)", m.python],
        ["ipvsctl", m.ipvsctl],
        ["ipvsadm", m.ipvsadm],
        ["keepalived", m.keepalived],
        ["command", f"`{results.command}`" if results.command else NONE],
        ["in the guest", f"`{results.guest_command}`" if results.guest_command else NONE],
        ["run", f"{results.started} to {results.finished} (UTC)" + ("" if results.complete else ", stopped early")],
        ["sizes", ", ".join(f"{s.services:,}" for s in results.sizes) or "none"],
    ]
    resets = sorted({s.reset for s in results.sizes if s.reset})
    rows.append(["kernel reset before each cold run", "; ".join(resets) or NONE])
    return table(["what", "value"], rows, numbers=False)


def _flip_count(results: Results) -> str:
    """How many flips each size's median is of ("11", or "5 to 11" when sizes differ)."""
    counts = sorted({len(s.flip_agent_sync.samples) for s in results.sizes if s.flip_agent_sync.samples})
    if not counts:
        return "0"
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]} to {counts[-1]}"


def _per_size(results: Results, columns: list[tuple[str, Callable[[Size], str]]]) -> str:
    header = ["Services", *(name for name, _ in columns)]
    rows = [[f"{s.services:,}", *(fn(s) for _, fn in columns)] for s in results.sizes]
    return table(header, rows)


def _ratio(a: str, b: str) -> Callable[[Size], str]:
    return lambda s: times(ratio(s.timing(a).seconds, s.timing(b).seconds))


def results_section(results: Results) -> str:
    if not results.sizes:
        return "_No sizes were measured._"
    parts = [
        "**Cold programming** from an empty kernel (wall time; keepalived: from its start until all "
        'virtual and real servers are in the kernel; "of which programming": the part of `ipvsctl apply` '
        "after reading the kernel and the manifests and planning, as it logs it):",
        "",
        _per_size(
            results,
            [
                ("real servers", lambda s: f"{s.reals:,}"),
                ("ipvsctl apply, YAML", lambda s: cell(s.cold_ipvsctl)),
                ("ipvsctl apply, JSON", lambda s: cell(s.cold_ipvsctl_json)),
                ("ipvsadm -R", lambda s: cell(s.cold_ipvsadm)),
                ("keepalived", lambda s: cell(s.cold_keepalived)),
                ("YAML / keepalived", _ratio("cold_ipvsctl", "cold_keepalived")),
                ("JSON / keepalived", _ratio("cold_ipvsctl_json", "cold_keepalived")),
                ("of which programming", lambda s: cell(s.cold_ipvsctl_program)),
                ("programming / ipvsadm -R", _ratio("cold_ipvsctl_program", "cold_ipvsadm")),
            ],
        ),
        "",
        "**Agent start** from an empty kernel and a fresh state directory (so no cache): process start "
        "until the kernel holds every virtual and real server (polled and checked), and the first full "
        "sync as the agent logs it; with `--manifests` (the YAML files) and with `--kubernetes` against "
        "the test API server holding the same Services and EndpointSlices (chunked LIST, then WATCH):",
        "",
        _per_size(
            results,
            [
                ("--manifests: start → complete", lambda s: cell(s.manifests_agent_start)),
                ("its first sync", lambda s: cell(s.manifests_agent_sync)),
                ("/ keepalived", _ratio("manifests_agent_start", "cold_keepalived")),
                ("--kubernetes: start → source ready", lambda s: cell(s.kube_agent_ready)),
                ("start → complete", lambda s: cell(s.kube_agent_start)),
                ("its first sync", lambda s: cell(s.kube_agent_sync)),
                ("/ keepalived", _ratio("kube_agent_start", "cold_keepalived")),
            ],
        ),
        "",
        "**No-op resync** with the Services in place (median of 3): `ipvsadm -Ln` (a whole process) "
        "against ipvsctl's full kernel dump + diff (in process): the agent's own full resync, as its "
        "periodic resync runs it (virtual servers whose `/proc/net/ip_vs` lines have not changed since its "
        "last resync are not asked for again, but for one in 8 in turn; real servers the kernel reports "
        "unchanged are not decoded again), and `observe` + `plan` on a fresh connection, which decodes "
        "every destination; and `ipvsctl diff` as a whole process on the state the cold apply left (its "
        "caches warm, as a user finds them after an apply), which must print nothing:",
        "",
        _per_size(
            results,
            [
                ("ipvsadm -Ln", lambda s: cell(s.list_ipvsadm)),
                ("agent resync", lambda s: cell(s.dump_diff_ipvsctl)),
                ("ipvsctl / ipvsadm", _ratio("dump_diff_ipvsctl", "list_ipvsadm")),
                ("dump+diff, fresh", lambda s: cell(s.dump_diff_fresh_ipvsctl)),
                ("fresh / ipvsadm", _ratio("dump_diff_fresh_ipvsctl", "list_ipvsadm")),
                ("ipvsctl diff, whole process", lambda s: cell(s.diff_ipvsctl)),
                ("diff / ipvsadm -Ln", _ratio("diff_ipvsctl", "list_ipvsadm")),
                ("ipvsctl version, whole process", lambda s: cell(s.version_ipvsctl)),
            ],
        ),
        "",
        f"**One endpoint flip** (median of {_flip_count(results)}): the agent's partial sync as it logs it, "
        "the time from the file write until the kernel shows the change, and one `ipvsadm -e` process:",
        "",
        _per_size(
            results,
            [
                ("one ipvsadm -e", lambda s: cell(s.edit_ipvsadm)),
                ("agent sync", lambda s: cell(s.flip_agent_sync)),
                ("agent / ipvsadm -e", _ratio("flip_agent_sync", "edit_ipvsadm")),
                ("file write → kernel", lambda s: cell(s.flip_agent_end_to_end)),
                ("--kubernetes: agent sync", lambda s: cell(s.kube_flip_agent_sync)),
                ("API → kernel", lambda s: cell(s.kube_flip_end_to_end)),
                ("API → kernel / ipvsadm -e", _ratio("kube_flip_end_to_end", "edit_ipvsadm")),
            ],
        ),
        "",
        "**Agent memory** after the flips (peak RSS, VmHWM), and the LIST requests the test API "
        "server saw from the `--kubernetes` agent:",
        "",
        _per_size(
            results,
            [
                ("--manifests peak RSS", lambda s: megabytes(s.agent_peak_rss_bytes)),
                ("--kubernetes peak RSS", lambda s: megabytes(s.kube_agent_peak_rss_bytes)),
                ("--kubernetes LISTs", lambda s: s.kube_lists or NONE),
            ],
        ),
    ]
    problems = [
        f"- N={s.services:,}, {m.label}: {s.timing(m.field).error}"
        for s in results.sizes
        for m in MEASURES
        if s.timing(m.field).error
    ]
    notes = [f"- N={s.services:,}: {note}" for s in results.sizes for note in s.notes]
    if problems:
        parts += ["", "Failed measurements (no time is reported for them):", "", *problems]
    if notes:
        parts += ["", "Notes:", "", *notes]
    return "\n".join(parts)


def megabytes(value: int | None) -> str:
    return f"{value / 1e6:.1f} MB" if value else NONE


def floors_section(results: Results) -> str:
    floors = check(results.sizes, results.host_version_ipvsctl)
    rows = [[f"#{f.issue}", f.name, f.where, floor_value(f), floor_limit(f), f.verdict] for f in floors]
    text = table(["issue", "floor", "at", "measured", "limit", "result"], rows)
    if any(f.provisional for f in floors):
        text += (
            "\n\n_Provisional_: the floor is set at 10,000 Services and this run stopped at "
            f"{max(s.services for s in results.sizes):,}."
        )
    return text


def render_sections(results: Results) -> dict[str, str]:
    return {
        "machine": machine_section(results),
        "results": results_section(results),
        "floors": floors_section(results),
    }


def render_text(results: Results) -> str:
    parts = []
    for name, body in render_sections(results).items():
        parts += [f"== {name} ==", body, ""]
    return "\n".join(parts)


# --- the document and the plot ------------------------------------------------------------------


def begin(name: str) -> str:
    return f"<!-- bench:begin {name} -->"


def end(name: str) -> str:
    return f"<!-- bench:end {name} -->"


def update_document(text: str, sections: dict[str, str]) -> str:
    """Replace each generated section between its markers; append the missing ones at the end."""
    for name, body in sections.items():
        block = f"{begin(name)}\n\n{body}\n\n{end(name)}"
        pattern = re.compile(re.escape(begin(name)) + r".*?" + re.escape(end(name)), re.DOTALL)
        if pattern.search(text):
            text = pattern.sub(lambda _, b=block: b, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    return text


def plot(results: Results) -> str:
    series = []
    for m in MEASURES:
        points = tuple(
            (float(s.services), v) for s in results.sizes if (v := s.timing(m.field).seconds) is not None and v > 0
        )
        series.append(Series(m.label, points, COLORS[m.tool], DASHES[m.kind], MARKERS[m.tool]))
    return log_log_chart(
        series,
        title="ipvsctl, ipvsadm and keepalived: time against Services (10 endpoints each)",
        x_label="Services (each with 10 endpoints)",
        y_label="seconds (log scale)",
        y_format=decade_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ipvsctl.bench.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, help="results JSON written by the benchmark")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "performance.md")
    parser.add_argument("--svg", type=Path, default=REPO / "docs" / "performance.svg")
    args = parser.parse_args(argv)
    results = Results.from_json(json.loads(args.results.read_text()))
    doc = args.doc.read_text() if args.doc.exists() else "# Performance\n"
    args.doc.write_text(update_document(doc, render_sections(results)))
    if any(s.timing(m.field).ok for s in results.sizes for m in MEASURES):
        args.svg.write_text(plot(results))
        print(f"wrote {args.doc} and {args.svg}")
    else:
        print(f"wrote {args.doc}; no figure to plot, {args.svg} left as it was")
    return 0


if __name__ == "__main__":
    sys.exit(main())
