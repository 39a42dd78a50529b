"""Pure: the issues' performance floors, checked against a set of results.

Issue 15's floors, at 10,000 Services unless said:

- the programming phase of a cold ``ipvsctl apply`` ≤ 0.2 of ``ipvsadm -R``;
- cold ``ipvsctl apply`` as a whole process ≤ 1.0 of keepalived loading the same rules from YAML
  manifests, ≤ 0.5 from JSON manifests;
- ``ipvsctl agent --manifests``, start → kernel complete, ≤ 1.0 of keepalived;
- ``ipvsctl agent --kubernetes`` against the test API server, start → kernel complete, ≤ 0.5 of
  keepalived;
- one EndpointSlice change on the API server → the kernel shows it ≤ twice one ``ipvsadm -e``
  process, at every size, and flat (at no size above 1.5 times its time at the smallest, 100);
- a no-op ``ipvsctl diff`` as a whole process ≤ 1.5 of ``ipvsadm -Ln``;
- ``ipvsctl version`` as a whole process on the host ≤ 0.1 s (the VM's figure is reported, not
  checked: process start-up under emulation says nothing about a host);
- the agent's peak RSS ≤ 80 MB, with either source.

Issue 4's that are still wanted: the agent's full resync ≤ 1.0 of ``ipvsadm -Ln``; one endpoint
flip (the agent's sync of a manifest change) ≤ twice one ``ipvsadm -e`` at every size, and flat.

A floor set at 10,000 is checked at the largest size measured when the run stopped earlier
(``--max``); the verdict then says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ipvsctl.bench.results import Size, Timing

TARGET_SERVICES = 10_000
MB = 1_000_000


@dataclass(frozen=True)
class Floor:
    name: str
    where: str  # the sizes it was checked at
    value: float | None  # None: not measured (or the measurement failed)
    limit: float
    unit: str  # "ratio", "MB" or "s"
    provisional: bool = False  # checked below the size the floor is set at
    issue: int = 15  # the issue that set it

    @property
    def passed(self) -> bool | None:
        return None if self.value is None else self.value <= self.limit

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "not measured"
        word = "pass" if self.passed else "FAIL"
        return f"{word} (provisional)" if self.provisional else word


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _at_target(sizes: Sequence[Size]) -> tuple[Size | None, bool]:
    """The size a 10,000-Service floor is checked at, and whether that is a stand-in."""
    exact = [s for s in sizes if s.services == TARGET_SERVICES]
    if exact:
        return exact[0], False
    if not sizes:
        return None, True
    return max(sizes, key=lambda s: s.services), True


def _where(size: Size | None) -> str:
    return f"N={size.services:,}" if size else "-"


def _seconds(size: Size | None, name: str) -> float | None:
    return size.timing(name).seconds if size else None


def _worst_ratio(sizes: Sequence[Size], top: str, bottom: str) -> float | None:
    """The largest ``top / bottom`` over the sizes; None if any size lacks either."""
    ratios = [ratio(s.timing(top).seconds, s.timing(bottom).seconds) for s in sizes]
    if not ratios or None in ratios:
        return None
    return max(r for r in ratios if r is not None)


def _growth(sizes: Sequence[Size], name: str) -> float | None:
    """The slowest larger size over the smallest (sizes sorted); None below two sizes or with a gap."""
    values = [s.timing(name).seconds for s in sizes]
    if len(values) < 2 or None in values:
        return None
    known = [v for v in values if v is not None]
    return ratio(max(known[1:]), known[0])


def _mb(value: int | None) -> float | None:
    return value / MB if value else None


def check(sizes: Sequence[Size], host_version: Timing | None = None) -> tuple[Floor, ...]:
    """Every floor, in the order of the issue's table (issue 15's, then issue 4's kept)."""
    sizes = sorted(sizes, key=lambda s: s.services)
    target, provisional = _at_target(sizes)
    where = _where(target)
    span = _where(sizes[0]) if sizes else "-"
    if len(sizes) > 1:
        span += f"…{sizes[-1].services:,}"
    short = not sizes or sizes[-1].services < TARGET_SERVICES

    def at_target(name: str, top: str, bottom: str, limit: float, issue: int = 15) -> Floor:
        value = ratio(_seconds(target, top), _seconds(target, bottom))
        return Floor(name, where, value, limit, "ratio", provisional, issue)

    def rss(name: str, value: int | None) -> Floor:
        return Floor(name, where, _mb(value), 80.0, "MB", provisional)

    return (
        at_target("cold programming: apply's programming phase / ipvsadm -R", "cold_ipvsctl_program",
                  "cold_ipvsadm", 0.2),
        at_target("cold apply, YAML: ipvsctl apply / keepalived", "cold_ipvsctl", "cold_keepalived", 1.0),
        at_target("cold apply, JSON: ipvsctl apply / keepalived", "cold_ipvsctl_json", "cold_keepalived", 0.5),
        at_target("agent --manifests start: start → kernel complete / keepalived", "manifests_agent_start",
                  "cold_keepalived", 1.0),
        at_target("agent --kubernetes start: start → kernel complete / keepalived", "kube_agent_start",
                  "cold_keepalived", 0.5),
        Floor("EndpointSlice change: API → kernel / one ipvsadm -e (worst size)", span,
              _worst_ratio(sizes, "kube_flip_end_to_end", "edit_ipvsadm"), 2.0, "ratio"),
        Floor("EndpointSlice change flat: API → kernel, slowest larger size / smallest", span,
              _growth(sizes, "kube_flip_end_to_end"), 1.5, "ratio", short),
        at_target("no-op diff: ipvsctl diff / ipvsadm -Ln", "diff_ipvsctl", "list_ipvsadm", 1.5),
        Floor("ipvsctl version, whole process, host", "host", host_version.seconds if host_version else None,
              0.1, "s"),
        rss("agent peak RSS, --manifests", target.agent_peak_rss_bytes if target else None),
        rss("agent peak RSS, --kubernetes", target.kube_agent_peak_rss_bytes if target else None),
        at_target("no-op resync: agent full resync / ipvsadm -Ln", "dump_diff_ipvsctl", "list_ipvsadm", 1.0,
                  issue=4),
        Floor("endpoint flip: agent sync / one ipvsadm -e (worst size)", span,
              _worst_ratio(sizes, "flip_agent_sync", "edit_ipvsadm"), 2.0, "ratio", issue=4),
        Floor("endpoint flip flat: agent sync, slowest larger size / smallest", span,
              _growth(sizes, "flip_agent_sync"), 1.5, "ratio", short, issue=4),
    )  # fmt: skip
