"""The few error types a user sees. Each names where the problem is: file, object, field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an object came from: file, document index (0-based), kind, namespace/name."""

    file: str
    document: int = -1  # 0-based index in the file (shown 1-based); -1: the file as a whole
    kind: str = ""
    namespace: str = ""
    name: str = ""

    def __str__(self) -> str:
        where = self.file if self.document < 0 else f"{self.file}: document {self.document + 1}"
        if self.kind:
            name = self.name or "<unnamed>"
            obj = f"{self.namespace}/{name}" if self.namespace else name
            where += f": {self.kind} {obj}"
        return where


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input or with applying it. ``field`` is a dotted path."""

    origin: Origin
    field: str
    message: str
    severity: str = "error"  # "error" or "warning"
    # A rejected EndpointSlice or Endpoints: the name of the Service it belongs to (in the same
    # namespace), which ``apply`` then keeps as the kernel has it rather than program it without
    # those endpoints. Empty for everything else.
    holds: str = ""

    def __str__(self) -> str:
        field = f": {self.field}" if self.field else ""
        return f"{self.origin}{field}: {self.message}"


class InputError(Exception):
    """Raised while parsing one object; caught at the object boundary and turned into a Problem."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class LockBusy(Exception):
    """Another ipvsctl process holds the state lock."""


class StateError(Exception):
    """The ownership record cannot be read or written."""
