"""What every reference generator records about how a file was made.

Imported by the generate_*.py scripts (run from this folder, so it is on
their path); never by the tests or by minibert.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

import numpy as np


def sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    """Versions of Python and of every library that shaped a reference."""
    import safetensors
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }


def size_check(written: list[Path], limit: int) -> int:
    """Print what a generator wrote; exit status 1 when it is more than ``limit`` bytes
    (committed fixtures must stay small)."""
    total = sum(p.stat().st_size for p in written)
    print(f"{len(written)} files, {total:,} bytes")
    if total > limit:
        print(f"error: more than {limit:,} bytes", file=sys.stderr)
        return 1
    return 0
