"""Open any output ``minibert extract`` wrote: the one entry point for readers.

Where things live: :mod:`minibert.spec` (what a run computes, recorded as
every output's settings), :mod:`minibert.records` (one text's features and
the arrays of the layout), :mod:`minibert.writers` (files, written
atomically), :mod:`minibert.readers` (files read back, checked) and
:mod:`minibert.shards` (a directory of shards, both ways). This module sits
above them all, so none of them imports another one's caller.
"""

from __future__ import annotations

import os
from pathlib import Path

from .readers import OutputReader, open_file
from .shards import ShardedOutput


def open_output(path: str | Path) -> OutputReader:
    """Open what extract wrote: an ``.npz``, ``.safetensors`` or ``.jsonl``
    file (:class:`~minibert.readers.FileOutput`), or a directory of shards
    (:class:`~minibert.shards.ShardedOutput`). A .safetensors file, an .npz
    file and a directory are read lazily. Anything that is not a whole
    minibert output is one MinibertError naming the file and what is wrong."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"open_output: path must be a path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        return ShardedOutput(path)
    return open_file(path)
