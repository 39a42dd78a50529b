"""``Index``: a multimap of values by key, small where most keys have one value or a few."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_ABSENT = object()


class _Few(tuple[V, ...]):
    """A few values of one key of an ``Index`` (a tuple, told apart from a value that is one)."""

    __slots__ = ()


class Index(Generic[K, V]):
    """Values by key, where most keys have one value or a few: one is kept bare, a few in a
    tuple, more in a set.

    A set costs 216 bytes even for one value; with 10,000 Services the agent kept half a dozen
    indexes of one- and two-value sets (Service → its objects, address → its virtual servers, …).
    Values must not themselves be sets."""

    __slots__ = ("_by",)

    SMALL = 8  # up to this many values are a tuple (adding and removing copy it)

    def __init__(self) -> None:
        self._by: dict[K, V | _Few[V] | set[V]] = {}

    def add(self, key: K, value: V) -> None:
        held = self._by.get(key, _ABSENT)
        if held is _ABSENT:
            self._by[key] = value
        elif isinstance(held, set):
            held.add(value)
        elif isinstance(held, _Few):
            if value not in held:
                self._by[key] = _Few((*held, value)) if len(held) < self.SMALL else {*held, value}
        elif held != value:
            self._by[key] = _Few((held, value))

    def discard(self, key: K, value: V) -> None:
        held = self._by.get(key, _ABSENT)
        if isinstance(held, set):
            held.discard(value)
            if len(held) <= self.SMALL // 2:  # back to a tuple, not at the edge (no flapping)
                self._by[key] = _Few(held)
        elif isinstance(held, _Few):
            if value in held:
                rest = [v for v in held if v != value]
                self._by[key] = _Few(rest) if len(rest) > 1 else rest[0]
        elif held is not _ABSENT and held == value:
            del self._by[key]

    def get(self, key: K) -> Collection[V]:
        """The key's values (empty if none); possibly a live set, not to be kept across changes."""
        held = self._by.get(key, _ABSENT)
        if held is _ABSENT:
            return ()
        return held if isinstance(held, _Few | set) else (held,)  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        return key in self._by

    def __iter__(self) -> Iterator[K]:
        return iter(self._by)

    def __len__(self) -> int:
        return len(self._by)
