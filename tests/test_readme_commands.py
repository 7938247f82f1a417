"""Every shell line of README.md and docs/*.md runs as written, as a reader pastes it after
``make demo`` and ``source .venv/bin/activate``.

The lines are those of fenced ```sh / ```bash / ```shell blocks (every line but comments) and of
```console blocks (the lines after ``$ ``; the rest is shown output). The lines of one page run in
order, in one workspace standing for a fresh clone after ``make demo``: ``examples/``, ``tests/``,
``bench/`` and ``weights/`` of this checkout, a copy of ``docs/`` (some lines regenerate its
figures), the ``out/`` that ``make demo`` made, and a ``.venv/bin`` whose ``minibert`` and
``python`` are this interpreter with this checkout on its path.

A line is not run, and is listed with its reason among the skipped tests, when
- its comment says ``illustration``: a sketch on purpose (a cluster address, a directory the
  reader brings);
- it is a ``make`` target: those build .venv (``make demo`` and ``make test`` run on a fresh clone
  in ``.ci/run``) or take minutes (``make bench``);
- its comment says ``needs the [EXTRA] extra`` and that extra is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from minibert.loading.directory import default_model_dir

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
SHELL = {"sh", "bash", "shell"}
#: The module that tells whether an extra named in a line's comment is installed.
EXTRAS = {"plot": "matplotlib", "dask": "dask.distributed", "browser": "playwright"}


@dataclass(frozen=True)
class Line:
    page: str  # path relative to the repository
    number: int  # 1-based line in the page
    command: str

    def __str__(self) -> str:
        return f"{self.page}:{self.number}: {self.command}"


def shell_lines(text: str, page: str = "<page>") -> list[Line]:
    """The shell lines of a markdown text: every non-comment line of sh/bash/shell blocks, the
    ``$ `` lines of console blocks; a line ending in a backslash continues on the next."""
    lines = []
    for m in FENCE.finditer(text):
        if m[1] not in SHELL and m[1] != "console":
            continue
        first = text.count("\n", 0, m.start(2)) + 1
        pending: tuple[int, str] | None = None
        for i, raw in enumerate(m[2].splitlines()):
            if pending is None:
                if m[1] == "console":
                    if not raw.startswith("$ "):
                        continue  # shown output
                    raw = raw[2:]
                if not raw.strip() or raw.lstrip().startswith("#"):
                    continue
                pending = (first + i, raw)
            else:
                pending = (pending[0], pending[1] + "\n" + raw)
            if not raw.endswith("\\"):
                lines.append(Line(page, pending[0], pending[1].strip()))
                pending = None
    return lines


def why_not_run(line: Line) -> str | None:
    """None if the line runs here, else the reason it does not."""
    comment = line.command.partition(" # ")[2]
    if "illustration" in comment:
        return "an illustration on purpose"
    if re.match(r"make(\s|$)", line.command):
        return "a make target: builds .venv or takes minutes (make demo and make test run in .ci/run)"
    for extra in re.findall(r"needs the \[(\w+)\] extra", comment):
        if importlib.util.find_spec(EXTRAS.get(extra, extra).split(".")[0]) is None:
            return f"needs the [{extra}] extra, not installed here"
    return None


def all_lines() -> list[Line]:
    return [
        line for page in PAGES for line in shell_lines(page.read_text("utf-8"), str(page.relative_to(ROOT)))
    ]


def workspace(tmp_path: Path) -> tuple[Path, dict]:
    """A checkout after ``make demo``, as far as the docs' commands can tell, and its environment."""
    ws = tmp_path / "clone"
    ws.mkdir()
    for name in ("examples", "tests", "bench", "weights"):
        (ws / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "docs", ws / "docs")
    (ws / "out").mkdir()
    bin_dir = ws / ".venv" / "bin"  # on PATH: the lines run as in the activated environment
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    script = bin_dir / "minibert"
    script.write_text(  # as pip writes a console script; Dask's workers re-import __main__
        f"#!{sys.executable}\nimport sys\nfrom minibert.cli import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    script.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        OPENBLAS_NUM_THREADS="1",
    )
    return ws, env


RUN = {}
for _line in all_lines():
    if why_not_run(_line) is None:
        RUN.setdefault(_line.page, []).append(_line)


def test_the_docs_have_shell_lines():
    assert len(RUN.get("README.md", [])) >= 15, RUN.get("README.md")
    assert sum(len(v) for v in RUN.values()) >= 30


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(RUN), ids=str)
def test_shell_lines_run_as_written(page, tmp_path):
    if not (default_model_dir() / "model.safetensors").is_file():
        pytest.skip(f"real model weights absent at {default_model_dir()}: run `make weights`")
    ws, env = workspace(tmp_path)
    for line in RUN[page]:
        r = subprocess.run(
            ["bash", "-c", line.command], cwd=ws, env=env, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, f"{line}\nexit {r.returncode}\n{r.stderr[-2000:]}"


@pytest.mark.parametrize("line", [x for x in all_lines() if why_not_run(x)], ids=str)
def test_lines_not_run_say_why(line):
    """Listed among the skipped tests with its reason; it must have one visible in the page."""
    reason = why_not_run(line)
    assert reason
    pytest.skip(f"{line.page}:{line.number} not run ({reason}): {line.command}")


def test_extraction():
    text = (
        "```sh\nminibert a  # x\n# a comment\n\nminibert b \\\n  --c\n```\n"
        "```console\n$ minibert d\nshown output\n```\n```python\nprint(1)\n```\n```\ntree/\n```\n"
        "```sh\nminibert e  # illustration: a cluster\nmake bench\n"
        "minibert f  # needs the [nope] extra\n```\n"
    )
    lines = shell_lines(text)
    assert [(x.number, x.command) for x in lines] == [
        (2, "minibert a  # x"),
        (5, "minibert b \\\n  --c"),
        (9, "minibert d"),
        (19, "minibert e  # illustration: a cluster"),
        (20, "make bench"),
        (21, "minibert f  # needs the [nope] extra"),
    ]
    assert [why_not_run(x) is None for x in lines] == [True, True, True, False, False, False]


def test_a_failing_line_fails(tmp_path):
    """The runner sees a line that fails, in the workspace as the tests build it."""
    ws, env = workspace(tmp_path)
    bad = subprocess.run(
        ["bash", "-c", "minibert extract corpus.txt -o out/x.npz"],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "corpus.txt" in bad.stderr
    good = subprocess.run(["bash", "-c", "python -c 'import minibert' && test -d out"], cwd=ws, env=env)
    assert good.returncode == 0
