"""Terminal colour for `ipvsctl list`: whether to use it, and how to paint a piece of text.

Colour is plain ANSI SGR codes; nothing here measures or aligns text, so callers align on the
plain text and paint afterwards (escape codes have no width on screen but do have a length).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MODES = ("auto", "always", "never")

BOLD = "1"
DIM = "2"
RED = "31"
YELLOW = "33"

_SGR = re.compile(r"\x1b\[[0-9;]*m")


def wanted(mode: str, *, isatty: bool, environ: Mapping[str, str]) -> bool:
    """Colour or not: ``always`` and ``never`` decide alone; ``auto`` colours a terminal unless
    NO_COLOR is set to something non-empty (no-color.org) or TERM is ``dumb``."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return isatty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def paint(text: str, *codes: str) -> str:
    """``text`` in the given SGR codes (e.g. ``BOLD``, ``RED``), reset after; unchanged without codes
    or when ``text`` is empty."""
    styles = [c for c in codes if c]
    if not styles or not text:
        return text
    return f"\x1b[{';'.join(styles)}m{text}\x1b[0m"


def strip(text: str) -> str:
    """``text`` without colour codes: what the eye sees."""
    return _SGR.sub("", text)
