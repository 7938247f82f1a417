"""Corpus input: one text per line (UTF-8), ``-`` for stdin, or JSON Lines
with a ``text`` field and an optional ``text_pair`` field.

Errors name the file and the line. Every line of a plain text file is a text
(an empty line is an empty text), so text i is line i + 1. A line may hold at
most :data:`MAX_LINE` bytes (256 MiB, a ``.jsonl`` line's JSON included), so
an input without line breaks (``/dev/zero`` through a pipe, a sparse file) is
one error naming its line, not a ``MemoryError``. The input is a file, a pipe
or FIFO, or ``-`` (stdin); a device (``/dev/zero``) is refused unread.

Input is read lazily and cut into fixed-size chunks (:func:`chunked`): chunk k
holds texts ``k * size .. (k + 1) * size - 1`` whatever the engine, so chunk
boundaries, and the batches formed inside a chunk, depend only on the input.
:func:`chunk_digest` fingerprints a chunk's texts, so a resumed run can prove
it is reading the same input.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from minibert.errors import MinibertError
from minibert.files import not_regular, numbered_lines, os_reason, parse_json


@dataclass(frozen=True)
class Item:
    """One input: its 0-based index, text and optional second segment."""

    index: int
    text: str
    text_pair: str | None = None


#: The longest line an input may hold, in bytes (its line break included): far
#: beyond what a model reads at once, and room for a ``--long window`` text of
#: over 100 MB; a line this long is read whole before it is refused.
MAX_LINE = 256 << 20


def _open(path: str):
    """The input ``path`` open for reading: a regular file, a pipe or a FIFO."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0  # open says what is wrong
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = not_regular(mode).split(",")[0]
        raise MinibertError(f"{path}: cannot read ({kind}; give a file, a pipe, or - for stdin)")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise MinibertError(f"{path}: input file not found") from None
    except OSError as e:
        raise MinibertError(f"{path}: cannot read ({os_reason(e)})") from None


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """The input's lines, numbered and decoded (:func:`minibert.files.numbered_lines`)."""
    if path == "-":
        if sys.stdin is None:  # started with stdin closed (<&-)
            raise MinibertError("-: stdin is closed (nothing to read: give a file, or pipe the texts in)")
        yield from numbered_lines(sys.stdin.buffer, "<stdin>", MAX_LINE)
        return
    with _open(path) as f:
        yield from numbered_lines(f, path, MAX_LINE)


def read_items(path: str | Path) -> Iterator[Item]:
    """Yield the inputs of ``path`` in order, lazily (constant memory)."""
    path = str(path)
    name = "<stdin>" if path == "-" else path
    is_jsonl = path.endswith((".jsonl", ".ndjson"))
    index = 0
    for lineno, line in _lines(path):
        line = line.rstrip("\r\n")
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not text
        if not is_jsonl:
            yield Item(index, line)
            index += 1
            continue
        if not line.strip():
            continue
        # not valid JSON, nested too deep, a huge number, a lone surrogate ("\ud800"): one line naming it
        obj = parse_json(line, f"{name}: line {lineno}", dict)
        if not isinstance(obj.get("text"), str):
            raise MinibertError(f'{name}: line {lineno} has no string field "text"')
        pair = obj.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise MinibertError(f'{name}: line {lineno}: "text_pair" must be a string')
        yield Item(index, obj["text"], pair)
        index += 1


def chunked(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of ``size`` items (the last may be shorter), read
    lazily: only one chunk is in memory at a time."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def chunk_digest(items: list[Item]) -> str:
    """sha256 of a chunk's texts and pairs (not of the file's bytes, so a
    CRLF/LF or BOM change alone does not count as a different input)."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.text, it.text_pair], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def count_items(path: str | Path) -> int | None:
    """How many texts ``path`` holds, counted without decoding (for the
    progress bar's total and ETA); None for stdin or a pipe, which cannot be
    read twice."""
    path = str(path)
    try:
        if path == "-" or not stat.S_ISREG(os.stat(path).st_mode):
            return None  # stdin, a pipe (<(...)), a FIFO: reading it here would consume it
    except OSError:
        return None  # read_items reports the problem with the file
    is_jsonl = path.endswith((".jsonl", ".ndjson"))
    n = 0
    try:
        with open(path, "rb") as f:
            if not is_jsonl:
                run = 0  # bytes since the last line break
                while block := f.read(1 << 20):
                    if (first := block.find(b"\n")) < 0:
                        run += len(block)
                    else:
                        n += block.count(b"\n")
                        run, first = len(block) - 1 - block.rfind(b"\n"), run + first
                    if max(run, first) >= MAX_LINE:
                        return None  # a line too long: read_items refuses it, no need to read on
                return n + (run > 0)  # a last line without a newline is a text too
            while line := f.readline(MAX_LINE + 1):
                if len(line) > MAX_LINE:
                    return None  # read_items refuses the line
                n += bool(line.strip())
            return n
    except OSError:
        return None  # read_items reports the problem with the file
