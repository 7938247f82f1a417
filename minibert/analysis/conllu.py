"""Labelled sentences in: CoNLL-U, ``.jsonl`` tasks of one's own, plain text.

CoNLL-U (https://universaldependencies.org/format.html): one word a line,
ten tab-separated columns (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS
MISC), comments starting with ``#``, a blank line after each sentence.
Multiword-token lines (ID ``3-4``: the surface form of "don't" spelling the
words "do" and "n't" on the lines after it) and empty nodes (ID ``5.1``) are
not words and are skipped. A task is a column: ``upos``, ``xpos``,
``deprel`` (the universal relation before any ``:`` subtype, "nmod:poss" ->
"nmod"), any other column by name (``feats``, ``misc``...) or by number 2-10.

A ``.jsonl`` task holds one sentence a line, ``{"tokens": [...], "labels":
[...]}``, a label per token. A plain text file (``minibert similarity``) is
one sentence a line, split on whitespace, unlabelled.

Every problem is one MinibertError naming the file, the line and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minibert.errors import MinibertError
from minibert.files import parse_json, read_text

COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


@dataclass(frozen=True)
class Sentence:
    """One sentence: its words, a label per word (None when unlabelled), and
    where each word is in its file (``lines``: 1-based line numbers)."""

    words: list[str]
    labels: list[str] | None
    lines: list[int]


def source_name(data) -> str:
    """A path as written; sentences given as a list: how many."""
    return str(data) if isinstance(data, (str, Path)) else f"a list of {len(data)} sentences"


def task_column(task: str) -> int:
    """A task's 0-based CoNLL-U column: a column name or its number 2-10 (not
    ID, column 1: a word's position is no label)."""
    name = str(task).strip().lower()
    if name.isdigit() and 2 <= int(name) <= len(COLUMNS):
        return int(name) - 1
    if name in COLUMNS and name != "id":
        return COLUMNS.index(name)
    raise MinibertError(
        f"task {str(task)[:40]!r} is not a CoNLL-U column: use one of {', '.join(COLUMNS[1:])}, or 2-10"
    )


def label_of(value: str, column: int) -> str:
    """The label a column's value gives: DEPREL's universal part (before ``:``)."""
    return value.split(":", 1)[0] if COLUMNS[column] == "deprel" else value


def read_conllu(path: str | Path, task: str | None = "upos") -> list[Sentence]:
    """The sentences of a CoNLL-U file, labelled by ``task``'s column (None: unlabelled)."""
    column = None if task is None else task_column(task)
    sentences: list[Sentence] = []
    words, labels, lines = [], [], []

    def end() -> None:
        if words:
            sentences.append(Sentence(list(words), None if column is None else list(labels), list(lines)))
        words.clear(), labels.clear(), lines.clear()

    for n, line in enumerate(read_text(path, "CoNLL-U file").split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            end()
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != len(COLUMNS):
            raise MinibertError(
                f"{path}: line {n}: expected {len(COLUMNS)} tab-separated columns, got {len(cols)} "
                "(not CoNLL-U)"
            )
        ident = cols[0]
        if "-" in ident or "." in ident:  # a multiword token or an empty node: not a word
            continue
        if not ident.isdigit() or int(ident) != len(words) + 1:
            raise MinibertError(
                f"{path}: line {n}: column 1 (ID): expected word {len(words) + 1}, got {ident[:20]!r}"
            )
        if not cols[1]:
            raise MinibertError(f"{path}: line {n}: column 2 (FORM) is empty")
        if column is not None:
            value = cols[column]
            if value in ("", "_") and column != 1:
                raise MinibertError(
                    f"{path}: line {n}: column {column + 1} ({COLUMNS[column].upper()}) has no label "
                    f"({value!r}): this file does not annotate the task"
                )
            labels.append(label_of(value, column))
        words.append(cols[1])
        lines.append(n)
    end()
    if not sentences:
        raise MinibertError(f"{path}: no sentences (an empty CoNLL-U file)")
    return sentences


def _strings(value, path, n: int, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MinibertError(f'{path}: line {n}: "{key}" must be a list of strings')
    return value


def read_jsonl(path: str | Path, labelled: bool = True) -> list[Sentence]:
    """The sentences of a ``.jsonl`` task: ``{"tokens": [...], "labels": [...]}`` a line."""
    sentences = []
    for n, line in enumerate(read_text(path, ".jsonl file").split("\n"), 1):
        if not line.strip():
            continue
        obj = parse_json(line, f"{path}: line {n}", dict)
        if "tokens" not in obj:
            raise MinibertError(f'{path}: line {n}: no "tokens" key')
        words = _strings(obj["tokens"], path, n, "tokens")
        if not words:
            continue
        if any(not w.strip() for w in words):
            raise MinibertError(
                f"{path}: line {n}: token {[w.strip() for w in words].index('') + 1} is empty"
            )
        labels = None
        if labelled:
            if "labels" not in obj:
                raise MinibertError(f'{path}: line {n}: no "labels" key (a label per token)')
            labels = _strings(obj["labels"], path, n, "labels")
            if len(labels) != len(words):
                raise MinibertError(f"{path}: line {n}: {len(words)} tokens but {len(labels)} labels")
        sentences.append(Sentence(words, labels, [n] * len(words)))
    if not sentences:
        raise MinibertError(f"{path}: no sentences (an empty .jsonl file)")
    return sentences


def read_plain(path: str | Path) -> list[Sentence]:
    """One sentence a line, words split on whitespace, unlabelled."""
    sentences = []
    for n, line in enumerate(read_text(path, "text file").split("\n"), 1):
        words = line.split()
        if words:
            sentences.append(Sentence(words, None, [n] * len(words)))
    if not sentences:
        raise MinibertError(f"{path}: no sentences (an empty text file)")
    return sentences


def read_sentences(path: str | Path, task: str | None = "upos") -> list[Sentence]:
    """By the file's suffix: ``.jsonl`` a task of one's own, ``.txt`` plain text
    (unlabelled), anything else CoNLL-U."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path, labelled=task is not None)
    if suffix == ".txt":
        if task is not None:
            raise MinibertError(f"{path}: a plain text file has no labels to probe (use CoNLL-U or .jsonl)")
        return read_plain(path)
    return read_conllu(path, task)
