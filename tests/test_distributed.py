"""``minibert extract --engine dask``: on a LocalCluster of two worker
processes, the shards and manifest equal a single-process run's, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed")

from blas_helpers import ONE_THREAD  # noqa: E402
from corpus_helpers import as_if_killed, assert_same_output, cli, texts  # noqa: E402

from minibert.cli import main  # noqa: E402
from minibert.corpus.distributed import blas_threads, loaded_models  # noqa: E402
from minibert.outputs.output import open_output  # noqa: E402
from minibert.outputs.shards import MANIFEST  # noqa: E402

ARGS = ["--shard-size", "8", "--batch-size", "4", "--quiet"]

pytestmark = pytest.mark.slow  # a Dask cluster of two worker processes starts for each test


@pytest.fixture(scope="module")
def model_dir(small_model_dir, one_blas_thread):
    return small_model_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, model_dir):
    """37 texts (5 shards, the last short), extracted by the local engine."""
    d = tmp_path_factory.mktemp("dask")
    src = d / "in.txt"
    src.write_text("\n".join(texts(37, seed=3)) + "\n", encoding="utf-8")
    assert main(["extract", "--model", str(model_dir), str(src), "-o", str(d / "local"), *ARGS]) == 0
    return src, d / "local"


def test_dask_cluster_output_equals_single_process(corpus, model_dir, tmp_path, monkeypatch):
    src, local = corpus
    for k, v in ONE_THREAD.items():  # worker processes inherit this environment
        monkeypatch.setenv(k, v)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        out = tmp_path / "dask"
        argv = ["extract", "--model", str(model_dir), str(src), "-o", str(out), *ARGS]
        assert main([*argv, "--engine", "dask", "--scheduler", cluster.scheduler_address]) == 0
        # 2 workers x 1 thread on 2 cores: one BLAS thread each, no oversubscription
        assert sorted(blas_threads(client).values()) == [1, 1]
        models = client.run(loaded_models)
        assert all(len(m) <= 1 for m in models.values()) and any(models.values())  # loaded once per worker
    assert (out / MANIFEST).read_bytes() == (local / MANIFEST).read_bytes()
    for entry in json.loads((local / MANIFEST).read_text())["shards"]:
        assert (out / entry["file"]).read_bytes() == (local / entry["file"]).read_bytes()
    assert_same_output(open_output(out), open_output(local))


def test_dask_local_cluster_resumes_a_killed_run(corpus, model_dir, tmp_path):
    src, local = corpus
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_bytes((local / MANIFEST).read_bytes())
    for entry in as_if_killed(out, keep=2)["shards"]:  # the state a kill after two shards leaves
        (out / entry["file"]).write_bytes((local / entry["file"]).read_bytes())
    r = cli(
        "extract",
        "--model",
        model_dir,
        src,
        "-o",
        out,
        *ARGS,
        "--engine",
        "dask",
        "--workers",
        "2",
        "--resume",
    )
    assert r.returncode == 0, r.stderr
    assert (out / MANIFEST).read_bytes() == (local / MANIFEST).read_bytes()
    a = open_output(out)
    np.testing.assert_array_equal(np.concatenate([p.arrays["index"] for p in a.parts()]), np.arange(37))
    assert_same_output(a, open_output(local))
