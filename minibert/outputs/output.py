"""Open any output ``minibert extract`` wrote: the one entry point for readers.

Where things live: :mod:`minibert.outputs.spec` (what a run computes, recorded as
every output's settings), :mod:`minibert.outputs.records` (one text's features and
the arrays of the layout), :mod:`minibert.outputs.writers` (files, written
atomically), :mod:`minibert.outputs.readers` (files read back, checked) and
:mod:`minibert.outputs.shards` (a directory of shards, both ways). This module sits
above them all, so none of them imports another one's caller.
"""

from __future__ import annotations

import os
from pathlib import Path

from minibert.outputs.readers import OutputReader, open_file
from minibert.outputs.shards import ShardedOutput


def open_output(path: str | Path) -> OutputReader:
    """Open what extract wrote: an ``.npz``, ``.safetensors`` or ``.jsonl``
    file (:class:`~minibert.outputs.readers.FileOutput`), or a directory of shards
    (:class:`~minibert.outputs.shards.ShardedOutput`). A .safetensors file, an .npz
    file and a directory are read lazily. Anything that is not a whole
    minibert output is one MinibertError naming the file and what is wrong."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"open_output: path must be a path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        return ShardedOutput(path)
    return open_file(path)
