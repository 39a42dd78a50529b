"""keepalived.conf syntax: tokens with their file and line, ``include`` spliced in, blocks.

keepalived's configuration is line-based: a statement is a keyword and its arguments on one
line, and a ``{`` (on that line, or alone on the next) opens a block of statements that a
``}`` closes. ``#`` and ``!`` at the start of a word begin a comment that runs to the end of
the line; a double-quoted string is one word (it may hold spaces, ``#`` and braces).
``include PATTERN`` on a line of its own is replaced by the lines of every file the pattern
matches (a glob, relative to the directory of the file that includes it, in sorted order).

The only I/O here is reading those files. Everything that cannot be read (a file missing or
unreadable, not UTF-8, an unterminated string, an unbalanced brace, an include loop, nesting or
files beyond the limits below) is a ``ConfigError`` naming file and line.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ipvsctl.importing.model import ConfigError, Where

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_FILES = 1000  # files read in all, includes counted
MAX_INCLUDE_DEPTH = 16
MAX_NESTING = 64  # open blocks at once; real configurations use 4
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    where: Where
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Statement:
    """A keyword, its arguments, and its block (None when it has none)."""

    words: tuple[Token, ...]
    block: tuple[Statement, ...] | None = None

    @property
    def keyword(self) -> str:
        return self.words[0].text

    @property
    def args(self) -> tuple[Token, ...]:
        return self.words[1:]

    @property
    def where(self) -> Where:
        return self.words[0].where


Reader = Callable[[str], bytes]


def read_bytes(path: str) -> bytes:
    """A file's bytes, at most MAX_FILE_BYTES; OSError as the OS says."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    return data


def tokenize_line(text: str, where: Where) -> list[Token]:
    """The words and braces of one line, comments dropped."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "#!":
            break
        elif c in "{}":
            tokens.append(Token(c, where))
            i += 1
        elif c == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise ConfigError(where, "unterminated quoted string")
            tokens.append(Token(text[i + 1 : end], where, quoted=True))
            i = end + 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in '{}"':
                i += 1
            tokens.append(Token(text[start:i], where))
    return tokens


class _Lines:
    """The token lines of a file and of everything it includes, in reading order."""

    def __init__(self, read: Reader) -> None:
        self.read = read
        self.files = 0

    def of(self, path: str, chain: tuple[str, ...], where: Where | None) -> Iterator[list[Token]]:
        real = os.path.realpath(path)
        if real in chain:
            raise ConfigError(where or path, f"include loop: {path} includes itself (through {' → '.join(chain)})")
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise ConfigError(where or path, f"includes nest more than {MAX_INCLUDE_DEPTH} deep")
        self.files += 1
        if self.files > MAX_FILES:
            raise ConfigError(where or path, f"more than {MAX_FILES} files included")
        try:
            data = self.read(path)
        except OSError as err:
            raise ConfigError(where or path, f"cannot read {path}: {err.strerror or err}") from None
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(where or path, f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise ConfigError(Where(path, line), "not UTF-8 text") from None
        for number, line_text in enumerate(text.splitlines(), 1):
            tokens = tokenize_line(line_text, Where(path, number))
            if tokens and tokens[0].text == "include" and not tokens[0].quoted:
                yield from self.include(path, tokens, (*chain, real))
            elif tokens:
                yield tokens

    def include(self, path: str, tokens: list[Token], chain: tuple[str, ...]) -> Iterator[list[Token]]:
        where = tokens[0].where
        if len(tokens) != 2 or (tokens[1].text in ("{", "}") and not tokens[1].quoted):
            raise ConfigError(where, "include takes one file name or pattern")
        pattern = tokens[1].text
        if "\0" in pattern:
            raise ConfigError(tokens[1].where, "an include's file name cannot hold a NUL character")
        if not os.path.isabs(pattern):
            pattern = os.path.join(os.path.dirname(path), pattern)
        if GLOB_CHARACTERS & set(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                return  # as keepalived: a pattern that matches nothing includes nothing
        else:
            matches = [pattern]
        for match in matches:
            yield from self.of(match, chain, where)


def parse(path: str, read: Reader = read_bytes) -> tuple[Statement, ...]:
    """The statements of a keepalived configuration file, includes spliced in."""
    # Each open block: its opening statement's words and the statements inside so far.
    stack: list[tuple[tuple[Token, ...], list[Statement]]] = [((), [])]

    def close(where: Where) -> None:
        if len(stack) == 1:
            raise ConfigError(where, "'}' closes no block")
        words, inside = stack.pop()
        stack[-1][1].append(Statement(words, tuple(inside)))

    def open_(words: tuple[Token, ...], where: Where) -> None:
        if not words:
            siblings = stack[-1][1]
            if not siblings or siblings[-1].block is not None:
                raise ConfigError(where, "'{' without a keyword before it")
            words = siblings.pop().words  # "keyword args" on one line, "{" alone on the next
        if len(stack) > MAX_NESTING:
            raise ConfigError(where, f"blocks nest more than {MAX_NESTING} deep")
        stack.append((words, []))

    for tokens in _Lines(read).of(path, (), None):
        pending: list[Token] = []
        for token in tokens:
            if token.quoted or token.text not in ("{", "}"):
                pending.append(token)
            elif token.text == "{":
                open_(tuple(pending), token.where)
                pending = []
            else:
                if pending:
                    stack[-1][1].append(Statement(tuple(pending)))
                    pending = []
                close(token.where)
        if pending:
            stack[-1][1].append(Statement(tuple(pending)))
    if len(stack) > 1:
        opened = stack[-1][0][0].where
        raise ConfigError(opened, f"'{{' of {stack[-1][0][0].text} is never closed")
    return tuple(stack[0][1])
