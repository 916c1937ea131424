"""CPU engine: iteration-level (Orca-style) continuous batching on a transformers model.

One worker thread owns the model. Each loop iteration it (1) drops cancelled sequences,
(2) admits waiting requests into free slots, and (3) runs ONE forward over every running
sequence's next token plus up to `prefill_chunk_tokens` tokens of waiting prompts, packed
without padding (ragged.py): on a CPU the decode and the prefill each pay a full pass over the
weights, so fusing them saves that pass whenever a prompt is waiting. A prompt that starts like a
recent one of the same tenant reuses that prefix's KV (prefix_cache.py). New sequences join the
batch and finished ones leave it between steps, so a short request never waits for a long one.
Models that take no custom attention function run the same loop as two forwards: a padded
prefill (prompts that arrived together in one forward, long ones in chunks), then a decode step.

Why our own scheduler rather than transformers' ContinuousBatchingManager: the manager takes one
GenerationConfig for all requests (no per-request seed, temperature or stop), and its paged
attention path is tuned for GPUs; bench/serve_throughput.py measures it as a named baseline.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

from domaintune.decode_batch import DecodeBatch, SequenceKV
from domaintune.errors import ModelError
from domaintune.serve.engine import ragged
from domaintune.serve.engine.base import EngineFailed, EngineStats, Event, GenRequest, QueueFull, Stream
from domaintune.serve.engine.constrained import GuideFactory
from domaintune.serve.engine.decoding import TextTracker, choose_token, make_generator
from domaintune.serve.engine.prefix_cache import PrefixCache

_TRIM_COLUMNS = 64  # drop all-padding leading columns of the decode batch once there are this many


@dataclass
class SchedulerLimits:
    max_running: int = 8
    max_waiting: int = 32
    prefill_chunk_tokens: int = 512
    # most prompts that START prefilling in one step while other rows decode (0: no cap; the token budget
    # still applies). Prompts started together finish together when their output lengths match and their
    # clients come back together; a cap spreads them over steps. An idle batch starts every waiting prompt at
    # once: no decode is there to protect. Measured (bench/README.md): no effect beyond noise at 8 clients here.
    prefill_prompts_per_step: int = 0
    threads: int | None = None
    prefix_cache_bytes: int = 0  # 0: no prefix caching


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
    reused: int = 0             # leading prompt tokens whose KV the prefix cache holds (before prefill starts)
    reused_layers: list | None = None
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
        self._prefixes = PrefixCache(limits.prefix_cache_bytes) if limits.prefix_cache_bytes > 0 else None
        # decodes and prompt chunks in one forward (ragged.py) where the model takes a custom attention function;
        # otherwise a padded prefill forward and a decode forward per step
        self.fused = ragged.install(self.model)
        self._placeholder_mask = ragged.placeholder_mask()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ called on the event loop
    def start(self) -> None:
        self._stopping = False
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
        prefixes = self._prefixes
        return EngineStats(running=len(self._prefilling) + self._batch.live(), waiting=len(self._waiting),
                           peak_running=s.peak_running, peak_prefill=s.peak_prefill, steps=s.steps,
                           prefix_hit_tokens=prefixes.hit_tokens if prefixes else 0,
                           prefix_lookup_tokens=prefixes.looked_up if prefixes else 0)

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
                    if self.fused:
                        self._fused_step()
                    else:
                        self._prefill_step()
                        self._decode_step()
                except Exception as err:  # a model failure ends the affected sequences, not the server
                    self._fail_all(err)

    def _admit(self) -> None:
        with self._lock:
            admitted = []
            while (self._waiting and len(self._prefilling) + len(admitted) + self._batch.live()
                   < self.limits.max_running):
                admitted.append(self._waiting.popleft())
            self._prefilling.extend(admitted)
        if self._prefixes is not None:
            for seq in admitted:
                self._reuse_prefix(seq)

    def _reuse_prefix(self, seq: _Seq) -> None:
        """Note a prompt's longest cached prefix: its prefill (grouped or chunked) starts after it."""
        seq.reused, seq.reused_layers = self._prefixes.lookup(seq.req.tenant, seq.req.prompt_ids)

    def _remember_prompt(self, seq: _Seq, cache, row: int) -> None:
        if self._prefixes is not None:
            self._prefixes.store(seq.req.tenant, seq.req.prompt_ids,
                                 [(layer.keys[row:row + 1], layer.values[row:row + 1]) for layer in cache.layers])

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
        rows = [i for i, s in enumerate(self._batch.seqs) if s is not None and s.req.request_id not in gone]
        for seq in [s for s in self._batch.seqs if s is not None and s.req.request_id in gone]:
            self._retire(seq)
        self._batch.keep(rows)  # drops holes too

    def _fused_step(self) -> None:
        """One forward over every running row's next token and up to `prefill_chunk_tokens` prompt tokens of the
        waiting sequences, in arrival order (a long prompt is split over steps, so decodes never wait for it)."""
        import torch

        ids: list[int] = []
        positions: list[int] = []
        parts: list = []
        logit_at: list[int] = []  # flat positions whose next-token logits are needed
        rows = len(self._batch)
        mask = None
        if rows:
            step_ids, step_positions, mask = self._batch.step_inputs()
            ids += step_ids[:, 0].tolist()
            positions += step_positions[:, 0].tolist()
            parts.append(ragged.DecodePart(self._batch.cache.layers, mask))
            logit_at += range(rows)
        budget, chunks = self.limits.prefill_chunk_tokens, []
        starts = self._start_cap(self._batch.live())
        for seq in self._prefilling:
            if budget <= 0:
                break
            prompt = seq.req.prompt_ids
            if seq.cache is None:
                if starts == 0:
                    continue  # a prompt already started may still take the budget
                starts -= 1
                seq.cache = SequenceKV(self.model.config.num_hidden_layers, seq.reused_layers if seq.reused else None)
                seq.prefilled = seq.length = seq.reused
                seq.reused_layers = None
            end = min(len(prompt), seq.prefilled + budget)
            parts.append(ragged.PromptPart(seq.cache.layers, seq.prefilled, end - seq.prefilled))
            ids += prompt[seq.prefilled:end]
            positions += range(seq.prefilled, end)
            budget -= end - seq.prefilled
            chunks.append((seq, end))
            if end == len(prompt):
                logit_at.append(len(ids) - 1)
        with ragged.planned(ragged.StepPlan(parts)):
            out = self.model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([positions]),
                             attention_mask=self._placeholder_mask, use_cache=False,
                             logits_to_keep=torch.tensor(logit_at, dtype=torch.long))
        logits = out.logits[0]
        if rows:
            self._batch.mask = mask
            self._stats.steps += 1
            self._after_decode(logits[:rows], holes=True)
        done = []
        for seq, end in chunks:
            seq.prefilled = seq.length = end
            if end == len(seq.req.prompt_ids):
                done.append(seq)
        if done:
            for seq in done:
                self._prefilling.remove(seq)
                self._remember_prompt(seq, seq.cache, 0)
            self._stats.peak_prefill = max(self._stats.peak_prefill, len(done))
            self._first_tokens(logits[rows:], self._join(done))
        self._settle()
        self._stats.peak_running = max(self._stats.peak_running, self._batch.live())

    def _join(self, done: list[_Seq]) -> list[int]:
        """Put prefilled sequences into the batch: into holes first (in place), the rest appended (one copy);
        returns their rows, in `done` order."""
        import torch

        holes, rows = self._batch.holes(), []
        for seq in done[:len(holes)]:
            self._batch.replace(holes[len(rows)], seq, seq.cache, torch.ones(1, seq.length, dtype=torch.long))
            rows.append(holes[len(rows)])
        rest = done[len(holes):]
        first_row = len(self._batch)
        self._batch.extend([([seq], seq.cache, torch.ones(1, seq.length, dtype=torch.long)) for seq in rest])
        for seq in done:
            seq.cache = None
        return rows + list(range(first_row, first_row + len(rest)))

    def _settle(self) -> None:
        """Holes are kept only while a prompt may fill them soon (fused steps fill them; the two-forward path
        appends), otherwise they are dropped (a copy). Leading
        columns that are padding in every row (left by replaced rows) are dropped once there are enough."""
        if not self._batch.holes():
            if len(self._batch):
                self._batch.trim(_TRIM_COLUMNS)
            return
        with self._lock:
            incoming = bool(self._waiting)
        if not (self.fused and (incoming or self._prefilling)) or not self._batch.live():
            self._batch.keep([i for i, s in enumerate(self._batch.seqs) if s is not None])
        elif len(self._batch):
            self._batch.trim(_TRIM_COLUMNS)

    def _start_cap(self, decoding_rows: int) -> int:
        """How many prompts may start prefilling this step (see SchedulerLimits.prefill_prompts_per_step)."""
        cap = self.limits.prefill_prompts_per_step
        return cap if cap and decoding_rows else len(self._prefilling)

    def _prefill_step(self) -> None:
        """Short prompts that arrived together are prefilled in one padded forward; the rest one at a time,
        in chunks, so one long prompt holds the decodes up for at most one chunk per step."""
        budget = self.limits.prefill_chunk_tokens
        starts = self._start_cap(self._batch.live())
        group = self._prefill_group(budget)[:starts]
        if len(group) > 1:
            budget -= self._prefill_together(group)  # removes them from self._prefilling
            starts -= len(group)
        for seq in list(self._prefilling):
            if budget <= 0:
                break
            if seq.cache is None:
                if starts == 0:
                    continue
                starts -= 1
            budget -= self._prefill_chunk(seq, budget)
        self._stats.peak_running = max(self._stats.peak_running, len(self._batch))

    def _prefill_group(self, budget: int) -> list[_Seq]:
        """Unstarted prompts, in arrival order, while rows x longest part still to prefill (the padded compute)
        fits the budget."""
        group: list[_Seq] = []
        longest = 0
        for seq in self._prefilling:
            n = len(seq.req.prompt_ids) - seq.reused
            if seq.prefilled == 0 and (len(group) + 1) * max(longest, n) <= budget:
                group.append(seq)
                longest = max(longest, n)
        return group

    def _prefill_together(self, group: list[_Seq]) -> int:
        """One padded forward over the group's prompts; returns the tokens of compute it took (rows x width).

        Row layout, with no holes: [left padding][cached prefix][the rest of the prompt]. The forward's input
        width is the longest uncached rest; a row whose rest is shorter recomputes the end of its cached prefix
        instead of leaving padding in the middle, so every row stays left-padded like a plain prefill."""
        import torch
        from transformers import DynamicCache

        width = max(len(s.req.prompt_ids) - s.reused for s in group)
        starts = [max(0, len(s.req.prompt_ids) - width) for s in group]  # <= s.reused by the choice of width
        cached = max(starts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, mask, positions = [], [], []
        for seq, start in zip(group, starts, strict=True):
            rest = seq.req.prompt_ids[start:]
            ids.append([pad] * (width - len(rest)) + rest)
            mask.append([0] * (cached - start) + [1] * start + [0] * (width - len(rest)) + [1] * len(rest))
            positions.append([0] * (width - len(rest)) + list(range(start, len(seq.req.prompt_ids))))
        cache = DynamicCache(ddp_cache_data=self._group_prefix(group, starts, cached)) if cached else DynamicCache()
        mask = torch.tensor(mask)
        out = self.model(input_ids=torch.tensor(ids), attention_mask=mask, position_ids=torch.tensor(positions),
                         cache=cache, use_cache=True, logits_to_keep=1)
        for row, seq in enumerate(group):
            seq.reused_layers = None
            self._prefilling.remove(seq)
            seq.prefilled = seq.length = len(seq.req.prompt_ids)
            self._remember_prompt(seq, cache, row)  # row i's prompt is its last len(prompt) columns
        self._stats.peak_prefill = max(self._stats.peak_prefill, len(group))
        first_row = len(self._batch)
        self._batch.add(group, cache, mask)
        self._first_tokens(out.logits[:, -1], list(range(first_row, len(self._batch))))
        self._settle()
        return len(group) * width

    @staticmethod
    def _group_prefix(group: list[_Seq], starts: list[int], cached: int) -> list:
        """Per layer, the rows' cached KV for their first `start` tokens, left-padded to `cached` columns."""
        import torch

        from domaintune.decode_batch import _left_pad

        template = next(s.reused_layers for s in group if s.reused_layers is not None)
        layers = []
        for index, (keys, _) in enumerate(template):
            rows_k, rows_v = [], []
            for seq, start in zip(group, starts, strict=True):
                if start:
                    k, v = seq.reused_layers[index]
                    rows_k.append(_left_pad(k[:, :, :start], cached))
                    rows_v.append(_left_pad(v[:, :, :start], cached))
                else:
                    empty = keys.new_zeros(1, keys.shape[1], cached, keys.shape[3])
                    rows_k.append(empty)
                    rows_v.append(empty)
            layers.append((torch.cat(rows_k), torch.cat(rows_v)))
        return layers

    def _prefill_chunk(self, seq: _Seq, budget: int) -> int:
        """Prefill the next chunk of one prompt; returns the tokens used."""
        import torch
        from transformers import DynamicCache

        ids = seq.req.prompt_ids
        if seq.cache is None:
            seq.cache = DynamicCache(ddp_cache_data=seq.reused_layers) if seq.reused else DynamicCache()
            seq.prefilled = seq.length = seq.reused
            seq.reused_layers = None
        end = min(len(ids), seq.prefilled + budget)
        logits = self._forward_prompt(seq, ids[seq.prefilled:end])
        used, seq.prefilled, seq.length = end - seq.prefilled, end, end
        if end == len(ids):
            self._prefilling.remove(seq)
            self._remember_prompt(seq, seq.cache, 0)
            first_row = len(self._batch)
            self._batch.add([seq], seq.cache, torch.ones(1, end, dtype=torch.long))
            seq.cache = None
            self._first_tokens(logits.unsqueeze(0), [first_row])
            self._settle()
        return used

    def _first_tokens(self, logits, rows: list[int]) -> None:
        """Sample each new row's first token (logits in `rows` order); rows that finish at once (EOS,
        max_tokens=1) become holes."""
        for offset, row in enumerate(rows):
            seq = self._batch.seqs[row]
            token = self._choose(seq, logits[offset])
            if self._emit(seq, token):
                self._retire(seq)
                self._batch.vacate(row)
            else:
                seq.pending = token

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
        self._after_decode(out.logits[:, -1], holes=False)

    def _after_decode(self, logits, holes: bool) -> None:
        """Each running row's next token from its logits row. A finished row becomes a hole for the next
        prompt to fill (`holes`, the fused path) or leaves the batch at once."""
        keep = []
        for row, seq in enumerate(self._batch.seqs):
            if seq is None:
                keep.append(row)
                continue
            seq.length += 1
            token = self._choose(seq, logits[row])
            if self._emit(seq, token):
                self._retire(seq)
                if holes:
                    self._batch.vacate(row)
                    keep.append(row)
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
        for seq in [*self._prefilling, *(s for s in self._batch.seqs if s is not None)]:
            seq.stream.put(failure)
            self._retire(seq)
        self._prefilling = []
        self._batch = DecodeBatch()
