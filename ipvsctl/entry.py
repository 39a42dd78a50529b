"""The `ipvsctl` console script: `ipvsctl version`, `diff` (``quick.py``) and `agent`
(``agent/argv.py``) are answered before the CLI framework loads.

Importing the CLI (typer, click, structlog and the pipeline) costs about 0.2 s on a host and
seconds in an emulated VM; a version query, which scripts and health probes run often, needs
none of it. Every other command goes to ``ipvsctl.cli``.
"""

from __future__ import annotations

import sys

from ipvsctl import __version__


def version_text() -> str:
    return f"ipvsctl {__version__}\npython {sys.version.split()[0]}"


def main() -> None:
    if sys.argv[1:] in (["version"], ["--version"]):
        sys.stdout.write(version_text() + "\n")
        return
    if "diff" in sys.argv[1:]:
        from ipvsctl import quick

        code = quick.main(sys.argv[1:])
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
    elif "agent" in sys.argv[1:]:
        import os

        from ipvsctl import quick
        from ipvsctl.agent import argv

        code = argv.main(sys.argv[1:], os.environ, lambda interface: quick.KERNEL_FACTORY(interface))
        if code is not None:
            sys.exit(code)
    from ipvsctl.cli import main as cli_main

    cli_main()
