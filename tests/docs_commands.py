"""The shell commands in README.md and docs/*.md, as the docs tests see them.

Fenced code blocks tagged sh, bash, shell or console are read line by line (in console
blocks only the lines after a ``$`` prompt). A line is joined with the next when it ends in
``\\``, ``|``, ``&&`` or ``||``; heredoc bodies are skipped; ``# ...`` comments are set aside,
and a comment ending in ``exit N`` is the exit code the doc promises for that line. The line
is cut into commands at ``|``, ``;``, ``&&``, ``||`` and ``&``; ``sudo``, ``env`` and
``NAME=value`` prefixes are set aside. A command whose program is ``ipvsctl`` (any path to
it, or ``python3 -m ipvsctl``) becomes a ``Command``; one that runs ipvsctl somewhere else
(``kubectl exec ... -- ipvsctl``, ``watch ipvsctl``) too, to be parsed only; every other
command is an ``Other``: the tests never run those.

Used by tests/unit/test_docs.py and tests/kernel/test_quickstart.py. ``python tests/docs_commands.py``
prints every command found and what the tests do with it.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELL_TAGS = frozenset({"sh", "bash", "shell", "console"})

# Values for the placeholders the docs use. An ipvsctl command with any other $NAME fails.
SAMPLES = {"NODE_NAME": "node-a", "NODE_IP": "192.0.2.10", "HOSTNAME": "node-a"}

# Paths the docs tell the reader to create, and what the tests put there instead: the
# quickstart copies examples/ into /etc/ipvsctl/manifests.
MANIFEST_DIR = "/etc/ipvsctl/manifests"

_OPERATOR_CHARS = frozenset("();<>|&")  # shlex's punctuation: runs of these are one token
SHELL_WORDS = frozenset({"do", "then", "else", "elif", "{", "!", "time", "nohup", "exec"})
SHELL_KEYWORDS = frozenset({"for", "while", "until", "if", "fi", "done", "esac", "case", "}"})
WRAPPERS = frozenset({"watch"})  # run the command after their options, periodically
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PLACEHOLDER = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
_EXIT = re.compile(r"\bexit (\d+)\)?\s*$")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


class DocError(ValueError):
    """A shell line in the docs that cannot be read (unbalanced quotes, unknown placeholder)."""


@dataclass(frozen=True)
class Line:
    """One logical shell line of a doc, without prompt and comment."""

    file: str  # relative to the repository, e.g. docs/quickstart.md
    lineno: int  # 1-based, where the line starts
    text: str
    comment: str  # what followed `#`, or ""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.lineno}"


@dataclass(frozen=True)
class Command:
    """One ipvsctl invocation found in a doc."""

    line: Line
    argv: tuple[str, ...]  # after the program name, placeholders replaced
    env: tuple[tuple[str, str], ...] = ()  # NAME=value given before it
    expect: int | None = None  # the exit code the doc annotates (`# exit 3`), if any
    stdin_from: str | None = None  # the command whose output is piped into it
    elsewhere: str | None = None  # set when it runs inside another command (kubectl exec ...)

    @property
    def where(self) -> str:
        return self.line.where

    @property
    def shown(self) -> str:
        return "ipvsctl " + shlex.join(self.argv)


@dataclass(frozen=True)
class Other:
    """A command that is not ipvsctl: listed by the tests, never run by them."""

    line: Line
    name: str
    words: tuple[str, ...] = field(default=())


def doc_files() -> list[Path]:
    """README.md and every docs/*.md, in a stable order."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _closes(line: str, fence: str) -> bool:
    text = line.strip()
    return text.startswith(fence) and not text.strip(fence[0])


def shell_blocks(text: str) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """(tag, [(line number, line)]) of every fenced code block tagged as shell."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, tag = m.group(1), m.group(2), m.group(3).lower()
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not _closes(lines[i], fence):
            line = lines[i]
            body.append((i + 1, line[len(indent) :] if line.startswith(indent) else line.lstrip()))
            i += 1
        i += 1  # the closing fence
        if tag in SHELL_TAGS:
            yield tag, body


def split_comment(text: str) -> tuple[str, str]:
    """(code, comment): a `#` starting a word, outside quotes, starts the comment."""
    quote = ""
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), ""


def shell_lines(path: Path) -> Iterator[Line]:
    """Every logical shell line in the doc's shell blocks, in order."""
    name = rel(path)
    for tag, body in shell_blocks(path.read_text(encoding="utf-8")):
        pending: list[str] = []
        start = 0
        heredoc: str | None = None
        for lineno, raw in body:
            if heredoc is not None:
                if raw.strip() == heredoc:
                    heredoc = None
                continue
            text = raw.strip()
            if not pending:
                if tag == "console":
                    if not text.startswith("$"):
                        continue  # output
                    text = text[1:].strip()
                elif text.startswith("$ "):
                    text = text[2:].strip()
                start = lineno
            code, comment = split_comment(text)
            if not code and not pending:
                continue
            pending.append(code[:-1] if code.endswith("\\") else code)
            if code.endswith(("\\", "|", "&&", "||")):
                continue
            joined = " ".join(part.strip() for part in pending)
            pending = []
            m = _HEREDOC.search(joined)
            if m:
                heredoc = m.group(2)
            yield Line(name, start, joined, comment)
        if pending:
            yield Line(name, start, " ".join(pending), "")


def tokens(line: Line) -> list[str]:
    """Shell words and operators of a line (quotes removed)."""
    lexer = shlex.shlex(line.text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError as err:
        raise DocError(f"{line.where}: cannot read `{line.text}`: {err}") from None


def segments(words: Sequence[str]) -> Iterator[tuple[list[str], str | None]]:
    """(words of one command, the operator before it) for each command of a line.

    Redirections and their targets are dropped (`2>&1`, `>/dev/null`, `<<EOF`)."""
    current: list[str] = []
    before: str | None = None
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word and all(ch in _OPERATOR_CHARS for ch in word):
            if "<" in word or ">" in word:
                if current and current[-1] in ("0", "1", "2"):
                    current.pop()  # the 2 of 2>/dev/null
                skip = True
                continue
            if current:
                yield current, before
            current, before = [], word
            continue
        current.append(word)
    if current:
        yield current, before


def strip_prefixes(words: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The command without sudo/env/NAME=value/shell-word prefixes, and the assignments."""
    env: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in SHELL_WORDS or word == "env":
            i += 1
        elif word == "sudo":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in ("-u", "-g", "-C", "-D") else 1
        elif _ASSIGNMENT.match(word):
            key, _, value = word.partition("=")
            env.append((key, value))
            i += 1
        else:
            break
    return words[i:], env


def ipvsctl_argv(words: Sequence[str]) -> list[str] | None:
    """The arguments after the program if ``words`` run ipvsctl, else None."""
    if not words:
        return None
    program = words[0].rsplit("/", 1)[-1]
    if program == "ipvsctl":
        return list(words[1:])
    if re.fullmatch(r"python3?(\.\d+)?", program) and words[1:3] == ["-m", "ipvsctl"]:
        return list(words[3:])
    return None


def nested_ipvsctl(words: Sequence[str]) -> tuple[list[str], str] | None:
    """(arguments, how) when another command runs ipvsctl: after `--` or under watch."""
    if "--" in words:
        after = words[list(words).index("--") + 1 :]
        argv = ipvsctl_argv(after)
        if argv is not None:
            return argv, f"runs inside `{words[0]}`"
    if words[0] in WRAPPERS:
        rest = list(words[1:])
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in ("-n", "--interval") else rest[1:]
        argv = ipvsctl_argv(rest)
        if argv is not None:
            return argv, f"runs under `{words[0]}` until stopped"
    return None


def substitute(word: str, variables: dict[str, str], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise DocError(f"{where}: placeholder ${name} has no sample value (tests/docs_commands.py SAMPLES)")
        return variables[name]

    return _PLACEHOLDER.sub(one, word)


def expected_exit(comment: str) -> int | None:
    m = _EXIT.search(comment)
    return int(m.group(1)) if m else None


def read(path: Path) -> tuple[list[Command], list[Other]]:
    """Every ipvsctl command and every other command of one doc, in document order."""
    commands: list[Command] = []
    others: list[Other] = []
    variables = dict(SAMPLES)
    for line in shell_lines(path):
        previous: str | None = None
        for words, before in segments(tokens(line)):
            command, env = strip_prefixes(words)
            if not command:  # a bare assignment (`export` is handled below) sets a variable
                variables.update(env)
                continue
            if command[0] == "export":
                for word in command[1:]:
                    key, sep, value = word.partition("=")
                    if sep:
                        variables[key] = value
                continue
            argv = ipvsctl_argv(command)
            elsewhere = None
            if argv is None:
                nested = nested_ipvsctl(command)
                if command[0] not in SHELL_KEYWORDS:
                    others.append(Other(line, command[0], tuple(command)))
                if nested is None:
                    previous = " ".join(command)
                    continue
                argv, elsewhere = nested
            argv = [substitute(w, variables, line.where) for w in argv]
            env = [(k, substitute(v, variables, line.where)) for k, v in env]
            commands.append(
                Command(
                    line,
                    tuple(argv),
                    tuple(env),
                    expected_exit(line.comment),
                    previous if before in ("|", "|&") else None,
                    elsewhere,
                )
            )
            previous = " ".join(command)
    return commands, others


def rewrite(argv: Sequence[str], manifests: Path, state_dir: Path) -> list[str]:
    """Arguments for a test run: MANIFEST_DIR becomes ``manifests`` (a copy of examples/), and
    every --state-dir points under ``state_dir``, never at the real /run/ipvsctl."""
    out: list[str] = []
    for i, word in enumerate(argv):
        if word == MANIFEST_DIR or word.startswith(MANIFEST_DIR + "/"):
            word = str(manifests) + word[len(MANIFEST_DIR) :]
        if i and argv[i - 1] == "--state-dir":
            word = str(state_dir / re.sub(r"[^A-Za-z0-9]+", "-", word).strip("-"))
        elif word.startswith("--state-dir="):
            word = "--state-dir=" + str(state_dir / re.sub(r"[^A-Za-z0-9]+", "-", word[12:]).strip("-"))
        out.append(word)
    return out


@dataclass(frozen=True)
class Parsed:
    """What the real CLI made of a command line, without running it."""

    verb: str | None  # None when an eager option (--version, --help) ends parsing early
    params: dict[str, object]


# Options whose callbacks act while parsing: installing completion writes the user's shell
# start-up files, showing it prints a script. Both then exit before the rest of the line is
# looked at; for parsing, their callbacks are replaced by one that only exits.
_ACTING_OPTIONS = frozenset({"install_completion", "show_completion"})


def _exit_if_set(_ctx: object, _param: object, value: object) -> object:
    import typer

    if value:
        raise typer.Exit()
    return value


def parse(argv: Sequence[str]) -> Parsed:
    """Parse ``ipvsctl ARGV`` with the real command tree (click's make_context, not resilient),
    invoking nothing. Raises DocError with click's message for an unknown verb, flag or value."""
    import typer
    from typer.main import get_command

    from ipvsctl import cli

    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # typer before 0.2x used click itself
        from click.exceptions import ClickException  # type: ignore[no-redef]

    root = get_command(cli.app)  # a fresh tree: changing its callbacks touches nothing else
    for param in root.params:
        if param.name in _ACTING_OPTIONS:
            param.callback = _exit_if_set
    try:
        with root.make_context("ipvsctl", list(argv), resilient_parsing=False) as ctx:
            protected = getattr(ctx, "_protected_args", None)  # click 8.2 renamed protected_args
            rest = [*(ctx.protected_args if protected is None else protected), *ctx.args]
            if not rest:
                return Parsed(None, dict(ctx.params))
            name, command, args = root.resolve_command(ctx, rest)  # type: ignore[attr-defined]
            assert command is not None
            with command.make_context(name, args, parent=ctx, resilient_parsing=False) as sub:
                return Parsed(name, dict(sub.params))
    except ClickException as err:
        raise DocError(err.format_message()) from None
    except (typer.Exit, SystemExit):
        return Parsed(None, {})


def parse_only(command: Command, parsed: Parsed) -> str | None:
    """Why the tests parse a command but do not run it, or None if they run it."""
    if command.elsewhere:
        return command.elsewhere
    if parsed.verb == "agent":
        return "the agent runs until stopped"
    if parsed.verb == "list" and parsed.params.get("watch") and not parsed.params.get("count"):
        return "list --watch without --count runs until stopped"
    if "--install-completion" in command.argv:
        return "it would change this shell's start-up files"
    if command.stdin_from:
        return f"it reads what `{command.stdin_from}` prints, which the tests do not run"
    return None


def promised(command: Command, verb: str | None) -> set[int]:
    """The exit codes a doc promises for a command: its `# exit N`, else 0; 0 or 1 for diff."""
    if command.expect is not None:
        return {command.expect}
    return {0, 1} if verb == "diff" else {0}


def main() -> int:
    """Print every command of the docs, file by file."""
    for path in doc_files():
        commands, others = read(path)
        if not commands and not others:
            continue
        print(f"{rel(path)}:")
        rows = [(c.line.lineno, c.shown + (f"   [{c.elsewhere}]" if c.elsewhere else "")) for c in commands]
        rows += [(o.line.lineno, f"(not run) {' '.join(o.words)}") for o in others]
        for lineno, text in sorted(rows):
            print(f"  {lineno:4}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
