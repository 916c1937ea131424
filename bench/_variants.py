"""The compared training paths. Each takes a fresh copy of the same initial model and the same
documents, trains one epoch (same token budget) and returns what it measured plus the model.

Timed region: the `train()` / `train_loop()` call only (model construction, tokenization,
packing and trainer construction are reported separately as `prep_s`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import tempfile
import threading
import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import torch
from _corpus import Corpus

NAMES = {
    "a": "(a) Trainer pad-to-longest",
    "b": "(b) Trainer + flattening",
    "c": "(c) Trainer group_by_length",
    "d": "(d) TRL SFTTrainer packing",
    "f": "(f) ours: pack + train_loop",
}


@dataclass(frozen=True)
class Setup:
    """What every variant shares: model config and initial weights, optimisation settings."""

    config: object  # LlamaConfig
    init_state: dict
    tokenizer: object
    seed: int
    lr: float
    warmup_ratio: float
    batch_tokens: int  # tokens per optimizer step (approximately, for the per-document batches)
    buckets: tuple[int, ...]
    workdir: Path

    @property
    def max_len(self) -> int:
        return max(self.buckets)


@dataclass
class Run:
    variant: str
    tokens: int  # real (non-padding) tokens in the batches the model was trained on
    elements: int  # input_ids elements fed to the model, padding included
    wall_s: float
    steps: int
    prep_s: float
    rss_delta_mb: float | None  # peak RSS during train() minus RSS just before (psutil)
    maxrss_mb: float  # ru_maxrss after train(): process-wide high-water mark
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def padding(self) -> float:
        return 1 - self.tokens / self.elements if self.elements else 0.0


def trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def make_setup(corpus: Corpus, tokenizer, seed: int, lr: float, batch_tokens: int, buckets, workdir: Path,
               hidden: int = 256, layers: int = 4) -> Setup:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=corpus.vocab_size, hidden_size=hidden, intermediate_size=3 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=max(buckets), tie_word_embeddings=True, use_cache=False,
                         bos_token_id=None, eos_token_id=corpus.eos_id, pad_token_id=corpus.pad_id)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    init = {k: v.clone() for k, v in LlamaForCausalLM(config).state_dict().items()}
    return Setup(config, init, tokenizer, seed, lr, 0.1, batch_tokens, tuple(buckets), workdir)


def fresh_model(setup: Setup):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(setup.config)
    model.load_state_dict(setup.init_state)
    model.config.use_cache = False  # packed/flattened batches are only isolated without a cache
    return model


class RssSampler:
    """Peak resident memory while a block runs, relative to just before it (ru_maxrss cannot
    give this: it is one high-water mark for the whole process)."""

    def __init__(self, interval: float = 0.02):
        try:
            import psutil
        except ImportError:
            self._proc = None
        else:
            self._proc = psutil.Process()
        self.interval, self.base, self.peak = interval, 0, 0
        self._stop = threading.Event()

    def __enter__(self):
        gc.collect()
        _release_free_heap()
        if self._proc:
            self.base = self.peak = self._proc.memory_info().rss
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        if self._proc:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def delta_mb(self) -> float | None:
        return (self.peak - self.base) / 2**20 if self._proc else None


def _release_free_heap() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise), so the next variant's RSS
    delta measures its own allocations instead of reusing the previous variant's pages."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the delta is just less tight
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class CountingCollator:
    """Wraps a trainer's collator to count real tokens and tensor elements actually batched."""

    def __init__(self, inner, pad_id: int):
        self.inner, self.pad_id = inner, pad_id
        self.tokens = self.elements = self.batches = 0

    def __call__(self, features):
        batch = self.inner(features)
        ids = batch["input_ids"]
        self.tokens += int((ids != self.pad_id).sum())
        self.elements += ids.numel()
        self.batches += 1
        return batch


def run_variant(key: str, setup: Setup, corpus: Corpus):
    runners = {"a": _run_padded, "b": _run_flattening, "c": _run_grouped, "d": _run_trl, "f": _run_ours}
    run, model = runners[key](setup, corpus)
    run.variant = key
    return run, model


# --- HF Trainer baselines ---------------------------------------------------------------------

def _doc_batch_size(setup: Setup, corpus: Corpus) -> int:
    """Documents per batch so a step holds about `batch_tokens` real tokens, like the packed paths."""
    mean = corpus.train_tokens / len(corpus.train)
    return max(1, round(setup.batch_tokens / mean))


def _common_args(setup: Setup, out: str, batch_size: int) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=1,
                learning_rate=setup.lr, lr_scheduler_type="linear", warmup_steps=setup.warmup_ratio,
                weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=setup.seed,
                data_seed=setup.seed, save_strategy="no", logging_strategy="no", eval_strategy="no",
                report_to="none", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)


def _doc_dataset(setup: Setup, corpus: Corpus):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [d.ids[:setup.max_len] for d in corpus.train]})


def _hf_trainer(setup: Setup, corpus: Corpus, collator, **args):
    from transformers import Trainer, TrainingArguments

    def build(model, out):
        targs = TrainingArguments(**_common_args(setup, out, _doc_batch_size(setup, corpus)), **args)
        return Trainer(model=model, args=targs, train_dataset=_doc_dataset(setup, corpus), data_collator=collator)

    return _train_with_trainer(setup, build)


def _run_padded(setup: Setup, corpus: Corpus):
    from transformers import DataCollatorForLanguageModeling

    return _hf_trainer(setup, corpus, DataCollatorForLanguageModeling(setup.tokenizer, mlm=False))


def _run_flattening(setup: Setup, corpus: Corpus):
    from transformers import DataCollatorWithFlattening

    return _hf_trainer(setup, corpus, DataCollatorWithFlattening())


def _run_grouped(setup: Setup, corpus: Corpus):
    from transformers import DataCollatorForLanguageModeling

    # transformers 5 spells `group_by_length=True` as train_sampling_strategy="group_by_length"
    return _hf_trainer(setup, corpus, DataCollatorForLanguageModeling(setup.tokenizer, mlm=False),
                       train_sampling_strategy="group_by_length")


def _run_trl(setup: Setup, corpus: Corpus):
    from trl import SFTConfig, SFTTrainer

    def build(model, out):
        # SFTConfig defaults bf16=True and gradient_checkpointing=True; the others run neither.
        args = SFTConfig(**_common_args(setup, out, max(1, setup.batch_tokens // setup.max_len)),
                         packing=True, max_length=setup.max_len, bf16=False, gradient_checkpointing=False)
        # Pre-tokenized ids (SFTTrainer skips its own tokenization): the same tokens as the others.
        return SFTTrainer(model=model, args=args, train_dataset=_doc_dataset(setup, corpus),
                          processing_class=setup.tokenizer)

    return _train_with_trainer(setup, build)


def _train_with_trainer(setup: Setup, build):
    from transformers.trainer_callback import PrinterCallback

    model = fresh_model(setup)
    with tempfile.TemporaryDirectory(dir=setup.workdir) as out:
        t0 = time.perf_counter()
        trainer = build(model, out)
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
        counter = CountingCollator(trainer.data_collator, setup.tokenizer.pad_token_id)
        trainer.data_collator = counter
        prep = time.perf_counter() - t0
        with RssSampler() as rss:
            t0 = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - t0
    run = Run("", counter.tokens, counter.elements, wall, trainer.state.global_step, prep,
              rss.delta_mb, maxrss_mb())
    return run, trainer.model


# --- ours ---------------------------------------------------------------------------------------

def packed_dataset(setup: Setup, corpus: Corpus, out: Path):
    """What the mix stage would write: sampled segments, bucketed best-fit packing, saved rows."""
    from datasets import load_from_disk

    from domaintune.mix.sampling import draw_stream
    from domaintune.mix.stage import _save_rows
    from domaintune.packing import pack

    draw = draw_stream(corpus.train, 0, corpus.train_tokens, setup.max_len, 1, setup.seed)
    rows = pack(draw.segments, list(setup.buckets), setup.seed)
    _save_rows(rows, out)
    return load_from_disk(str(out))


def loop_settings(setup: Setup, dataset):
    """LoopSettings for one epoch; built by field name, so optional fields added to it later keep
    their defaults (the loop's own logging/eval extras stay off)."""
    from domaintune.training.loop import LoopSettings, steps_per_epoch

    steps = steps_per_epoch(list(dataset["bucket"]), list(dataset["length"]), 1, setup.batch_tokens, 1)
    values = dict(batch_size=1, batch_tokens=setup.batch_tokens, grad_accum=1, total_steps=steps, lr=setup.lr,
                  weight_decay=0.0, warmup_ratio=setup.warmup_ratio, scheduler="linear", max_grad_norm=1.0,
                  log_every=10**9, eval_every=0, seed=setup.seed, stream_names=("bench",),
                  pad_id=setup.tokenizer.pad_token_id)
    required = [f.name for f in fields(LoopSettings) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise RuntimeError(f"bench/_variants.py: LoopSettings has new required fields {missing}; add values")
    return LoopSettings(**{f.name: values[f.name] for f in fields(LoopSettings) if f.name in values})


def _run_ours(setup: Setup, corpus: Corpus):
    from accelerate import Accelerator

    from domaintune.training.loop import train_loop

    model = fresh_model(setup)
    with tempfile.TemporaryDirectory(dir=setup.workdir) as out:
        t0 = time.perf_counter()
        dataset = packed_dataset(setup, corpus, Path(out) / "packed")
        settings = loop_settings(setup, dataset)
        accelerator = Accelerator(cpu=True)
        prep = time.perf_counter() - t0
        with RssSampler() as rss:
            t0 = time.perf_counter()
            summary = train_loop(model, dataset, settings, accelerator, lambda rec: None)
            wall = time.perf_counter() - t0
    tokens = summary["tokens"]
    elements = round(tokens / (1 - summary["batch_padding_fraction"]))
    run = Run("", tokens, elements, wall, settings.total_steps, prep, rss.delta_mb, maxrss_mb(),
              {"loop_step_time_s": summary["train_time_s"], "rows": len(dataset)})
    return run, accelerator.unwrap_model(model)
