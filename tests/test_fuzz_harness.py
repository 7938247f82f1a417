"""The malformed-input harness can fail: it rejects a traceback, two lines, a wrong exit
status, an unnamed file and a changed file."""

from __future__ import annotations

import pytest
from fuzz_helpers import assert_one_line_error, assert_unchanged, run, snapshot


def test_a_clean_error_passes(tmp_path):
    missing = tmp_path / "missing.txt"
    msg = assert_one_line_error(run("extract", missing, "-o", tmp_path / "o.npz"), "missing.txt")
    assert "not found" in msg


@pytest.mark.parametrize(
    "result",
    [
        (1, "", "minibert: error: x\n"),
        (2, "", "minibert: error: x\nsecond line\n"),
        (2, "", "Traceback (most recent call last):\n"),
        (2, "", "error: x\n"),
        (2, "", "minibert: error: about something else\n"),
    ],
)
def test_the_harness_rejects_bad_errors(result):
    with pytest.raises(AssertionError):
        assert_one_line_error(result, "the-file.json")


def test_the_harness_sees_a_changed_file(tmp_path):
    (tmp_path / "a").write_text("x")
    before = snapshot(tmp_path)
    assert_unchanged(before, tmp_path)
    (tmp_path / "a").write_text("y")
    with pytest.raises(AssertionError):
        assert_unchanged(before, tmp_path)
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("new")
    with pytest.raises(AssertionError):
        assert_unchanged(before, tmp_path)
