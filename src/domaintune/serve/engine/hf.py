"""CPU engine: iteration-level (Orca-style) continuous batching on a transformers model.

One worker thread owns the model. Each loop iteration it (1) drops cancelled sequences,
(2) admits waiting requests into free slots, (3) prefills up to `prefill_chunk_tokens` prompt
tokens (short prompts that arrived together in one padded forward, others alone in chunks), and (4) runs one batched
decode step over every running sequence. New sequences join the batch and finished ones leave
it between steps, so a short request never waits for a long one.

Why our own scheduler rather than transformers' ContinuousBatchingManager: the manager takes one
GenerationConfig for all requests (no per-request seed, temperature or stop), and its paged
attention path is tuned for GPUs; bench/serve_throughput.py measures it as a named baseline.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

from domaintune.errors import ModelError
from domaintune.serve.engine.base import EngineFailed, EngineStats, Event, GenRequest, QueueFull, Stream
from domaintune.serve.engine.batch import DecodeBatch
from domaintune.serve.engine.constrained import GuideFactory
from domaintune.serve.engine.decoding import TextTracker, choose_token, make_generator


@dataclass
class SchedulerLimits:
    max_running: int = 8
    max_waiting: int = 32
    prefill_chunk_tokens: int = 512
    threads: int | None = None


@dataclass
class _Seq:
    req: GenRequest
    stream: Stream
    tracker: TextTracker
    generator: object
    cache: object = None        # this sequence's own cache while it is prefilled
    prefilled: int = 0
    length: int = 0             # tokens in the KV cache
    pending: int | None = None  # the last sampled token: the next decode step's input
    generated: int = 0
    guide: object = None        # constrained.SchemaGuide when the request has a json_schema


def eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                   getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids


def context_length(model, tokenizer) -> int:
    n = getattr(model.config, "max_position_embeddings", None) or 2048
    tok_max = getattr(tokenizer, "model_max_length", None)
    return min(n, tok_max) if isinstance(tok_max, int) and tok_max < 10**8 else n


def check_supported(model) -> None:
    """The decode batch left-pads full-attention KV caches; sliding-window or recurrent layers would need
    their own padding rules, so such models are refused here instead of answering wrongly."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    kinds = {type(layer).__name__ for layer in DynamicCache(config=model.config).layers}
    if kinds - {DynamicLayer.__name__}:
        raise ModelError(f"the cpu engine batches full-attention decoder models only; this model has "
                         f"{', '.join(sorted(kinds - {DynamicLayer.__name__}))} cache layers: serve it with "
                         f"serve.engine: vllm")


class HFEngine:
    def __init__(self, model, tokenizer, model_name: str, limits: SchedulerLimits):
        check_supported(model)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.context_length = context_length(model, tokenizer)
        self.limits = limits
        self._eos = eos_ids(model, tokenizer)
        self._guides = GuideFactory(tokenizer, max(model.config.vocab_size, len(tokenizer)))
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._waiting: deque[_Seq] = deque()
        self._cancelled: set[str] = set()
        self._inflight = 0
        self._prefilling: list[_Seq] = []
        self._batch = DecodeBatch()
        self._stats = EngineStats()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ called on the event loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="domaintune-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def ready(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, request: GenRequest) -> Stream:
        stream = Stream(request.request_id, asyncio.get_running_loop(), self._cancel)
        seq = _Seq(request, stream, TextTracker(self.tokenizer, request.stop), make_generator(request.seed))
        if request.json_schema is not None:  # compiled here, on the caller's side: a bad schema fails this call
            seq.guide = self._guides.guide(request.json_schema)
        with self._lock:
            if self._inflight >= self.limits.max_running + self.limits.max_waiting:
                raise QueueFull(f"{self._inflight} requests running or queued")
            self._inflight += 1
            self._waiting.append(seq)
        self._wake.set()
        return stream

    def stats(self) -> EngineStats:
        s = self._stats
        return EngineStats(running=len(self._prefilling) + len(self._batch), waiting=len(self._waiting),
                           peak_running=s.peak_running, peak_prefill=s.peak_prefill, steps=s.steps)

    def _cancel(self, request_id: str) -> None:
        with self._lock:
            self._cancelled.add(request_id)
        self._wake.set()

    # ------------------------------------------------------------------ the engine thread
    def _run(self) -> None:
        import torch

        if self.limits.threads:
            torch.set_num_threads(self.limits.threads)
        with torch.inference_mode():
            while not self._stopping:
                self._drop_cancelled()
                self._admit()
                if not self._prefilling and not len(self._batch):
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
                    continue
                try:
                    self._prefill_step()
                    self._decode_step()
                except Exception as err:  # a model failure ends the affected sequences, not the server
                    self._fail_all(err)

    def _admit(self) -> None:
        with self._lock:
            while self._waiting and len(self._prefilling) + len(self._batch) < self.limits.max_running:
                self._prefilling.append(self._waiting.popleft())

    def _drop_cancelled(self) -> None:
        with self._lock:
            gone, self._cancelled = self._cancelled, set()
            if not gone:
                return
            kept = [s for s in self._waiting if s.req.request_id not in gone]
            self._inflight -= len(self._waiting) - len(kept)
            self._waiting = deque(kept)
        for seq in [s for s in self._prefilling if s.req.request_id in gone]:
            self._prefilling.remove(seq)
            self._retire(seq)
        rows = [i for i, s in enumerate(self._batch.seqs) if s.req.request_id not in gone]
        for seq in [s for s in self._batch.seqs if s.req.request_id in gone]:
            self._retire(seq)
        self._batch.keep(rows)

    def _prefill_step(self) -> None:
        """Short prompts that arrived together are prefilled in one padded forward; the rest one at a time,
        in chunks, so one long prompt holds the decodes up for at most one chunk per step."""
        budget = self.limits.prefill_chunk_tokens
        group = self._prefill_group(budget)
        if len(group) > 1:
            self._prefill_together(group)  # removes them from self._prefilling
            budget -= len(group) * max(len(s.req.prompt_ids) for s in group)
        for seq in list(self._prefilling):
            if budget <= 0:
                break
            budget -= self._prefill_chunk(seq, budget)
        self._stats.peak_running = max(self._stats.peak_running, len(self._batch))

    def _prefill_group(self, budget: int) -> list[_Seq]:
        """Unstarted prompts, in arrival order, while rows x longest prompt (the padded compute) fits the budget."""
        group: list[_Seq] = []
        longest = 0
        for seq in self._prefilling:
            n = len(seq.req.prompt_ids)
            if seq.prefilled == 0 and (len(group) + 1) * max(longest, n) <= budget:
                group.append(seq)
                longest = max(longest, n)
        return group

    def _prefill_together(self, group: list[_Seq]) -> None:
        import torch
        from transformers import DynamicCache

        width = max(len(s.req.prompt_ids) for s in group)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(s.req.prompt_ids)) + s.req.prompt_ids for s in group])
        mask = torch.tensor([[0] * (width - len(s.req.prompt_ids)) + [1] * len(s.req.prompt_ids) for s in group])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                         logits_to_keep=1)
        for seq in group:
            self._prefilling.remove(seq)
            seq.prefilled = seq.length = len(seq.req.prompt_ids)
        self._stats.peak_prefill = max(self._stats.peak_prefill, len(group))
        first_row = len(self._batch)
        self._batch.add(group, cache, mask)
        self._first_tokens(out.logits[:, -1], first_row)

    def _prefill_chunk(self, seq: _Seq, budget: int) -> int:
        """Prefill the next chunk of one prompt; returns the tokens used."""
        import torch
        from transformers import DynamicCache

        ids = seq.req.prompt_ids
        end = min(len(ids), seq.prefilled + budget)
        seq.cache = seq.cache if seq.cache is not None else DynamicCache()
        logits = self._forward_prompt(seq, ids[seq.prefilled:end])
        used, seq.prefilled, seq.length = end - seq.prefilled, end, end
        if end == len(ids):
            self._prefilling.remove(seq)
            first_row = len(self._batch)
            self._batch.add([seq], seq.cache, torch.ones(1, end, dtype=torch.long))
            seq.cache = None
            self._first_tokens(logits.unsqueeze(0), first_row)
        return used

    def _first_tokens(self, logits, first_row: int) -> None:
        """Sample each new row's first token; rows that finish at once (EOS, max_tokens=1) leave the batch."""
        keep = list(range(first_row))
        for offset, seq in enumerate(self._batch.seqs[first_row:]):
            token = self._choose(seq, logits[offset])
            if self._emit(seq, token):
                self._retire(seq)
            else:
                seq.pending = token
                keep.append(first_row + offset)
        self._batch.keep(keep)

    def _forward_prompt(self, seq: _Seq, chunk: list[int]):
        import torch

        ids = torch.tensor([chunk], dtype=torch.long)
        positions = torch.arange(seq.prefilled, seq.prefilled + len(chunk)).unsqueeze(0)
        mask = torch.ones(1, seq.prefilled + len(chunk), dtype=torch.long)
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask,
                         cache=seq.cache, use_cache=True, logits_to_keep=1)  # the cache grows in place
        return out.logits[0, -1]

    def _decode_step(self) -> None:
        if not len(self._batch):
            return
        ids, positions, mask = self._batch.step_inputs()
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask,
                         cache=self._batch.cache, use_cache=True)
        self._batch.mask = mask
        self._stats.steps += 1
        keep = []
        for row, seq in enumerate(self._batch.seqs):
            seq.length += 1
            token = self._choose(seq, out.logits[row, -1])
            if self._emit(seq, token):
                self._retire(seq)
            else:
                seq.pending = token
                keep.append(row)
        self._batch.keep(keep)

    def _choose(self, seq: _Seq, logits) -> int:
        """The next token of one row; a constrained row samples only among tokens its schema allows."""
        if seq.guide is None:
            return choose_token(logits, seq.req.temperature, seq.req.top_p, seq.generator)
        token = choose_token(seq.guide.mask(logits), seq.req.temperature, seq.req.top_p, seq.generator)
        seq.guide.advance(token)
        return token

    def _emit(self, seq: _Seq, token: int) -> bool:
        """Send the text `token` adds; True when the sequence is finished (EOS, stop string, or length)."""
        seq.generated += 1
        reason = None
        if token in self._eos:
            text, reason = seq.tracker.flush(), "stop"
        else:
            text = seq.tracker.push(token)
            if seq.tracker.stopped:
                reason = "stop"
            elif seq.guide is not None and (seq.guide.complete or seq.guide.failed):
                text, reason = text + seq.tracker.flush(), "stop"  # the constrained value is whole
            elif seq.generated >= seq.req.max_tokens:
                text, reason = text + seq.tracker.flush(), "length"
        if text or reason:
            seq.stream.put(Event(text=text, finish_reason=reason, prompt_tokens=len(seq.req.prompt_ids),
                                 completion_tokens=seq.generated))
        return reason is not None

    def _retire(self, seq: _Seq) -> None:
        seq.cache = None
        with self._lock:
            self._inflight -= 1

    def _fail_all(self, err: Exception) -> None:
        failure = EngineFailed(f"generation failed: {type(err).__name__}: {err}")
        for seq in [*self._prefilling, *self._batch.seqs]:
            seq.stream.put(failure)
            self._retire(seq)
        self._prefilling = []
        self._batch = DecodeBatch()
