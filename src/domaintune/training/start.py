"""The model a fine-tuning stage (SFT, align) starts from: the base, or the previous model
stage's model with its adapter merged, written once to `<stage>/start_model/`.

One way for every stage and method: a plain model folder loads like a base model, so any method
can start from it (LoRA, full, prefix, DPO's "adapter disabled" reference, QLoRA's 4-bit reload),
and its tokenizer (chat template, new tokens) is the one the previous stage saved.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from domaintune import models
from domaintune.artifacts import RunDir
from domaintune.config import Config, ModelConfig
from domaintune.console import console

START_DIR = "start_model"


@dataclass(frozen=True)
class Start:
    model: ModelConfig  # load it like a base model
    stage: str | None  # the model stage it comes from (None: the base)

    @property
    def from_previous_stage(self) -> bool:
        return self.stage is not None


def start_model(cfg: Config, run_dir: RunDir, stage: str, main: bool = True,
                wait: Callable[[], None] = lambda: None) -> Start:
    """Merge the previous model stage's model into `<stage>/start_model/` (on the main process;
    `wait` is the barrier after which the other ranks read it)."""
    prev = cfg.previous_model_stage(stage)
    if prev is None:
        return Start(cfg.model, None)
    trained = run_dir.output(prev, "model", by=stage)
    start_dir = run_dir.stage_dir(stage) / START_DIR
    if main:  # one writer
        console.print(f"  starting from the '{prev}' stage's model ({trained})")
        loaded = models.load_trained(trained, base=cfg.model, device="cpu")  # with the tokenizer saved with it
        models.merge_and_save(loaded.model, loaded.tokenizer, start_dir)
    wait()
    return Start(cfg.model.model_copy(update={"base": str(start_dir), "gguf_file": None, "revision": None,
                                              "new_tokens": []}), prev)


def discard(run_dir: RunDir, stage: str) -> None:
    """The merged start model, once the stage's output no longer needs it (it is merged into it)."""
    shutil.rmtree(Path(run_dir.stage_dir(stage)) / START_DIR, ignore_errors=True)
