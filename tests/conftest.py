from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # make `fixtures` importable

from fixtures.tiny_model import build_tiny_model_dir


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # 2-core machines: torch's default 2 threads collapse when anything else runs.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + offline BPE tokenizer saved as a normal HF model folder."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
