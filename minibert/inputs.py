"""Corpus input: one text per line (UTF-8), ``-`` for stdin, or JSON Lines
with a ``text`` field and an optional ``text_pair`` field.

Errors name the file and the line. Every line of a plain text file is a text
(an empty line is an empty text), so text i is line i + 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import MinibertError


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
        raise MinibertError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        yield from enumerate(f, start=1)


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
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MinibertError(f"{name}: line {lineno} is not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise MinibertError(f'{name}: line {lineno} has no string field "text"')
        pair = obj.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise MinibertError(f'{name}: line {lineno}: "text_pair" must be a string')
        yield Item(index, obj["text"], pair)
        index += 1
