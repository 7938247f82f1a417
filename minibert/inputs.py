"""Corpus input: one text per line (UTF-8), ``-`` for stdin, or JSON Lines
with a ``text`` field and an optional ``text_pair`` field.

Errors name the file and the line. Every line of a plain text file is a text
(an empty line is an empty text), so text i is line i + 1.

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

from .errors import MinibertError
from .files import os_reason, parse_json


@dataclass(frozen=True)
class Item:
    """One input: its 0-based index, text and optional second segment."""

    index: int
    text: str
    text_pair: str | None = None


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    if path == "-":
        stream = sys.stdin.buffer
        yield from enumerate(stream, start=1)
        return
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise MinibertError(f"{path}: input file not found") from None
    except OSError as e:
        raise MinibertError(f"{path}: cannot read ({os_reason(e)})") from None
    with f:
        try:
            yield from enumerate(f, start=1)
        except OSError as e:  # a read error mid-file (an I/O error, a directory opened on some systems)
            raise MinibertError(f"{path}: cannot read ({os_reason(e)})") from None


def read_items(path: str | Path) -> Iterator[Item]:
    """Yield the inputs of ``path`` in order, lazily (constant memory)."""
    path = str(path)
    name = "<stdin>" if path == "-" else path
    is_jsonl = path.endswith((".jsonl", ".ndjson"))
    index = 0
    for lineno, raw in _lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MinibertError(
                f"{name}: line {lineno} is not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
            ) from None
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
                last = b"\n"
                while block := f.read(1 << 20):
                    n += block.count(b"\n")
                    last = block[-1:]
                return n + (last != b"\n")  # a last line without a newline is a text too
            return sum(1 for line in f if line.strip())
    except OSError:
        return None  # read_items reports the problem with the file
