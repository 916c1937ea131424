"""Teachers: a local Hugging Face model (continuous batching, threads pinned) or any
OpenAI-compatible endpoint, including `domaintune serve` (retries, timeout, client-side rate limit).

Both answer `generate(units, seed, sampling) -> [{"text", "new_tokens"}]`; a unit's prompt is chat
messages, or a raw prefix (`unit.raw`, for magpie) that the teacher continues without a template.
"""

from __future__ import annotations

import os
import time
from typing import Any

from domaintune.errors import ConfigError, ModelError
from domaintune.synth.journal import Unit

SENTINEL = "\x00DOMAINTUNE_QUERY\x00"


def sampling_dict(sampling) -> dict[str, Any]:
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens}


class NucleusSampler:
    """Temperature + top-p as one logits processor, the same distribution as transformers'
    TemperatureLogitsWarper + TopPLogitsWarper but without sorting the whole vocabulary at every
    step: the nucleus almost always lies in the `candidates` most likely tokens (their mass reaches
    `top_p`), so only those are sorted (`topk`); a row whose nucleus is wider falls back to a full
    sort. At batch 16 over SmolLM2's 49k vocabulary the full sort cost more than the model step."""

    def __init__(self, temperature: float, top_p: float, candidates: int = 256):
        self.temperature, self.top_p, self.candidates = temperature, top_p, candidates

    def _nucleus(self, scores):
        """(top scores, their token ids, kept mask, rows whose nucleus is wider than the candidates)."""
        k = min(self.candidates, scores.shape[-1])
        top, idx = scores.topk(k, dim=-1)  # sorted, descending
        probs = scores.softmax(dim=-1).gather(-1, idx)
        cum = probs.cumsum(dim=-1)
        # keep a token while the mass ranked above it is below top_p (the same rule as
        # TopPLogitsWarper's "cumulative ascending mass <= 1 - top_p is removed"); the first always stays
        keep = (cum - probs) < self.top_p
        keep[:, 0] = True
        return top, idx, keep, cum[:, -1] < self.top_p

    def __call__(self, input_ids, scores):
        import torch

        scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        top, idx, keep, wide = self._nucleus(scores)
        out = torch.full_like(scores, float("-inf"))
        if bool(wide.any()):  # nucleus not inside the candidates: full sort for those rows
            top_all, idx_all = scores[wide].sort(dim=-1, descending=True)
            cum_all = top_all.softmax(dim=-1).cumsum(dim=-1)
            keep_all = (cum_all - top_all.softmax(dim=-1)) < self.top_p
            keep_all[:, 0] = True
            out[wide] = torch.full_like(top_all, float("-inf")).scatter(
                -1, idx_all, top_all.masked_fill(~keep_all, float("-inf")))
        narrow = ~wide
        out[narrow] = out[narrow].scatter(-1, idx[narrow], top[narrow].masked_fill(~keep[narrow], float("-inf")))
        return out

    def sample(self, logits, generator):
        """One token per row from the filtered distribution. Rows whose nucleus lies in the candidates
        draw among those (`multinomial` over 49k tokens per row was a tenth of a batch-16 step)."""
        import torch

        scores = logits / self.temperature
        if self.top_p >= 1.0:
            return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)
        top, idx, keep, wide = self._nucleus(scores)
        if bool(wide.any()):
            return torch.multinomial(self(None, logits).softmax(dim=-1), 1, generator=generator).squeeze(1)
        pick = torch.multinomial(top.masked_fill(~keep, float("-inf")).softmax(dim=-1), 1, generator=generator)
        return idx.gather(-1, pick).squeeze(1)


class _Row:
    """One prompt being decoded (what serve's DecodeBatch needs: `pending`, the token to feed next, and
    `length`, its position)."""

    def __init__(self, index: int, pending: int, length: int):
        self.index, self.pending, self.length = index, pending, length


class ContextCache:
    """KV (and last-position logits) of prompt prefixes that end at a context boundary, least recently
    used evicted past `max_bytes`. Keyed by the prefix's tokens *and* the boundaries inside it: a
    prefix's KV is always computed by the same chain of forward passes (one per segment), so a
    cached entry holds exactly the numbers a fresh computation would, and a run's output does not
    depend on what an earlier batch left here (a resumed run gives the same bytes)."""

    def __init__(self, max_bytes: int):
        from collections import OrderedDict

        self.max_bytes, self.nbytes = max_bytes, 0
        self._entries: OrderedDict = OrderedDict()
        self.hit_tokens = 0

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key, layers, logits) -> None:
        nbytes = sum(k.numel() * k.element_size() * 2 for k, _ in layers)
        if key in self._entries or nbytes > self.max_bytes:
            return
        self._entries[key] = (layers, logits, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            _, (_, _, old) = self._entries.popitem(last=False)
            self.nbytes -= old


class LocalTeacher:
    """A causal LM run in-process with continuous batching: at most `batch_size` rows decode together,
    a row that stops leaves and the next prompt of the call takes its slot (serve's DecodeBatch: one
    left-padded KV cache written in place). Each prompt is prefilled on its own, no padding compute,
    in segments that end at its context boundaries (the chat template's header, the unit's
    `context`); the KV at a boundary is kept in a ContextCache, so prompts sharing a header or a
    document chunk (doc_qa's questions and answers of one chunk) compute it once."""

    def __init__(self, model, tokenizer, name: str, threads: int = 1, batch_size: int = 16,
                 context_cache_mb: int = 512):
        import torch

        torch.set_num_threads(threads)
        self.model, self.tokenizer, self.id = model.eval(), tokenizer, f"local:{name}"
        self.batch_size = batch_size
        self.contexts = ContextCache(context_cache_mb * 2 ** 20)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def load(cls, path: str, threads: int, batch_size: int = 16, context_cache_mb: int = 512) -> LocalTeacher:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)  # never trust_remote_code; safetensors only
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
        return cls(model, tok, os.path.basename(os.path.normpath(str(path))), threads, batch_size, context_cache_mb)

    def render(self, unit: Unit) -> str:
        if unit.raw:
            return unit.prompt
        if not self.tokenizer.chat_template:
            return "\n".join(f"{m['role']}: {m['content']}" for m in unit.prompt) + "\nassistant:"
        return self.tokenizer.apply_chat_template(unit.prompt, tokenize=False, add_generation_prompt=True)

    def pre_query_prefix(self, system_prompt: str | None) -> str:
        """MAGPIE's pre-query template, derived from the chat template itself: render a user turn
        holding a sentinel and cut before it. Templates that inject a default system turn (SmolLM2,
        Qwen2.5) keep it; a domain `system_prompt` replaces it."""
        if not self.tokenizer.chat_template:
            raise ConfigError(["synth.magpie: the teacher's tokenizer has no chat template, so there is no "
                               "pre-query prefix to continue; use a chat model as teacher"])
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
        text = self.tokenizer.apply_chat_template(messages + [{"role": "user", "content": SENTINEL}], tokenize=False)
        if SENTINEL not in text:
            raise ConfigError(["synth.magpie: the chat template does not render the user message verbatim"])
        return text[: text.index(SENTINEL)]

    def generate(self, units: list[Unit], seed: int, sampling) -> list[dict[str, Any]]:
        """Every unit's completion; the same units, seed and sampling give the same bytes. Why not
        `model.generate` on a left-padded batch: on one CPU thread its prefill pays for every pad
        token and for prefixes the prompts share, its top-p sorts the whole vocabulary for every row
        at every step, and a batch decodes until its longest row stops, with finished rows' slots
        idle (bench/synth_throughput.py measures the difference)."""
        import torch

        plans = [self._plan(u) for u in units]
        if any(not ids for ids, _ in plans):
            raise ModelError("synth: an empty prompt reached the local teacher (a template rendered to nothing)")
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            rows = self._run(plans, sampling, generator)
        return [{"text": self.tokenizer.decode(ids, skip_special_tokens=True).strip(), "new_tokens": len(ids)}
                for ids in rows]

    def _plan(self, unit: Unit) -> tuple[list[int], list[int]]:
        """The prompt's tokens and its segment ends (token counts): after the chat template's header
        (everything before the last user message) and after the unit's `context`, for raw prompts
        (magpie's shared prefix) the whole prompt."""
        text = self.render(unit)
        if not getattr(self.tokenizer, "is_fast", False):
            return self.tokenizer(text, add_special_tokens=False)["input_ids"], []
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, ends = enc["input_ids"], [end for _, end in enc["offset_mapping"]]
        if unit.raw:
            cuts = [len(text)]
        else:
            content = unit.prompt[-1]["content"]
            start = text.rfind(content) if content else -1
            cuts = [start] if start > 0 else []
            if start >= 0 and unit.context and content.startswith(unit.context):
                cuts.append(start + len(unit.context))
        splits = sorted({sum(1 for e in ends if e <= c) for c in cuts} - {0})
        return ids, splits

    def _stop_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids |= set(configured) if isinstance(configured, list) else {configured}
        return {i for i in ids if i is not None}

    def _prefill(self, ids: list[int], splits: list[int]):
        """(cache, last-position logits) of one prompt, segment by segment; segments that end at a
        boundary come from (or go to) the context cache."""
        import torch
        from transformers import DynamicCache

        keys = [(tuple(ids[:s]), tuple(splits[: j + 1])) for j, s in enumerate(splits)]
        done, layers, logits = 0, None, None
        for j in range(len(splits) - 1, -1, -1):
            hit = self.contexts.get(keys[j])
            if hit is not None:
                layers, logits, _ = hit
                done = splits[j]
                self.contexts.hit_tokens += done
                break
        cache = DynamicCache(layers, config=self.model.config) if layers else DynamicCache(config=self.model.config)
        for end in [s for s in splits if s > done] + ([len(ids)] if done < len(ids) else []):
            out = self.model(input_ids=torch.tensor([ids[done:end]]), cache=cache, use_cache=True, logits_to_keep=1,
                             position_ids=torch.arange(done, end).unsqueeze(0),
                             attention_mask=torch.ones(1, end, dtype=torch.long))
            cache, logits, done = out.cache if getattr(out, "cache", None) else out.past_key_values, \
                out.logits[:, -1].float(), end
            if end in splits:
                self.contexts.put(keys[splits.index(end)], [(k, v) for k, v, *_ in cache], logits)
        return cache, logits

    def _run(self, plans, sampling, generator) -> list[list[int]]:
        """Continuous batching: fill the slots with prompts in order, decode one step for every row,
        and give the slot of a row that stops (a stop token or max_new_tokens) to the next prompt."""
        import torch

        from domaintune.decode_batch import DecodeBatch

        stop, limit = self._stop_ids(), sampling.max_new_tokens
        sampler = NucleusSampler(sampling.temperature, sampling.top_p) if sampling.temperature > 0 else None
        rows: list[list[int]] = [[] for _ in plans]
        batch, queue = DecodeBatch(), list(range(len(plans)))[::-1]

        def choose(logits) -> list[int]:
            return (logits.argmax(dim=-1) if sampler is None else sampler.sample(logits, generator)).tolist()

        def alive(row: int, token: int) -> bool:  # record the token; False when the row is finished
            if token in stop:
                return False
            rows[row].append(token)
            return len(rows[row]) < limit

        def admit():  # the next prompt that does not finish on its first token: (row, its cache, mask)
            while queue and limit > 0:
                i = queue.pop()
                ids, splits = plans[i]
                cache, logits = self._prefill(ids, splits)
                token = choose(logits)[0]
                if alive(i, token):
                    return _Row(i, token, len(ids)), cache, torch.ones(1, len(ids), dtype=torch.long)
            return None

        while len(batch) < self.batch_size and (new := admit()):
            batch.add([new[0]], new[1], new[2])
        while len(batch):
            input_ids, positions, mask = batch.step_inputs()
            out = self.model(input_ids=input_ids, position_ids=positions, attention_mask=mask, cache=batch.cache,
                             use_cache=True, logits_to_keep=1)  # the batch's cache grows in place
            batch.mask = mask
            keep = []
            for j, (seq, token) in enumerate(zip(batch.seqs, choose(out.logits[:, -1].float()), strict=True)):
                seq.length += 1
                if alive(seq.index, token):
                    seq.pending = token
                    keep.append(j)
                elif new := admit():
                    batch.replace(j, *new)  # in place; the finished row's KV is masked out
                    keep.append(j)
            batch.keep(keep)
            if len(batch):
                batch.trim(_TRIM_COLUMNS)
        return rows


_TRIM_COLUMNS = 64  # drop all-padding leading columns of the decode batch once there are this many


class EndpointTeacher:
    """An OpenAI-compatible server. Chat prompts go to /chat/completions, raw prefixes to
    /completions; 429, 5xx and timeouts are retried with exponential backoff."""

    def __init__(self, url: str, model: str, *, api_key: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 3, requests_per_s: float | None = None, completions: bool = True,
                 transport=None):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport)
        self.model, self.id, self.completions = model, f"openai:{url.rstrip('/')}#{model}", completions
        self.max_retries, self.min_interval = max_retries, (1.0 / requests_per_s if requests_per_s else 0.0)
        self._last = 0.0

    def pre_query_prefix(self, system_prompt: str | None) -> str:
        raise ConfigError(["synth.magpie: an OpenAI-compatible endpoint applies the chat template on the server, "
                           "so the pre-query prefix cannot be derived here; use a local teacher (teacher.kind: "
                           "local) with the same model"])

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        for attempt in range(self.max_retries + 1):
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
            try:
                resp = self.client.post(path, json=body)
            except httpx.TransportError as exc:  # timeouts and refused connections
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    return resp.json()
                problem = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in (408, 409, 429) and resp.status_code < 500:
                    raise ModelError(f"teacher endpoint {self.client.base_url}{path} refused the request ({problem})")
            if attempt < self.max_retries:
                time.sleep(min(0.25 * 2 ** attempt, 8.0))
        raise ModelError(f"teacher endpoint {self.client.base_url}{path} failed after {self.max_retries + 1} "
                         f"attempts ({problem}); check synth.teacher.url or raise teacher.max_retries")

    def _one(self, unit: Unit, seed: int, sampling) -> dict[str, Any]:
        body = {"model": self.model, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens, "seed": seed}
        if unit.raw:
            if not self.completions:
                raise ConfigError(["synth.magpie: this endpoint is chat-only (teacher.completions: false) and "
                                   "cannot continue a raw prefix"])
            data = self._post("/completions", {**body, "prompt": unit.prompt})
            text = data["choices"][0]["text"]
        else:
            data = self._post("/chat/completions", {**body, "messages": unit.prompt})
            text = data["choices"][0]["message"]["content"] or ""
        return {"text": text.strip(), "new_tokens": int((data.get("usage") or {}).get("completion_tokens", 0))}

    def generate(self, units: list[Unit], seed: int, sampling) -> list[dict[str, Any]]:
        return [self._one(u, seed + i, sampling) for i, u in enumerate(units)]


def build_teacher(teacher_cfg, base_model: str):
    if teacher_cfg.kind == "local":
        return LocalTeacher.load(teacher_cfg.model or base_model, teacher_cfg.threads, teacher_cfg.batch_size,
                                 teacher_cfg.context_cache_mb)
    key = os.environ.get(teacher_cfg.api_key_env) if teacher_cfg.api_key_env else None
    if teacher_cfg.api_key_env and not key:
        raise ConfigError([f"synth.teacher.api_key_env: the environment variable {teacher_cfg.api_key_env} is "
                           f"not set"])
    return EndpointTeacher(teacher_cfg.url, teacher_cfg.model, api_key=key, timeout_s=teacher_cfg.timeout_s,
                           max_retries=teacher_cfg.max_retries, requests_per_s=teacher_cfg.requests_per_s,
                           completions=teacher_cfg.completions)
