"""The docs cannot go stale: every ipvsctl command in them parses and runs, and the reference
lists every flag, annotation and metric the code has.

Every fenced sh/bash/shell/console block of README.md and docs/*.md is read by
tests/docs_commands.py. Each ipvsctl command in it is parsed against the real command tree,
then run in-process (typer's CliRunner) on the in-memory kernel, in document order per file,
so an apply → list → cleanup walk-through runs as a reader would run it. Not run, only parsed:
`agent` and `list --watch` without `--count` (they run until stopped), `--install-completion`
(it edits shell start-up files), commands fed by a pipe from a command the test does not run,
and ipvsctl run inside another command (`kubectl exec ... -- ipvsctl`). Other programs (kubectl,
ipvsadm, curl, ip, systemctl, ...) are never run on the host; test_other_commands_are_listed
prints them.
"""

from __future__ import annotations

import re
import shutil
import traceback
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from ipvsctl import cli
from ipvsctl.agent.metrics import Metrics
from ipvsctl.kernel.memory import MemoryKernel
from ipvsctl.model.ipvs import SCHEDULER_FLAGS, ServiceFlag, VirtualServer
from ipvsctl.settings import Settings
from ipvsctl.sources.files import load
from ipvsctl.translate import translate
from tests import docs_commands as dc
from tests.conftest import ip

REPO = dc.REPO
DOCS = REPO / "docs"
REFERENCE = DOCS / "reference.md"
NODE_ADDRESS = "192.0.2.10"  # the node address the docs use with --node-ip
SVG = "{http://www.w3.org/2000/svg}"


def shell_docs() -> list[Path]:
    return [p for p in dc.doc_files() if any(dc.shell_blocks(p.read_text(encoding="utf-8")))]


DOC_IDS = [dc.rel(p) for p in shell_docs()]


def read(path: Path) -> tuple[list[dc.Command], list[dc.Other]]:
    try:
        return dc.read(path)
    except dc.DocError as err:
        pytest.fail(str(err), pytrace=False)


# --- the helper itself ---------------------------------------------------------------------

SAMPLE_DOC = """\
# Sample

```sh
sudo ipvsctl apply -f examples/ \\
    --node-ip 192.0.2.10          # exit 3
NODE_NAME=lb-1 ipvsctl diff -f examples/ --node-name "${NODE_NAME}" | less
curl -s 127.0.0.1:9842/healthz; sudo /opt/ipvsctl/bin/ipvsctl list -o json 2>/dev/null
cat <<'EOF' | ipvsctl validate -f -
ipvsctl list --this-is-a-heredoc-body
EOF
kubectl -n kube-system exec ds/ipvsctl -- ipvsctl list --all
```

```console
$ python3 -m ipvsctl version
ipvsctl 0.1.0
```

```yaml
command: [ipvsctl, not, a, shell, block]
```
"""


def test_extraction_reads_shell_like_a_reader(tmp_path: Path) -> None:
    """Continuations, `# exit N`, sudo/env prefixes, pipes, `;`, redirections, heredocs, console
    prompts and nested ipvsctl are read as a shell would; other blocks are ignored."""
    doc = tmp_path / "sample.md"
    doc.write_text(SAMPLE_DOC)
    commands, others = dc.read(doc)
    got = [(c.line.lineno, c.argv, c.env, c.expect, c.stdin_from, c.elsewhere) for c in commands]
    assert got == [
        (4, ("apply", "-f", "examples/", "--node-ip", "192.0.2.10"), (), 3, None, None),
        # as in a shell, $NODE_NAME is expanded before NODE_NAME=lb-1 applies: the sample value
        (6, ("diff", "-f", "examples/", "--node-name", "node-a"), (("NODE_NAME", "lb-1"),), None, None, None),
        (7, ("list", "-o", "json"), (), None, None, None),
        (8, ("validate", "-f", "-"), (), None, "cat", None),
        (11, ("list", "--all"), (), None, None, "runs inside `kubectl`"),
        (15, ("version",), (), None, None, None),
    ]
    assert [(o.line.lineno, o.name) for o in others] == [(6, "less"), (7, "curl"), (8, "cat"), (11, "kubectl")]


def test_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    """A $NAME in an ipvsctl command without a sample value fails, naming file and line."""
    doc = tmp_path / "sample.md"
    doc.write_text("```sh\nipvsctl agent --node-name $MYSTERY\n```\n")
    with pytest.raises(dc.DocError, match=r"sample\.md:2: placeholder \$MYSTERY"):
        dc.read(doc)


def test_parse_rejects_unknown_verbs_and_flags() -> None:
    """The parser is the real CLI's: unknown verbs, flags and bad values fail; eager --version passes."""
    assert dc.parse(["apply", "-f", "examples/", "--node-ip", "192.0.2.10"]).verb == "apply"
    assert dc.parse(["--state-dir", "/tmp/x", "list", "-o", "json"]).params["output"] == "json"
    for argv in (["aply", "-f", "x"], ["list", "--colour"], ["apply"], ["apply", "-f", "x", "--drain-timeout", "x"]):
        with pytest.raises(dc.DocError):
            dc.parse(argv)


# --- every command in the docs -------------------------------------------------------------


@pytest.mark.parametrize("doc", shell_docs(), ids=DOC_IDS)
def test_doc_commands_parse(doc: Path) -> None:
    """Every ipvsctl command in the doc parses against the real CLI (verbs, flags, values)."""
    commands, _ = read(doc)
    failures = []
    for command in commands:
        try:
            dc.parse(command.argv)
        except dc.DocError as err:
            failures.append(f"{command.where}: `{command.shown}`: {err}")
    assert not failures, "doc commands the CLI rejects:\n" + "\n".join(failures)


@pytest.fixture
def memory_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MemoryKernel:
    """One in-memory kernel for a whole doc, a private state directory, cwd at the repository."""
    kernel = MemoryKernel(node_addresses=[ip(NODE_ADDRESS)])
    monkeypatch.setattr(cli, "KERNEL_FACTORY", lambda interface: kernel)
    monkeypatch.setenv("IPVSCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.chdir(REPO)
    return kernel


@pytest.mark.parametrize("doc", shell_docs(), ids=DOC_IDS)
def test_doc_commands_run(doc: Path, memory_kernel: MemoryKernel, tmp_path: Path) -> None:
    """Every runnable ipvsctl command in the doc, run in order on one in-memory kernel, exits as the doc promises."""
    commands, _ = read(doc)
    manifests = tmp_path / "manifests"  # what the quickstart copies to /etc/ipvsctl/manifests
    shutil.copytree(REPO / "examples", manifests)
    failures = []
    for command in commands:
        try:
            parsed = dc.parse(command.argv)
        except dc.DocError:
            continue  # test_doc_commands_parse reports it
        if dc.parse_only(command, parsed):
            continue
        argv = dc.rewrite(command.argv, manifests, tmp_path / "states")
        result = CliRunner().invoke(cli.app, argv, env=dict(command.env))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(result.exception)).strip()
            failures.append(f"{command.where}: `{command.shown}` crashed:\n{trace}")
            continue
        want = dc.promised(command, parsed.verb)
        if result.exit_code not in want:
            said = (result.stderr or result.stdout).strip()[-600:]
            failures.append(
                f"{command.where}: `{command.shown}` exited {result.exit_code}, the doc promises "
                f"{' or '.join(map(str, sorted(want)))}:\n{said}"
            )
    assert not failures, "\n\n".join(failures)


def test_other_commands_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """Programs other than ipvsctl are listed, never run; scripts/ they name exist; none misspells ipvsctl."""
    seen: dict[str, list[str]] = defaultdict(list)
    parse_only: list[str] = []
    problems = []
    for doc in shell_docs():
        commands, others = read(doc)
        for other in others:
            seen[other.name].append(other.line.where)
            if other.name.startswith("scripts/") and not (REPO / other.name).is_file():
                problems.append(f"{other.line.where}: {other.name} does not exist")
            if other.name.rsplit("/", 1)[-1].startswith("ipvs") and other.name.rsplit("/", 1)[-1] != "ipvsadm":
                problems.append(f"{other.line.where}: `{other.name}` is neither ipvsctl nor ipvsadm")
        for command in commands:
            try:
                reason = dc.parse_only(command, dc.parse(command.argv))
            except dc.DocError:
                continue
            if reason:
                parse_only.append(f"{command.where} ({reason})")
    with capsys.disabled():
        counts = ", ".join(f"{name} x{len(where)}" for name, where in sorted(seen.items()))
        print(f"\n[docs] other programs, not run on this host: {counts}")
        print("[docs] ipvsctl commands parsed, not run: " + "; ".join(parse_only))
    assert not problems, "\n".join(problems)


# --- the reference covers the code --------------------------------------------------------


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def all_flags() -> Iterator[tuple[str, str]]:
    """(command path, flag) for every option of every command of the CLI, --help aside."""

    def walk(command: object, path: str) -> Iterator[tuple[str, str]]:
        for param in getattr(command, "params", []):
            for flag in (*param.opts, *param.secondary_opts):
                if flag.startswith("-") and flag != "--help":
                    yield path, flag
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, f"{path} {name}")

    yield from walk(get_command(cli.app), "ipvsctl")


def test_reference_lists_every_flag() -> None:
    """Every flag of every command (walking the CLI's command tree) appears in docs/reference.md."""
    text = REFERENCE.read_text(encoding="utf-8")
    flags = list(all_flags())
    assert len(flags) > 30
    missing = [f"{path} {flag}" for path, flag in flags if not mentions(text, flag)]
    assert not missing, "flags docs/reference.md does not mention:\n" + "\n".join(missing)


def test_reference_lists_every_annotation() -> None:
    """Every ipvsctl.io/ annotation key the code reads appears in docs/reference.md."""
    keys = set()
    for source in (REPO / "ipvsctl").rglob("*.py"):
        keys |= set(re.findall(r"ipvsctl\.io/[a-z0-9][a-z0-9.-]*[a-z0-9]", source.read_text(encoding="utf-8")))
    assert {"ipvsctl.io/scheduler", "ipvsctl.io/scheduler-flags"} <= keys
    text = REFERENCE.read_text(encoding="utf-8")
    missing = sorted(k for k in keys if not mentions(text, k))
    assert not missing, f"annotations docs/reference.md does not mention: {missing}"


def exported_metrics() -> set[str]:
    """The metric names a scrape of the agent shows (prometheus-client's *_created aside)."""
    text = Metrics().render()[0].decode()
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    return {n for n in names if not n.endswith("_created")}


def test_operations_lists_every_metric() -> None:
    """Every metric name defined in ipvsctl/agent/metrics.py appears, as scraped, in docs/operations.md."""
    exported = exported_metrics()
    source = (REPO / "ipvsctl" / "agent" / "metrics.py").read_text(encoding="utf-8")
    defined = set(re.findall(r'"(ipvsctl_[a-z0-9_]+)"', source))
    assert len(defined) >= 15
    unexported = [n for n in defined if n not in exported and f"{n}_total" not in exported]
    assert not unexported, f"defined but not in a scrape: {unexported}"
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    missing = sorted(n for n in exported if not mentions(text, n))
    assert not missing, f"metrics docs/operations.md does not mention: {missing}"


# --- pictures and links --------------------------------------------------------------------


def test_concepts_svg_is_well_formed_and_shown() -> None:
    """docs/concepts.svg is well-formed SVG whose arrows use defined markers, and concepts.md shows it."""
    root = ET.parse(DOCS / "concepts.svg").getroot()
    assert root.tag == f"{SVG}svg" and root.get("viewBox")
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    used = {m for el in root.iter() for m in re.findall(r"url\(#([^)]+)\)", " ".join(el.attrib.values()))}
    assert used and used <= ids, used - ids
    words = " ".join("".join(el.itertext()) for el in root.iter(f"{SVG}text"))
    for label in ("virtual server", "weight 1", "weight 0", "EndpointSlice", "Service"):
        assert label in words, label
    assert "(concepts.svg)" in (DOCS / "concepts.md").read_text(encoding="utf-8")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


def test_relative_links_resolve() -> None:
    """Every relative link in README.md and docs/*.md names a file that exists, and a heading in it."""
    broken = []
    for doc in dc.doc_files():
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{dc.rel(doc)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{dc.rel(doc)}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_readme_lists_every_doc() -> None:
    """The README's Documentation section links every page under docs/."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    linked = set(re.findall(r"\(docs/([^)#]+\.md)", section))
    missing = sorted(p.name for p in DOCS.glob("*.md") if p.name not in linked)
    assert not missing, f"not in README.md's Documentation list: {missing}"


# --- concepts.md's worked example ----------------------------------------------------------


def scheduler_text(server: VirtualServer) -> str:
    """A virtual server's scheduler cell as concepts.md writes it: `sh, sh-port`, `rr, persistent 600 s`."""
    parts = [server.scheduler]
    parts += [n for n, bit in SCHEDULER_FLAGS.items() if n.startswith(f"{server.scheduler}-") and server.flags & bit]
    if server.flags & ServiceFlag.PERSISTENT:
        parts.append(f"persistent {server.timeout} s")
    return ", ".join(parts)


def test_concepts_example_table_is_the_translation() -> None:
    """concepts.md's table of what examples/ becomes is exactly what translate() makes of examples/."""
    settings = Settings(node_ips=(ip(NODE_ADDRESS),), node_name="node-a")
    desired = translate(load([str(REPO / "examples")]), settings)
    assert not desired.problems
    want = {
        (str(d.owner), str(key), scheduler_text(d.server), tuple(str(r.key) for r in d.reals))
        for key, d in desired.services.items()
    }
    text = (DOCS / "concepts.md").read_text(encoding="utf-8")
    section = text.split("## What `examples/` becomes", 1)[1].split("\n## ", 1)[0]
    got = set()
    for row in re.findall(r"^\| `([^`]+:[^`]+)` \| `([^`]+)` \| ([^|]+) \| ([^|]+) \|", section, re.M):
        owner, key, scheduler, reals = (cell.strip() for cell in row)
        got.add((owner, key, scheduler, tuple(re.findall(r"`([^`]+)`", reals))))
    assert got == want


# --- migrating-from-keepalived.md's side-by-side example -----------------------------------


def keepalived_servers(conf: str) -> set[tuple[str, str, int, tuple[str, ...]]]:
    """(virtual server, scheduler, persistence timeout, real servers) of each virtual_server block;
    only the keywords the doc's example uses."""
    out = set()
    for block in re.split(r"^virtual_server ", conf, flags=re.M)[1:]:
        address, port = block.split()[:2]
        words = dict(re.findall(r"^\s+(lb_algo|lvs_sched|protocol|persistence_timeout)\s+(\S+)", block, re.M))
        reals = tuple(f"{a}:{p}" for a, p in re.findall(r"real_server (\S+) (\d+)", block))
        scheduler = words.get("lb_algo") or words["lvs_sched"]
        out.add((f"{words['protocol']} {address}:{port}", scheduler, int(words.get("persistence_timeout", 0)), reals))
    return out


def test_keepalived_example_matches_its_manifests(tmp_path: Path) -> None:
    """The Service + EndpointSlice YAML in migrating-from-keepalived.md makes exactly its keepalived virtual_server."""
    text = (DOCS / "migrating-from-keepalived.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
    conf = next(body for tag, body in blocks if body.startswith("virtual_server "))
    manifest = next(body for tag, body in blocks if tag == "yaml" and "kind: Service" in body)
    (tmp_path / "shop.yaml").write_text(manifest)
    desired = translate(load([str(tmp_path / "shop.yaml")]), Settings(node_name="node-a"))
    assert not desired.problems
    made = {
        (str(key), d.server.scheduler, d.server.timeout, tuple(str(r.key) for r in d.reals))
        for key, d in desired.services.items()
    }
    assert all(d.server.flags & ServiceFlag.PERSISTENT for d in desired.services.values())
    assert made == keepalived_servers(conf)


def test_architecture_maps_every_module() -> None:
    """Every module under ipvsctl/ is named in docs/architecture.md's module map."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in re.findall(r"^\| (.+?) \|", table, re.M):
        paths = re.findall(r"`([\w/.]+\.py)`", row)
        folder = ""
        for path in paths:  # `kernel/base.py`, `netlink.py`: later names share the first one's folder
            if "/" in path:
                folder = path.rsplit("/", 1)[0] + "/"
                named.add(path)
            else:
                named.add(folder + path)
    modules = {
        str(p.relative_to(REPO / "ipvsctl")) for p in (REPO / "ipvsctl").rglob("*.py") if p.name != "__init__.py"
    }
    assert not modules - named, f"modules missing from the module map: {sorted(modules - named)}"
    assert not named - modules, f"the module map names modules that do not exist: {sorted(named - modules)}"
