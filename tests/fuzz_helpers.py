"""The harness of the malformed-input suite (issue 9): every bad input ends in
exit status 2, one line on stderr that names the problem, no traceback, and
the user's files as they were.

Cases run the command in this process (``minibert.cli.main``), so a
traceback is an exception the test sees, and hundreds of cases fit in
seconds; :func:`run_subprocess` is for the few that need a real process
(signals, permissions, resource limits).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from minibert.cli import main


def run(*args) -> tuple[int, str, str]:
    """``minibert ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's own usage errors
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def run_subprocess(*args, env: dict | None = None, **kw) -> tuple[int, str, str]:
    """``minibert ARGS`` in a child process: (exit status, stdout, stderr)."""
    r = subprocess.run(
        [sys.executable, "-m", "minibert.cli", *map(str, args)],
        capture_output=True, text=True, timeout=300, env=env, **kw,
    )  # fmt: skip
    return r.returncode, r.stdout, r.stderr


def assert_one_line_error(result: tuple[int, str, str], *names: str) -> str:
    """Exit status 2, stderr one line ``minibert: error: ...`` mentioning every
    one of ``names`` (a file, a field, a tensor, a line number), no traceback.
    Returns the message."""
    code, _, err = result
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {err!r}"
    assert lines[0].startswith("minibert: error: "), lines[0]
    for name in names:
        assert str(name) in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]


def snapshot(*roots: str | os.PathLike) -> dict[str, tuple[int, str]]:
    """Every file under ``roots`` (files or directories): path -> (mode, sha256)."""
    files: dict[str, tuple[int, str]] = {}
    for root in map(Path, roots):
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            files[str(p)] = (p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return files


def assert_unchanged(before: dict[str, tuple[int, str]], *roots: str | os.PathLike) -> None:
    """The user's files are exactly as :func:`snapshot` saw them (none lost, none changed,
    none added)."""
    after = snapshot(*roots)
    assert after == before, {
        "changed": sorted(k for k in before if k in after and after[k] != before[k]),
        "lost": sorted(set(before) - set(after)),
        "added": sorted(set(after) - set(before)),
    }


def rewrite_safetensors_header(path: str | os.PathLike, edit) -> None:
    """Apply ``edit`` to a .safetensors file's parsed JSON header and write the
    file back with the same data (a header damaged in one chosen way)."""
    path = Path(path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])


def fail_fsync(monkeypatch) -> str:
    """os.fsync fails as on a full disk; returns the words of the error."""

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    return "no space left on device"


def fail_mkstemp(monkeypatch) -> str:
    """tempfile.mkstemp fails as on a read-only file system; returns the words of the error."""
    import tempfile

    def mkstemp(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return "read-only file system"
