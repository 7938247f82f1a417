"""Corpus input: text lines, JSON Lines, stdin; errors name the line; chunks
and their digests depend only on the texts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from minibert import MinibertError
from minibert.corpus.inputs import Item, chunk_digest, chunked, count_items, read_items


def test_text_lines_keep_empty_lines_as_texts(tmp_path):
    p = tmp_path / "in.txt"
    p.write_bytes("\ufeffone\r\n\nthree ünïcode\n".encode())
    assert list(read_items(p)) == [Item(0, "one"), Item(1, ""), Item(2, "three ünïcode")]


def test_jsonl_text_and_pair(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"text": "a"}\n\n{"text": "b", "text_pair": "c"}\n', encoding="utf-8")
    assert list(read_items(p)) == [Item(0, "a"), Item(1, "b", "c")]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("in.txt", b"fine\nbad \xff byte\n", "line 2 is not valid UTF-8"),
        ("in.jsonl", b'{"text": "a"}\n{"text": \n', "line 2: not valid JSON"),
        ("in.jsonl", b'{"txt": "a"}\n', 'line 1 has no string field "text"'),
        ("in.jsonl", b'{"text": "a", "text_pair": 3}\n', '"text_pair" must be a string'),
    ],
)
def test_bad_input_names_the_line(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(MinibertError, match=message) as e:
        list(read_items(p))
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(MinibertError, match="input file not found"):
        list(read_items(tmp_path / "nope.txt"))


@pytest.mark.parametrize(
    "error, message",
    [
        (PermissionError(13, "Permission denied"), "cannot read (permission denied)"),
        (IsADirectoryError(21, "Is a directory"), "cannot read (is a directory)"),
        (OSError(40, "Too many levels of symbolic links"), "cannot read (too many levels of symbolic links)"),
    ],
)
def test_unreadable_input_says_why(tmp_path, monkeypatch, error, message):
    """Tests run as root, who reads any file: the OSError is injected. An
    unreadable file is not reported as a missing one."""
    import minibert.corpus.inputs

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(minibert.corpus.inputs, "open", refuse, raising=False)
    with pytest.raises(MinibertError, match=re.escape(message)):
        list(read_items(tmp_path / "in.txt"))


def test_chunks_depend_only_on_the_input(tmp_path):
    p = tmp_path / "in.txt"
    p.write_text("a\nb\n\nd\ne", encoding="utf-8")  # an empty text, no final newline
    items = list(read_items(p))
    assert count_items(p) == len(items) == 5 and count_items("-") is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert count_items(fifo) is None  # not read: the texts are read once, by read_items
    assert [[it.index for it in c] for c in chunked(items, 2)] == [[0, 1], [2, 3], [4]]
    assert chunk_digest(items[:2]) == chunk_digest([Item(7, "a"), Item(8, "b")])  # texts, not positions
    assert chunk_digest(items[:2]) != chunk_digest([Item(0, "a"), Item(1, "b", "pair")])
    j = tmp_path / "in.jsonl"
    j.write_text('{"text": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    assert count_items(j) == len(list(read_items(j))) == 2


@pytest.mark.parametrize("name", ["in.txt", "in.jsonl"])
def test_a_line_longer_than_the_limit_is_refused_naming_it(tmp_path, monkeypatch, name):
    """Issue 17: a line is read at most MAX_LINE bytes at a time (its line break included), so an
    input without line breaks is one error naming its line, not a MemoryError. Exactly at the
    limit is accepted, one byte more is not; a last line without a newline may be MAX_LINE long."""
    import minibert.corpus.inputs

    monkeypatch.setattr(minibert.corpus.inputs, "MAX_LINE", 40)
    jsonl = name.endswith(".jsonl")
    fits, over = (json.dumps({"text": "x" * n}) if jsonl else "x" * (n + 12) for n in (27, 28))  # 39, 40
    p = tmp_path / name
    p.write_text(f"{fits}\n{fits}\n{over}\n", encoding="utf-8")
    with pytest.raises(MinibertError, match="line 3 is longer than 40 bytes") as e:
        list(read_items(p))
    assert str(p) in str(e.value)
    if jsonl:  # (a plain file is counted in 1 MiB blocks: the next test)
        assert count_items(p) is None  # the progress count stops at the long line too
    p.write_text(f"{fits}\n{fits}\n{over}", encoding="utf-8")  # 40 bytes, no newline: the last line
    assert len(list(read_items(p))) == 3 and count_items(p) in (3, None)


def test_counting_lines_stops_at_a_line_over_the_limit(tmp_path, monkeypatch):
    """count_items reads a plain file in blocks: a run of bytes with no line break longer than
    MAX_LINE stops it (None: no total) instead of reading a 3 GiB file to the end first."""
    import minibert.corpus.inputs

    monkeypatch.setattr(minibert.corpus.inputs, "MAX_LINE", 3 << 20)
    p = tmp_path / "in.txt"
    p.write_bytes(b"a\nb\n" + b"x" * (4 << 20) + b"\nc\n")
    assert count_items(p) is None
    p.write_bytes(b"a\nb\n" + b"x" * (2 << 20) + b"\nc")
    assert count_items(p) == 4


def test_the_line_limit_is_the_documented_one():
    """One rule, in every --long mode: 256 MiB per line, stated in --help and docs/corpus.md."""
    from fuzz_helpers import run

    import minibert.corpus.inputs

    assert minibert.corpus.inputs.MAX_LINE == 256 << 20
    assert "256 MiB" in " ".join(run("extract", "--help")[1].split())
    docs = (Path(__file__).parents[1] / "docs" / "corpus.md").read_text(encoding="utf-8")
    assert "**256 MiB** (268,435,456 bytes" in docs and "--long window" in docs
