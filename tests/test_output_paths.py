"""Where a command writes (issue 17, items 1, 2, 5d, 10): every command that
writes -- extract (a file or a shard directory), view, plot, convert -- goes
through one check (:func:`minibert.files.check_target`) and refuses, with
one line naming the path, before any work and leaving every file as it was:

- an OUTPUT that is the file on stdin (``extract - -o in.jsonl < in.jsonl``);
- a FIFO, a device, a symlink loop at the output path (the atomic rename
  would replace them), a symlink into the model directory or the input;
- a path the file system cannot take (name too long, a parent that is a
  file or a symlink loop), as one line instead of an OSError traceback.

And every message the command line prints escapes what a terminal would obey
(ESC, CSI, a bidi override, a newline) in a hostile file name.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import TINY_BERT as TINY
from fuzz_helpers import assert_one_line_error, assert_unchanged, run, run_subprocess, snapshot

from minibert.errors import printable

TEXTS = "the cat sat\na dog ran home\nblue river\n"


def entries(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` that :func:`snapshot` does not see (FIFOs,
    symlinks), by lstat: its kind and where a link points."""
    found = {}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        found[str(p)] = (stat.S_IFMT(st.st_mode), os.readlink(p) if p.is_symlink() else None)
    return found


def assert_refused(result, tmp_path: Path, before: tuple, *names: str) -> str:
    message = assert_one_line_error(result, *names)
    assert_unchanged(before[0], tmp_path)
    assert entries(tmp_path) == before[1]
    return message


def state(tmp_path: Path) -> tuple:
    return snapshot(tmp_path), entries(tmp_path)


# ----------------------------------------------------------------------------- outputs: special files


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory) -> Path:
    """An extract --attention-stats shard directory, for plot heads."""
    d = tmp_path_factory.mktemp("stats")
    (d / "in.txt").write_text(TEXTS, encoding="utf-8")
    code, _, err = run("extract", "--model", TINY, d / "in.txt", "-o", d / "feats", "--attention-stats",
                       "--pool", "none", "--quiet")  # fmt: skip
    assert code == 0, err
    return d / "feats"


#: command -> (the output's extension, or "/" for a directory; its arguments but -o OUT)
COMMANDS = {
    "extract-file": (".jsonl", lambda d, src: ["extract", "--model", TINY, src, "--quiet"]),
    "extract-shards": ("/", lambda d, src: ["extract", "--model", TINY, src, "--quiet"]),
    "view": (".html", lambda d, src: ["view", "--model", TINY, "the cat"]),
    "plot-attention": (".png", lambda d, src: ["plot", "attention", "--model", TINY, "the cat"]),
    "plot-layers": (".png", lambda d, src: ["plot", "layers", "--model", TINY, src]),
    "plot-heads": (".png", lambda d, src: ["plot", "heads", d]),
    "convert": ("/", lambda d, src: ["convert", TINY]),
}


def _fifo(tmp_path, name):
    os.mkfifo(tmp_path / name)
    return tmp_path / name, ["FIFO"]


def _link_to_a_device(tmp_path, name):
    (tmp_path / name).symlink_to("/dev/null")
    return tmp_path / name, ["character device"]


def _link_to_a_fifo(tmp_path, name):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / name).symlink_to(tmp_path / "pipe")
    return tmp_path / name, ["FIFO"]


def _symlink_loop(tmp_path, name):
    (tmp_path / name).symlink_to(name)
    return tmp_path / name, ["too many levels of symbolic links"]


def _parent_is_a_symlink_loop(tmp_path, name):
    (tmp_path / "loop").symlink_to("loop")
    return tmp_path / "loop" / name, ["too many levels of symbolic links"]


def _parent_is_a_file(tmp_path, name):
    return tmp_path / "in.txt" / name, ["not a directory"]


def _name_too_long(tmp_path, name):
    return tmp_path / ("a" * 300 + name), ["file name too long"]


def _name_too_long_for_the_temporary_file(tmp_path, name):
    """Fits the file system, but not with the temporary file's ``.NAME.xxxxxxxx.tmp`` around it."""
    return tmp_path / ("a" * (252 - len(name)) + name), ["file name too long"]


def _a_directory(tmp_path, name):
    (tmp_path / name).mkdir()
    (tmp_path / name / "keep.txt").write_text("the user's file")
    return tmp_path / name, ["is a directory"]


SPECIAL = [
    _fifo,
    _link_to_a_device,
    _link_to_a_fifo,
    _symlink_loop,
    _parent_is_a_symlink_loop,
    _parent_is_a_file,
    _name_too_long,
    _name_too_long_for_the_temporary_file,
    _a_directory,
]


#: A directory is what a directory OUTPUT is, and extract writes shards into an existing directory.
CASES = [
    (command, make)
    for command in COMMANDS
    for make in SPECIAL
    if not (make is _a_directory and (COMMANDS[command][0] == "/" or command == "extract-file"))
]


@pytest.mark.parametrize("command, make", CASES, ids=[f"{c}-{m.__name__.strip('_')}" for c, m in CASES])
def test_special_output_path(tmp_path, stats_dir, command, make):
    ext, argv = COMMANDS[command]
    if command.startswith("plot"):
        pytest.importorskip("matplotlib")
    directory = ext == "/"
    src = tmp_path / "in.txt"
    src.write_text(TEXTS, encoding="utf-8")
    out, names = make(tmp_path, "out" + ("" if directory else ext))
    if directory and make in (_fifo, _link_to_a_device, _link_to_a_fifo):
        names = ["not a directory"]
    before = state(tmp_path)
    assert_refused(run(*argv(stats_dir, src), "-o", out), tmp_path, before, out.name[:40], *names)


# ------------------------------------------------------------------------- outputs: links into what is read


def _model(tmp_path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(TINY, model)
    (model / "README.md").write_text("the model card\n")
    return model


LINKED = {
    "view to config.json": (["view", "--model", "{model}", "the cat"], "page.html", "config.json",
                            ["a file of the model"]),
    "view to the model's README": (["view", "--model", "{model}", "the cat"], "page.html", "README.md",
                                   ["inside the model directory"]),
    "plot attention to config.json": (["plot", "attention", "--model", "{model}", "hi"], "p.png",
                                      "config.json", ["a file of the model"]),
    "plot layers to the tokenizer": (["plot", "layers", "--model", "{model}", "{src}"], "p.png",
                                     "tokenizer.json", ["a file of the model"]),
    "plot layers to an unread vocab.txt": (["plot", "layers", "--model", "{model}", "{src}"], "p.png",
                                           "vocab.txt", ["inside the model directory"]),
    "extract to the model's README": (["extract", "--model", "{model}", "{src}"], "o.jsonl", "README.md",
                                      ["inside the model directory"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LINKED))
def test_output_linked_into_the_model(tmp_path, case):
    argv, name, target, names = LINKED[case]
    if argv[0] == "plot":
        pytest.importorskip("matplotlib")
    model = _model(tmp_path)
    src = tmp_path / "in.txt"
    src.write_text(TEXTS, encoding="utf-8")
    if not (model / target).exists():
        pytest.skip(f"the tiny model has no {target}")
    (tmp_path / name).symlink_to(model / target)
    before = state(tmp_path)
    args = [{"{model}": model, "{src}": src}.get(a, a) for a in argv]
    assert_refused(run(*args, "-o", tmp_path / name), tmp_path, before, name, *names)


def test_plot_heads_output_linked_into_the_extract_output(tmp_path, stats_dir):
    pytest.importorskip("matplotlib")
    d = tmp_path / "feats"
    shutil.copytree(stats_dir, d)
    (tmp_path / "p.png").symlink_to(d / "manifest.json")
    before = state(tmp_path)
    result = run("plot", "heads", d, "-o", tmp_path / "p.png")
    assert_refused(result, tmp_path, before, "p.png", "inside the extract output")


# ----------------------------------------------------------------------------- outputs: the input on stdin


def _stdin_same_file(tmp_path):
    return ["extract", "--model", TINY, "-", "-o", tmp_path / "in.jsonl", "--quiet"], "in.jsonl"


def _stdin_hard_link(tmp_path):
    os.link(tmp_path / "in.jsonl", tmp_path / "hard.jsonl")
    return ["extract", "--model", TINY, "-", "-o", tmp_path / "hard.jsonl", "--quiet"], "hard.jsonl"


def _stdin_symlink(tmp_path):
    (tmp_path / "link.jsonl").symlink_to("in.jsonl")
    return ["extract", "--model", TINY, "-", "-o", tmp_path / "link.jsonl", "--quiet"], "link.jsonl"


def _stdin_in_the_shard_directory(tmp_path):
    out = tmp_path / "feats"
    assert run("extract", "--model", TINY, tmp_path / "in.jsonl", "-o", out, "--quiet")[0] == 0
    os.replace(tmp_path / "in.jsonl", out / "in.jsonl")
    (tmp_path / "in.jsonl").symlink_to(out / "in.jsonl")  # what the test feeds on stdin
    return ["extract", "--model", TINY, "-", "-o", out, "--resume", "--quiet"], "holds the input"


def _stdin_plot_layers(tmp_path):
    (tmp_path / "in.png").write_text(TEXTS, encoding="utf-8")
    (tmp_path / "in.jsonl").unlink()
    (tmp_path / "in.jsonl").symlink_to("in.png")
    return ["plot", "layers", "--model", TINY, "-", "-o", tmp_path / "in.png"], "in.png"


@pytest.mark.parametrize(
    "make",
    [_stdin_same_file, _stdin_hard_link, _stdin_symlink, _stdin_in_the_shard_directory, _stdin_plot_layers],
    ids=lambda f: f.__name__.strip("_"),
)
def test_output_is_the_input_on_stdin(tmp_path, make):
    """The ``/dev/stdin`` spelling was refused; ``-`` was not, and the input was replaced by its features."""
    if make is _stdin_plot_layers:
        pytest.importorskip("matplotlib")
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n{"text": "world"}\n', encoding="utf-8")
    argv, name = make(tmp_path)
    before = state(tmp_path)
    with open(tmp_path / "in.jsonl", "rb") as stdin:
        result = run_subprocess(*argv, stdin=stdin)
    assert_refused(result, tmp_path, before, name, "the input on stdin")


def test_stdin_from_another_file_or_a_pipe_is_fine(tmp_path):
    (tmp_path / "in.txt").write_text(TEXTS, encoding="utf-8")
    with open(tmp_path / "in.txt", "rb") as stdin:
        code, _, err = run_subprocess(
            "extract", "--model", TINY, "-", "-o", tmp_path / "a.jsonl", stdin=stdin
        )
    assert code == 0, err
    code, _, err = run_subprocess("extract", "--model", TINY, "-", "-o", tmp_path / "b.jsonl", input=TEXTS)
    assert code == 0, err
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_an_ordinary_symlink_at_the_output_is_replaced_not_followed(tmp_path):
    """What is not refused: a symlink to a regular file outside the model and
    the input is replaced by the new file (the rename), its target untouched."""
    (tmp_path / "in.txt").write_text(TEXTS, encoding="utf-8")
    (tmp_path / "elsewhere.jsonl").write_text("the user's other file")
    (tmp_path / "o.jsonl").symlink_to("elsewhere.jsonl")
    assert run("extract", "--model", TINY, tmp_path / "in.txt", "-o", tmp_path / "o.jsonl", "--quiet")[0] == 0
    assert not (tmp_path / "o.jsonl").is_symlink()
    assert (tmp_path / "elsewhere.jsonl").read_text() == "the user's other file"


# ----------------------------------------------------------------------------- messages: terminal escapes

#: Characters a terminal obeys or that split a line: ESC (a CSI sequence), CR, LF, C1 CSI,
#: a bidi override and isolate, NEL and LINE SEPARATOR (str.splitlines splits on them), DEL.
HOSTILE = ["\x1b[2J\x1b]0;owned\x07", "\r", "\n", "\x9b31m", "\u202e", "\u2066", "\x85", "\u2028", "\x7f"]


def assert_printable(text: str, hostile: str) -> None:
    """No character of ``text`` (but the final newline) is one a terminal would obey, and
    ``hostile``'s characters are there, escaped."""
    body = text.rstrip("\n")
    assert all(c.isprintable() for c in body), repr(body)
    assert printable(hostile) in body, repr(body)


@pytest.mark.parametrize("hostile", HOSTILE, ids=[repr(h) for h in HOSTILE])
def test_hostile_file_names_are_escaped_in_errors(tmp_path, hostile):
    src = tmp_path / "in.txt"
    src.write_text(TEXTS, encoding="utf-8")
    cases = [
        (["extract", "--model", TINY, tmp_path / f"no{hostile}such.txt", "-o", tmp_path / "o.npz"], "no"),
        (["extract", "--model", TINY, src, "-o", tmp_path / f"o{hostile}.csv"], "unknown output format"),
        (["view", "--model", TINY, "cat", "-o", tmp_path / f"no{hostile}dir" / "p.html"], "does not exist"),
        (["summary", tmp_path / f"o{hostile}.npz"], "o"),
        (["check-article", f"x{hostile}"], "unrecognized arguments"),  # argparse's own message
    ]
    for argv, name in cases:
        message = assert_one_line_error(run(*argv), name)
        assert_printable(message, hostile)


@pytest.mark.parametrize("hostile", ["\x1b[2J", "\n", "\u202e"], ids=repr)
def test_hostile_file_names_are_escaped_in_notes(tmp_path, hostile):
    """What succeeds and names a file on stderr (extract, convert) or stdout (view) is escaped too."""
    src = tmp_path / "in.txt"
    src.write_text(TEXTS, encoding="utf-8")
    code, _, err = run("extract", "--model", TINY, src, "-o", tmp_path / f"o{hostile}.npz")
    assert code == 0, err
    assert_printable(err, hostile)
    code, out, err = run("view", "--model", TINY, "cat", "-o", tmp_path / f"p{hostile}.html")
    assert code == 0, err
    assert_printable(out, hostile)
    code, _, err = run("convert", TINY, "-o", tmp_path / f"m{hostile}")
    assert code == 0, err
    for line in err.splitlines():
        assert_printable(line, "")
    assert printable(hostile) in err


def test_printable():
    assert printable("plain é 日本 \\x1b") == "plain é 日本 \\x1b"  # printable text stays as it is
    assert printable("a\x1bb\x9bc\x7f") == "a\\x1bb\\x9bc\\x7f"
    assert printable("l\nr\r\tt") == "l\\nr\\r\\tt"
    assert printable("\u202e\u2066\u2069\u2028\ufeff") == "\\u202e\\u2066\\u2069\\u2028\\ufeff"
    assert printable("\udcff\U000e0001") == "\\udcff\\U000e0001"


def test_the_cli_prints_errors_through_printable(monkeypatch, capsys):
    """The one point where the command line prints an error escapes it, whatever raised it."""
    from minibert import cli
    from minibert.commands import check_article
    from minibert.errors import MinibertError

    def fail(args):
        raise MinibertError("a\x1b[2Jb\nc\u202ed")

    monkeypatch.setattr(check_article, "run", fail)
    assert cli.main(["check-article"]) == 2
    assert capsys.readouterr().err == "minibert: error: a\\x1b[2Jb\\nc\\u202ed\n"
