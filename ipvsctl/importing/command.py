"""`ipvsctl import`: read a keepalived.conf or ``ipvsadm -Sn`` output, write manifests, say
what was left out. The only module of ``importing/`` that writes.

Exit codes (those of every verb, docs/reference.md): 0 everything was imported; 3 some of the
input cannot be expressed (each listed as ``FILE:LINE: what and why`` on stderr; the rest was
written), or the input cannot be read at all (one ``error:`` line naming file and line; nothing
written); 2 the output directory cannot be written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ipvsctl.importing import ipvsadm, keepalived, manifests, syntax
from ipvsctl.importing.model import ConfigError, Result

EXIT_OK, EXIT_USAGE, EXIT_INVALID = 0, 2, 3
SOURCES = ("keepalived", "ipvsadm")


def read_source(source: str, kind: str, stdin: Callable[[], bytes]) -> Result:
    """The input's virtual servers and notes. Raises ConfigError."""
    if kind == "keepalived":
        if source == "-":
            raise ConfigError("-", "a keepalived.conf is read from a file (its includes are relative to it)")
        return keepalived.imported(keepalived.read(syntax.parse(source)))
    name = "<stdin>" if source == "-" else source
    try:
        data = stdin() if source == "-" else syntax.read_bytes(source)
    except OSError as err:
        raise ConfigError(name, f"cannot read {name}: {err.strerror or err}") from None
    if len(data) > syntax.MAX_FILE_BYTES:
        raise ConfigError(name, f"larger than {syntax.MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"{name}:{line}", "not UTF-8 text") from None
    return ipvsadm.parse(text, name)


def write(directory: Path, files: dict[str, str]) -> None:
    """Each file into ``directory`` (made if missing), through a temporary name and a rename."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, directory / name)


def run(
    source: str,
    kind: str,
    output: Path | None,
    namespace: str,
    echo: Callable[[str, bool], None],
    stdin: Callable[[], bytes] = lambda: sys.stdin.buffer.read(),
) -> int:
    """Import ``source``; ``echo(text, to_stderr)`` prints. Returns the exit code."""
    try:
        result = read_source(source, kind, stdin)
    except ConfigError as err:
        echo(f"error: {err}", True)
        return EXIT_INVALID
    files, refused = manifests.render(result.servers, namespace)
    notes = sorted((*result.notes, *refused), key=lambda n: (n.where.file, n.where.line))
    if output is None:
        if files:
            echo("---\n".join(files.values()).rstrip("\n"), False)
    else:
        try:
            write(output, files)
        except OSError as err:
            echo(f"error: cannot write {output}: {err.strerror or err}", True)
            return EXIT_USAGE
    for note in notes:
        echo(f"{note}", True)
    summary = f"imported {len(files)} of {len(result.servers)} virtual servers"
    if output is not None:
        summary += f" into {output}"
    if notes:
        summary += f"; {len(notes)} {'thing' if len(notes) == 1 else 'things'} not imported (listed above)"
    echo(summary, True)
    return EXIT_INVALID if notes else EXIT_OK
