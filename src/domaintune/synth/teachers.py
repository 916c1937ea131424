"""Teachers: a local Hugging Face model (batched, left-padded generate, threads pinned) or any
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
MIN_SHARED_PREFIX = 8  # tokens; below this the extra forward pass is not worth it


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

    def __call__(self, input_ids, scores):
        import torch

        scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        k = min(self.candidates, scores.shape[-1])
        top, idx = scores.topk(k, dim=-1)  # sorted, descending
        probs = scores.softmax(dim=-1).gather(-1, idx)
        cum = probs.cumsum(dim=-1)
        wide = cum[:, -1] < self.top_p  # nucleus not inside the candidates: full sort for those rows
        if bool(wide.any()):
            top_all, idx_all = scores[wide].sort(dim=-1, descending=True)
            cum_all = top_all.softmax(dim=-1).cumsum(dim=-1)
            keep_all = (cum_all - top_all.softmax(dim=-1)) < self.top_p
            keep_all[:, 0] = True
            out = torch.full_like(scores, float("-inf"))
            out[wide] = torch.full_like(top_all, float("-inf")).scatter(
                -1, idx_all, top_all.masked_fill(~keep_all, float("-inf")))
        else:
            out = torch.full_like(scores, float("-inf"))
        # keep a token while the mass ranked above it is below top_p (the same rule as
        # TopPLogitsWarper's "cumulative ascending mass <= 1 - top_p is removed"); the first always stays
        keep = (cum - probs) < self.top_p
        keep[:, 0] = True
        narrow = ~wide
        out[narrow] = out[narrow].scatter(-1, idx[narrow], top[narrow].masked_fill(~keep[narrow], float("-inf")))
        return out


class LocalTeacher:
    """A causal LM run in-process. Prompts of one batch go through one `generate` call."""

    def __init__(self, model, tokenizer, name: str, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.model, self.tokenizer, self.id = model.eval(), tokenizer, f"local:{name}"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def load(cls, path: str, threads: int) -> LocalTeacher:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)  # never trust_remote_code; safetensors only
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
        return cls(model, tok, os.path.basename(os.path.normpath(str(path))), threads)

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
        """One batch: each prompt prefilled on its own (no padding compute) after the prompt prefix
        the whole batch shares (the chat template's system turn and the method's instructions),
        which is computed once; then all rows decode together from one left-padded KV cache, and a
        row leaves the batch when it stops. Why not `model.generate` on a left-padded batch: on one
        CPU thread its prefill pays for every pad token, its top-p sorts the whole vocabulary for
        every row at every step, and finished rows keep decoding until the longest one stops
        (bench/synth_throughput.py measures the difference)."""
        import torch

        tok = self.tokenizer
        prompts = [tok(self.render(u), add_special_tokens=False)["input_ids"] for u in units]
        if any(not p for p in prompts):
            raise ModelError("synth: an empty prompt reached the local teacher (a template rendered to nothing)")
        torch.manual_seed(seed)
        with torch.inference_mode():
            cache, mask, logits = self._prefill(prompts)
            rows = self._decode(cache, mask, logits, sampling)
        return [{"text": tok.decode(ids, skip_special_tokens=True).strip(), "new_tokens": len(ids)} for ids in rows]

    def _stop_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids |= set(configured) if isinstance(configured, list) else {configured}
        return {i for i in ids if i is not None}

    def _forward(self, **kwargs):
        out = self.model(**kwargs, use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return cache, out.logits[:, -1].float()

    def _prefill(self, prompts: list[list[int]]):
        """(cache, attention mask, last-position logits) of the batch: rows left-padded to the
        longest prompt, padded key/value slots zero and masked out."""
        import torch
        from transformers import DynamicCache

        shared = _common_prefix(prompts, min(len(p) for p in prompts) - 1)  # every row keeps >= 1 own token
        prefix_kv = None
        if shared >= MIN_SHARED_PREFIX:
            cache, _ = self._forward(input_ids=torch.tensor([prompts[0][:shared]]))
            prefix_kv = [(k, v) for k, v, *_ in cache]
        else:
            shared = 0
        per_row, logits = [], []
        for p in prompts:
            cache = DynamicCache(prefix_kv, config=self.model.config) if prefix_kv else DynamicCache(
                config=self.model.config)
            cache, last = self._forward(input_ids=torch.tensor([p[shared:]]), cache=cache,
                                        position_ids=torch.arange(shared, len(p)).unsqueeze(0),
                                        attention_mask=torch.ones(1, len(p), dtype=torch.long))
            per_row.append([(k, v) for k, v, *_ in cache])
            logits.append(last)
        width = max(len(p) for p in prompts)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, p in enumerate(prompts):
            mask[i, width - len(p):] = 1
        layers = []
        for layer in range(len(per_row[0])):
            k0, v0 = per_row[0][layer]
            keys = k0.new_zeros((len(prompts), k0.shape[1], width, k0.shape[3]))
            values = v0.new_zeros((len(prompts), v0.shape[1], width, v0.shape[3]))
            for i, p in enumerate(prompts):
                keys[i, :, width - len(p):] = per_row[i][layer][0][0]
                values[i, :, width - len(p):] = per_row[i][layer][1][0]
            layers.append((keys, values))
        return DynamicCache(layers, config=self.model.config), mask, torch.cat(logits)

    def _decode(self, cache, mask, logits, sampling) -> list[list[int]]:
        """Sample (or pick, at temperature 0) until each row emits a stop token or max_new_tokens."""
        import torch

        stop, sampler = self._stop_ids(), (NucleusSampler(sampling.temperature, sampling.top_p)
                                           if sampling.temperature > 0 else None)
        rows: list[list[int]] = [[] for _ in range(mask.shape[0])]
        active = list(range(mask.shape[0]))  # batch position -> row
        positions = mask.sum(dim=1)
        for step in range(sampling.max_new_tokens):
            if sampler is None:
                nxt = logits.argmax(dim=-1)
            else:
                nxt = torch.multinomial(sampler(None, logits).softmax(dim=-1), 1).squeeze(1)
            keep = []
            for j, token in enumerate(nxt.tolist()):
                if token not in stop:
                    rows[active[j]].append(token)
                    keep.append(j)
            if not keep or step == sampling.max_new_tokens - 1:
                break
            if len(keep) < len(active):  # finished rows leave the batch (and its KV cache)
                index = torch.tensor(keep)
                cache.batch_select_indices(index)
                mask, nxt, positions = mask[index], nxt[index], positions[index]
                active = [active[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            cache, logits = self._forward(input_ids=nxt.unsqueeze(1), cache=cache, attention_mask=mask,
                                          position_ids=positions.unsqueeze(1))
            positions = positions + 1
        return rows


def _common_prefix(prompts: list[list[int]], limit: int) -> int:
    n = 0
    while n < limit and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


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
        return LocalTeacher.load(teacher_cfg.model or base_model, teacher_cfg.threads)
    key = os.environ.get(teacher_cfg.api_key_env) if teacher_cfg.api_key_env else None
    if teacher_cfg.api_key_env and not key:
        raise ConfigError([f"synth.teacher.api_key_env: the environment variable {teacher_cfg.api_key_env} is "
                           f"not set"])
    return EndpointTeacher(teacher_cfg.url, teacher_cfg.model, api_key=key, timeout_s=teacher_cfg.timeout_s,
                           max_retries=teacher_cfg.max_retries, requests_per_s=teacher_cfg.requests_per_s,
                           completions=teacher_cfg.completions)
