"""minibert.teaching.verify and `minibert verify`: passes on a good reference, fails on
a perturbed one, and rejects files that are not references."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE, TINY_BERT

from minibert import MinibertError
from minibert.teaching.verify import compare, default_reference, format_report

ROOT = Path(__file__).resolve().parent.parent
TINY32 = REFERENCE / "tiny-bert-float32.npz"
TINY64 = REFERENCE / "tiny-bert-float64.npz"
ROWS = ["input_ids", "token_type_ids", "hidden_states[0]", "hidden_states[1]", "hidden_states[2]",
        "attentions[0]", "attentions[1]"]  # fmt: skip


def perturbed(tmp_path: Path, source: Path, key: str, delta, index=(3, 1)) -> Path:
    """A copy of ``source`` with ``delta`` added to one element of ``key``."""
    with np.load(source, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    a = arrays[key].copy()
    a[index] += np.asarray(delta).astype(a.dtype)
    arrays[key] = a
    path = tmp_path / f"perturbed-{key}.npz"
    np.savez(path, **arrays)
    return path


def failing(report) -> list[str]:
    return [r.name for r in report.rows if not r.ok]


def test_good_reference_passes(tiny_model):
    report = compare(tiny_model, TINY32)
    assert report.ok, format_report(report)
    assert [r.name for r in report.rows] == ROWS
    assert all(r.count > 0 for r in report.rows)
    tol = {r.name: r.tolerance for r in report.rows}
    assert tol["hidden_states[2]"] == 1e-4 and tol["attentions[1]"] == 1e-5 and tol["input_ids"] == 0
    assert all(r.min_cosine > 0.999999 for r in report.rows[2:])
    assert report.dtype == report.reference_dtype == "float32"


def test_tolerance_follows_the_coarser_dtype(tiny_model, tiny_model64):
    both64 = compare(tiny_model64, TINY64)
    assert both64.ok and {r.tolerance for r in both64.rows[2:]} == {1e-9}
    for model, ref in ((tiny_model, TINY64), (tiny_model64, TINY32)):
        report = compare(model, ref)
        assert report.ok and {r.tolerance for r in report.rows[2:]} == {1e-4, 1e-5}


@pytest.mark.parametrize(
    "source, key, delta, fails",
    [
        (TINY32, "hidden_states.1", 1e-3, ["hidden_states[1]"]),
        (TINY32, "hidden_states.0", -2e-4, ["hidden_states[0]"]),
        (TINY32, "attentions.0", 2e-5, ["attentions[0]"]),
        (TINY64, "hidden_states.2", 1e-8, ["hidden_states[2]"]),
        (TINY64, "attentions.1", -1e-8, ["attentions[1]"]),
        (TINY32, "hidden_states.2", 5e-5, []),  # within 1e-4: still passes
    ],
)
def test_perturbed_reference_fails_where_perturbed(
    tmp_path, tiny_model, tiny_model64, source, key, delta, fails
):
    model = tiny_model64 if source == TINY64 else tiny_model
    report = compare(model, perturbed(tmp_path, source, key, delta))
    assert failing(report) == fails, format_report(report)
    assert report.ok == (not fails)
    row = next(r for r in report.rows if r.name == key.replace(".", "[") + "]")
    assert abs(row.max_abs_diff - abs(delta)) < abs(delta) * 0.1  # it reports the change it saw


def test_float64_perturbation_is_within_float32_tolerance(tmp_path, tiny_model):
    """The same 1e-8 change that fails a float64 check passes when the model runs in float32."""
    assert compare(tiny_model, perturbed(tmp_path, TINY64, "hidden_states.2", 1e-8)).ok


def test_token_id_mismatch_fails_and_skips_that_input(tmp_path, tiny_model):
    path = perturbed(tmp_path, TINY32, "input_ids", 1, index=(0, 1))
    report = compare(tiny_model, path)
    assert failing(report) == ["input_ids"]
    assert any(n.startswith("input 0: token ids differ") for n in report.notes)
    good = compare(tiny_model, TINY32)
    assert report.rows[2].count < good.rows[2].count  # input 0's activations were not compared
    assert "FAIL: 1 of 7 checks" in format_report(report)


def test_format_report_is_an_aligned_table(tiny_model, tmp_path):
    text = format_report(compare(tiny_model, perturbed(tmp_path, TINY32, "attentions.1", 1e-3)))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("check"))
    table = lines[header + 1 : header + 1 + len(ROWS)]
    assert [line.split()[0] for line in table] == ROWS
    col = lines[header].index("result")
    assert all(line[col:] in ("ok", "FAIL") for line in table)
    assert table[-1].endswith("FAIL") and table[-2].endswith("ok")
    assert lines[-1] == "FAIL: 1 of 7 checks out of tolerance"


@pytest.mark.real
def test_real_model_reference_passes(real_model):
    report = compare(real_model, REFERENCE / "all-MiniLM-L6-v2-float32.npz")
    assert report.ok, format_report(report)
    assert len(report.rows) == 2 + 7 + 6 and not report.notes


def _write_text(p: Path) -> Path:
    p.write_text("not a zip file")
    return p


def _write_npy(p: Path) -> Path:
    np.save(p.with_suffix(".npy"), np.zeros(3))
    return p.with_suffix(".npy")


def _without(key: str):
    def make(p: Path) -> Path:
        with np.load(TINY32, allow_pickle=False) as f:
            np.savez(p, **{k: f[k] for k in f.files if k != key})
        return p

    return make


def _pickled(p: Path) -> Path:
    with np.load(TINY32, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["texts"] = np.array([{"a": 1}], dtype=object)
    np.savez(p, **arrays)
    return p


def _replace(key: str, value):
    """A reference whose ``key`` is ``value`` (or ``value(old)``)."""

    def make(p: Path) -> Path:
        with np.load(TINY32, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        arrays[key] = value(arrays[key]) if callable(value) else value
        np.savez(p, **arrays)
        return p

    return make


def _points_at_padding(p: Path) -> Path:
    with np.load(TINY32, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["positions"] = arrays["positions"].copy()
    arrays["positions"][0, 1] = 40  # input 0 has 5 tokens
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "reference file not found"),
        (_write_text, "not an .npz reference file"),
        (_write_npy, "not an .npz reference file"),
        (_without("positions"), "missing key 'positions'"),
        (_without("hidden_states.2"), "missing key 'hidden_states.2'"),
        (_without("attentions.1"), "missing key 'attentions.1'"),
        (_pickled, "holds Python objects (pickle)"),
        (_points_at_padding, "outside the inputs' real (non-padding) tokens"),
        (_replace("tokens", np.asarray('{"a": 1}')), "'tokens' must be a JSON list"),
        (_replace("texts", np.asarray('["\\ud800"]')), "lone surrogate"),
        (_replace("texts", np.asarray("[" * 5000 + "]" * 5000)), "nested too deeply"),
        (_replace("provenance", np.asarray('{"n": ' + "9" * 5000 + "}")), "key 'provenance'"),
        (_replace("provenance", np.asarray('{"tolerances": {"float32": "tight"}}')), "'tolerances'"),
        (_replace("max_length", np.arange(3)), "key 'max_length'"),
        (_replace("format", np.asarray("1")), "key 'format'"),
        (_replace("attention_mask", lambda a: a * 5), "'attention_mask' holds values"),
        (_replace("input_ids", lambda a: a.astype(np.float32)), "'input_ids'"),
        (_replace("hidden_states.1", lambda a: a[:-1]), "'hidden_states.1'"),
        (_replace("hidden_states.999999", np.zeros((1, 1))), "missing key 'attentions.2'"),
        (_replace("hidden_states.99999999", np.zeros((1, 1))), "unexpected key"),
        (_replace("hidden_states.x", np.zeros((1, 1))), "unexpected key 'hidden_states.x'"),
        (lambda p: REFERENCE / "all-MiniLM-L6-v2-float32.npz", "made for 6 layers of width 384"),
    ],
)
def test_bad_reference_is_a_one_line_error(tmp_path, tiny_model, make, message):
    path = make(tmp_path / "ref.npz")
    with pytest.raises(MinibertError) as err:
        compare(tiny_model, path)
    assert message in str(err.value) and "\n" not in str(err.value)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "minibert.cli", "verify", "--model", str(TINY_BERT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_cli_exit_status(tmp_path):
    ok = cli("--reference", str(TINY32))
    assert ok.returncode == 0, ok.stderr
    assert "OK: all 7 checks within tolerance" in ok.stdout and "hidden_states[2]" in ok.stdout
    bad = cli("--reference", str(perturbed(tmp_path, TINY32, "hidden_states.2", 1e-3)))
    assert bad.returncode == 1 and "FAIL: 1 of 7 checks" in bad.stdout
    missing = cli("--reference", str(tmp_path / "nope.npz"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("minibert: error: ") and missing.stderr.count("\n") == 1
    assert "nope.npz: reference file not found" in missing.stderr


def test_reference_is_required_with_a_model():
    """Only the default model has a committed reference: with --model, say so in one line."""
    r = cli()
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (
        "minibert: error: --reference is required with --model (the committed one is the default model's)\n"
    )


def test_default_reference_is_the_committed_one():
    assert default_reference() == REFERENCE / "all-MiniLM-L6-v2-float32.npz"
    assert default_reference("float64") == REFERENCE / "all-MiniLM-L6-v2-float64.npz"
    assert default_reference().is_file() and default_reference("float64").is_file()


@pytest.mark.real
@pytest.mark.slow
def test_verify_with_no_argument_checks_the_default_model(real_model_dir):
    """The README's `minibert verify`: the default model against its committed reference
    (it said `--reference required`)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINIBERT_WEIGHTS=str(real_model_dir.parent))
    cmd = [sys.executable, "-m", "minibert.cli", "verify"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "all-MiniLM-L6-v2-float32.npz" in r.stdout and "OK: all 15 checks within tolerance" in r.stdout
