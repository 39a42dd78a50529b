"""The benchmark's pure parts: the three rule-set generators agree with each other and with what
ipvsctl itself makes of the manifests; floors; the report's tables, document update and SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from ipvsctl.bench import measure, rules
from ipvsctl.bench.floors import check
from ipvsctl.bench.measure import difference, flip_plan
from ipvsctl.bench.report import NONE, TIMES, begin, end, plot, render_sections, update_document
from ipvsctl.bench.results import Machine, Results, Size, Timing, failed
from ipvsctl.model.ipvs import Forward
from ipvsctl.settings import Settings
from ipvsctl.sources.files import load
from ipvsctl.translate import translate

# A virtual server as a comparable value: (protocol, vip:port, scheduler, sorted reals), a real
# server as (address:port, forwarding, weight).
VS = tuple[str, str, str, tuple[tuple[str, str, int], ...]]


def from_ipvsadm(text: str) -> set[VS]:
    """Parse `ipvsadm -R` input (the -Sn syntax)."""
    services: dict[str, tuple[str, str]] = {}
    reals: dict[str, list[tuple[str, str, int]]] = {}
    for line in text.splitlines():
        words = line.split()
        opts = dict(zip(words[1::2], words[2::2], strict=False))
        if words[0] == "-A":
            assert set(opts) == {"-t", "-s"}, line
            services[opts["-t"]] = ("tcp", opts["-s"])
            reals[opts["-t"]] = []
        elif words[0] == "-a":
            assert words[5:] == ["-m", "-w", words[7]], line
            reals[opts["-t"]].append((opts["-r"], "masq", int(words[7])))
        else:
            raise AssertionError(line)
    return {(proto, key, sched, tuple(sorted(reals[key]))) for key, (proto, sched) in services.items()}


def keepalived_blocks(text: str) -> list[tuple[list[str], list | None]]:
    """keepalived.conf as nested (words, block or None) statements, one statement per line."""
    stack: list[list] = [[]]
    for raw in text.splitlines():
        words = raw.split()
        if not words:
            continue
        if words[-1] == "{":
            node: tuple[list[str], list] = (words[:-1], [])
            stack[-1].append(node)
            stack.append(node[1])
        elif words == ["}"]:
            stack.pop()
        else:
            stack[-1].append((words, None))
    assert len(stack) == 1, "unbalanced braces"
    return stack[0]


def from_keepalived(text: str) -> set[VS]:
    out: set[VS] = set()
    for words, body in keepalived_blocks(text):
        if words == ["global_defs"]:
            continue
        assert words[0] == "virtual_server" and body is not None, words
        settings = {ws[0]: ws[1:] for ws, sub in body if sub is None}
        assert set(settings) == {"lb_algo", "lb_kind", "protocol"}, settings
        forward = {"NAT": "masq"}[settings["lb_kind"][0]]
        reals = []
        for ws, sub in body:
            if sub is not None:
                assert ws[0] == "real_server", ws
                real = {w[0]: w[1:] for w, _ in sub}
                assert set(real) == {"weight"}, real
                reals.append((f"{ws[1]}:{ws[2]}", forward, int(real["weight"][0])))
        out.add(
            (settings["protocol"][0].lower(), f"{words[1]}:{words[2]}", settings["lb_algo"][0], tuple(sorted(reals)))
        )
    return out


def from_manifests(directory: Path) -> set[VS]:
    """What ipvsctl's own loader and translator make of the benchmark's manifests."""
    desired = translate(load([str(directory)]), Settings(node_ips=(), node_name="bench"))
    assert not desired.problems, desired.problems
    out: set[VS] = set()
    for key, svc in desired.services.items():
        assert svc.bind, "a ClusterIP is bound to the dummy interface"
        assert svc.server.flags == 0 and svc.server.timeout == 0
        reals = tuple(
            sorted(
                (f"{r.key.address}:{r.key.port}", {Forward.MASQ: "masq"}[r.forward], r.weight)
                for r in svc.reals
                if r.upper_threshold == 0 and r.lower_threshold == 0
            )
        )
        assert len(reals) == len(svc.reals)
        assert key.protocol is not None
        out.add((key.protocol.name.lower(), f"{key.address}:{key.port}", svc.server.scheduler, reals))
    return out


def write_manifests(directory: Path, services: tuple[rules.BenchService, ...]) -> None:
    for svc in services:
        (directory / svc.file_name).write_text(rules.manifest(svc))


def test_three_generators_describe_the_same_virtual_servers(tmp_path: Path) -> None:
    services = rules.rule_set(300)  # crosses the 250-per-/24 ClusterIP boundary
    write_manifests(tmp_path, services)
    from_ipvsctl = from_manifests(tmp_path)
    assert len(from_ipvsctl) == 300
    assert from_ipvsadm(rules.ipvsadm_rules(services)) == from_ipvsctl
    assert from_keepalived(rules.keepalived_config(services)) == from_ipvsctl
    vs = next(v for v in from_ipvsctl if v[1] == "10.96.1.1:80")  # service 250
    assert vs[0] == "tcp" and vs[2] == "rr"
    assert [r[0] for r in vs[3]][:2] == ["10.244.15.161:8080", "10.244.15.162:8080"]
    assert {r[1:] for r in vs[3]} == {("masq", 1)}


def test_addresses_are_distinct_and_in_the_usual_ranges() -> None:
    import ipaddress

    services = rules.rule_set(10_000)
    vips = [ipaddress.ip_address(s.vip) for s in services]
    pods = [ipaddress.ip_address(a) for s in services for a in s.endpoints]
    assert len(set(vips)) == 10_000 and len(set(pods)) == 100_000
    assert all(v in ipaddress.ip_network("10.96.0.0/12") for v in vips)
    assert all(p in ipaddress.ip_network("10.244.0.0/14") for p in pods)
    assert not any(str(v).endswith((".0", ".255")) for v in vips)
    assert services[-1].vip == "10.96.39.250"


def test_not_ready_endpoints_leave_the_real_servers(tmp_path: Path) -> None:
    svc = rules.service(7)
    (tmp_path / svc.file_name).write_text(rules.manifest(svc, not_ready={0, 3}))
    (vs,) = from_manifests(tmp_path)
    addresses = {r[0].split(":")[0] for r in vs[3]}
    assert addresses == set(svc.endpoints) - {svc.endpoints[0], svc.endpoints[3]}


def test_rule_lines_match_ipvsadm_save_syntax() -> None:
    svc = rules.service(0)
    lines = rules.ipvsadm_lines([svc])
    assert lines[0] == "-A -t 10.96.0.1:80 -s rr"
    assert lines[1] == "-a -t 10.96.0.1:80 -r 10.244.0.1:8080 -m -w 1"
    assert len(lines) == 11
    with pytest.raises(ValueError):
        rules.service(rules.MAX_SERVICES)


def test_difference_reports_missing_and_extra_lines() -> None:
    want = sorted(rules.ipvsadm_lines(rules.rule_set(2)))
    assert difference(want, list(want)) is None
    have = sorted([*want[1:], "-A -t 10.96.9.9:80 -s wlc"])
    text = difference(want, have)
    assert text is not None and "1 missing" in text and "1 unexpected" in text and "wlc" in text


def test_flip_plan_alternates_and_returns_each_endpoint() -> None:
    services = rules.rule_set(1000)
    flips = flip_plan(services, 5)
    assert [(f.service.name, f.ready) for f in flips] == [
        ("svc-00250", False), ("svc-00500", False), ("svc-00250", True), ("svc-00500", True), ("svc-00750", False),
    ]  # fmt: skip
    assert len(flip_plan(rules.rule_set(1), 5)) == 5


# --- results, floors, report ----------------------------------------------------------------


def sample_size(n: int, scale: float, *, keepalived_error: str | None = None) -> Size:
    return Size(
        services=n,
        endpoints=10,
        reset="module reload",
        cold_ipvsctl=Timing((0.1 * scale,)),
        cold_ipvsctl_program=Timing((0.02 * scale,)),
        cold_ipvsadm=Timing((1.0 * scale,)),
        cold_keepalived=failed(keepalived_error) if keepalived_error else Timing((0.4 * scale,)),
        list_ipvsadm=Timing((0.05 * scale, 0.06 * scale, 0.07 * scale)),
        dump_diff_ipvsctl=Timing((0.03 * scale,) * 3),
        edit_ipvsadm=Timing((0.004, 0.005, 0.006, 0.005, 0.005)),
        flip_agent_sync=Timing((0.003, 0.004, 0.004, 0.005, 0.004)),
        flip_agent_end_to_end=Timing((0.2,) * 5),
        manifests_agent_start=Timing((0.5 * scale,)),
        manifests_agent_sync=Timing((0.3 * scale,)),
        agent_peak_rss_bytes=int(40e6 * scale**0.3),
        diff_ipvsctl=Timing((0.06 * scale, 0.08 * scale, 0.07 * scale)),
        version_ipvsctl=Timing((0.05,) * 5),
        cold_ipvsctl_json=Timing((0.08 * scale,)),
        cold_ipvsctl_json_program=Timing((0.02 * scale,)),
        kube_agent_ready=Timing((0.05 * scale,)),
        kube_agent_start=Timing((0.1 * scale,)),
        kube_agent_sync=Timing((0.04 * scale,)),
        kube_flip_agent_sync=Timing((0.002,) * 5),
        kube_flip_end_to_end=Timing((0.008, 0.009, 0.011, 0.012, 0.012)),
        kube_agent_peak_rss_bytes=int(50e6 * scale**0.3),
        kube_lists="Services: 1 LIST in 2 chunks",
    )


def sample_results(sizes: tuple[Size, ...]) -> Results:
    machine = Machine(host_cpu="Test CPU", host_cores=2, guest_kernel="6.1.0-test", emulation="QEMU TCG, no KVM",
                      python="3.11.7", ipvsadm="ipvsadm v1.31", keepalived="Keepalived v2.2.7")  # fmt: skip
    return Results(
        machine,
        sizes,
        command="scripts/bench --max 10000",
        started="t0",
        finished="t1",
        max_services=10_000,
        host_version_ipvsctl=Timing((0.03, 0.04, 0.05)),
    )


def test_results_survive_json() -> None:
    results = sample_results((sample_size(100, 1), sample_size(1000, 10, keepalived_error="boom")))
    again = Results.from_json(results.to_json())
    assert again == results
    assert again.sizes[1].cold_keepalived.seconds is None and again.sizes[1].cold_keepalived.error == "boom"
    assert again.sizes[0].list_ipvsadm.seconds == pytest.approx(0.06)


def test_floors_pass_and_fail() -> None:
    sizes = (sample_size(100, 1), sample_size(1000, 10), sample_size(10_000, 100))
    floors = {f.name.split(":")[0]: f for f in check(sizes, Timing((0.03, 0.2, 0.04)))}
    assert floors["cold programming"].value == pytest.approx(0.02)  # the programming phase
    assert floors["cold programming"].passed is True
    assert floors["cold apply, YAML"].value == pytest.approx(0.25) and floors["cold apply, YAML"].passed is True
    assert floors["cold apply, JSON"].value == pytest.approx(0.2) and floors["cold apply, JSON"].passed is True
    start = floors["agent --manifests start"]
    assert start.value == pytest.approx(1.25) and start.passed is False
    assert floors["agent --kubernetes start"].value == pytest.approx(0.25)
    # the API → kernel flip, worst size over one ipvsadm -e (medians 0.011 and 0.005), and flat
    assert floors["EndpointSlice change"].value == pytest.approx(2.2) and floors["EndpointSlice change"].passed is False
    assert floors["EndpointSlice change flat"].value == pytest.approx(1.0)
    assert floors["no-op diff"].value == pytest.approx(0.07 / 0.06)
    version = floors["ipvsctl version, whole process, host"]
    assert version.value == pytest.approx(0.04) and version.passed is True and version.where == "host"
    assert {f.issue for f in check(sizes)} == {4, 15}
    assert floors["no-op resync"].value == pytest.approx(0.5)
    assert floors["no-op resync"].where == "N=10,000"
    assert floors["endpoint flip"].value == pytest.approx(0.8)
    assert floors["endpoint flip flat"].value == pytest.approx(1.0)
    assert floors["agent peak RSS, --manifests"].value == pytest.approx(40 * 100**0.3, rel=1e-3)
    assert floors["agent peak RSS, --kubernetes"].value == pytest.approx(50 * 100**0.3, rel=1e-3)
    assert floors["agent peak RSS, --kubernetes"].passed is False
    assert not any(f.provisional for f in floors.values())


def test_flip_flatness_is_growth_over_the_smallest_size() -> None:
    def with_flip(n: int, seconds: float) -> Size:
        return replace(sample_size(n, 1), flip_agent_sync=Timing((seconds,)))

    def flat(*sizes: Size) -> float | None:
        return {f.name.split(":")[0]: f for f in check(sizes)}["endpoint flip flat"].value

    assert flat(with_flip(1000, 0.014), with_flip(100, 0.058)) == pytest.approx(0.014 / 0.058)  # faster at scale
    assert flat(with_flip(100, 0.01), with_flip(1000, 0.02), with_flip(10_000, 0.012)) == pytest.approx(2.0)
    assert flat(with_flip(100, 0.01)) is None


def test_a_short_run_is_provisional_and_a_failed_measure_not_measured() -> None:
    slow = sample_size(1000, 10)
    slow = replace(slow, cold_ipvsctl=failed("mismatch"), cold_ipvsctl_program=failed("mismatch"))
    floors = {f.name.split(":")[0]: f for f in check((sample_size(100, 1), slow))}
    assert floors["cold programming"].passed is None and floors["cold programming"].verdict == "not measured"
    assert floors["no-op resync"].provisional and floors["no-op resync"].where == "N=1,000"
    assert floors["no-op resync"].verdict == "pass (provisional)"
    assert floors["cold apply, YAML"].verdict == "not measured"
    assert floors["ipvsctl version, whole process, host"].verdict == "not measured"  # no host figure given


def test_report_tables_and_document(tmp_path: Path) -> None:
    big = replace(sample_size(1000, 10, keepalived_error="kernel state differs"), agent_peak_rss_bytes=150_000_000)
    results = sample_results((sample_size(100, 1), big))
    sections = render_sections(results)
    cold = sections["results"].split("**No-op resync**")[0]
    rows = [line for line in cold.splitlines() if line.startswith("| 1")]
    assert rows[0].split("|")[1:-1] == [
        " 100 ",
        " 1,000 ",
        " 100 ms ",
        " 80 ms ",
        " 1.00 s ",
        " 400 ms ",
        f" 0.25{TIMES} ",
        f" 0.20{TIMES} ",
        " 20 ms ",
        f" 0.02{TIMES} ",
    ]
    assert "**failed**" in rows[1] and rows[1].rstrip().endswith(f"| {NONE} | {NONE} | 200 ms | 0.02{TIMES} |")
    start = sections["results"].split("**Agent start**")[1].split("**No-op resync**")[0]
    assert next(line for line in start.splitlines() if line.startswith("| 100 ")).split("|")[1:-1] == [
        " 100 ", " 500 ms ", " 300 ms ", f" 1.25{TIMES} ", " 50 ms ", " 100 ms ", " 40 ms ", f" 0.25{TIMES} ",
    ]  # fmt: skip
    assert "Services: 1 LIST in 2 chunks" in sections["results"]
    assert "N=1,000, cold: keepalived: kernel state differs" in sections["results"]
    assert "| host CPU | Test CPU, 2 cores |" in sections["machine"]
    floors = {row.split(" | ")[1]: row for row in sections["floors"].splitlines() if row.count(" | ") > 2}
    assert floors["agent peak RSS, --manifests"].startswith("| #15 |")
    assert floors["agent peak RSS, --manifests"].endswith("| N=1,000 | 150.0 MB | ≤ 80 MB | FAIL (provisional) |")
    assert floors["cold programming: apply's programming phase / ipvsadm -R"].endswith(
        f"| 0.02{TIMES} | ≤ 0.2{TIMES} | pass (provisional) |"
    )
    assert "stopped at 1,000." in sections["floors"]

    doc = (
        "# Performance\n\nIntro prose.\n\n"
        + begin("results")
        + "\nSTALE TABLE\n"
        + end("results")
        + "\n\nMore prose.\n"
    )
    updated = update_document(doc, sections)
    assert updated.startswith("# Performance\n\nIntro prose.\n\n" + begin("results"))
    assert "STALE TABLE" not in updated and "More prose." in updated
    assert updated.count(begin("machine")) == 1 and updated.count(begin("results")) == 1
    assert update_document(updated, sections) == updated  # idempotent


def test_plot_is_valid_svg_with_a_line_per_measure() -> None:
    results = sample_results((sample_size(100, 1), sample_size(1000, 10), sample_size(10_000, 100)))
    svg = plot(results)
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    lines = root.findall(".//s:g[@class='series']/s:polyline", ns)
    assert len(lines) == 12  # every measure but the fresh dump+diff, which the sample lacks
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"100", "1,000", "10,000"} <= texts
    assert {"cold: ipvsctl apply", "resync: ipvsadm -Ln", "flip: one ipvsadm -e"} <= texts
    assert {"1 ms", "1 s", "100 s"} <= texts
    # log-log: the cold ipvsadm line (ten times slower per decade of N) is straight and rises left to right
    cold = next(
        g for g in root.findall(".//s:g[@class='series']", ns) if g.findtext("s:title", None, ns) == "cold: ipvsadm -R"
    )
    pts = [tuple(map(float, p.split(","))) for p in cold.find("s:polyline", ns).get("points").split()]
    assert pts[0][0] < pts[1][0] < pts[2][0] and pts[0][1] > pts[1][1] > pts[2][1]
    assert pts[1][0] - pts[0][0] == pytest.approx(pts[2][0] - pts[1][0], abs=0.2)
    assert pts[0][1] - pts[1][1] == pytest.approx(pts[1][1] - pts[2][1], abs=0.2)


def test_the_programming_phase_comes_from_the_applied_log_line() -> None:
    log = "\n".join(
        [
            '{"event": "manifest file read", "file": "a.yaml"}',
            "not json at all",
            '{"event": "applied", "operations": 3, "seconds": {"manifests": 2.5, "plan": 0.1, "program": 0.75}}',
        ]
    )
    assert measure.applied_phase(log, "program") == Timing((0.75,))
    assert measure.applied_phase(log, "manifests") == Timing((2.5,))
    missing = measure.applied_phase('{"event": "applied", "seconds": {}}', "program")
    assert not missing.ok and "no 'program' phase" in (missing.error or "")
