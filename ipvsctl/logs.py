"""structlog set-up: a console renderer for people, JSON lines for machines. Logs go to stderr."""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING


def _structlog_without_rich() -> ModuleType:
    """Import structlog while rich looks absent. structlog imports rich, when it is installed (typer
    brings it), only to draw exceptions on a console, which ipvsctl never shows; that import was a
    fifth of ipvsctl's start-up on the host (importing ipvsctl.cli: 0.22-0.33 s with it, 0.17-0.21 s
    without) and 4 MB of memory. structlog then draws exceptions plainly; rich stays importable
    afterwards for typer's help."""
    hidden = "rich" not in sys.modules
    if hidden:
        sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" raises ImportError
    try:
        import structlog
    finally:
        if hidden and sys.modules.get("rich", False) is None:
            del sys.modules["rich"]
    return structlog


if TYPE_CHECKING:
    import structlog
else:
    structlog = _structlog_without_rich()


class _Stderr:
    """Whatever sys.stderr is at the moment of writing (tests swap it; daemons may too)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(fmt: str = "console", level: str = "info") -> None:
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get(name: str = "ipvsctl") -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
