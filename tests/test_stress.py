"""The kill/resume and concurrency stress script (tests/stress.py) at a small
scale: SIGKILL at random moments, then resumes, then several writers at once;
every state on disk valid, the result the reference's bytes."""

from __future__ import annotations

import pytest
import stress
from conftest import TINY_BERT


@pytest.mark.slow
def test_stress_at_small_scale(tmp_path, capsys):
    argv = ["--model", str(TINY_BERT), "--texts", "24", "--shard-size", "4", "--kills", "2", "--writers", "2",
            "--workdir", str(tmp_path)]  # fmt: skip
    status = stress.main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "refused" in out and "FAIL" not in out


def test_the_stress_checks_can_fail(tmp_path):
    """A stray file, a torn manifest and a differing shard are each reported."""
    from types import SimpleNamespace

    s = stress.Stress(SimpleNamespace(workdir=tmp_path, seed=0, model=TINY_BERT, shard_size=4, writers=2))
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("not minibert's")
    (d / "manifest.json").write_text("{torn")
    s.check_state(d, "here")
    assert len(s.failures) == 2 and "notes.txt" in s.failures[0] and "manifest.json" in s.failures[1]
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "notes.txt").write_text("other")
    (tmp_path / "reference" / "manifest.json").write_text("{torn")
    s.check_equal(d, "there")
    assert len(s.failures) == 3 and "notes.txt differs" in s.failures[2]
