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


def sampling_dict(sampling) -> dict[str, Any]:
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens}


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
        import torch

        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok([self.render(u) for u in units], return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        kwargs: dict[str, Any] = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=tok.pad_token_id,
                                      do_sample=sampling.temperature > 0)
        if sampling.temperature > 0:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:  # explicit, so a generation_config cannot turn sampling on
            kwargs.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        results = []
        for row in new:
            ids = [int(t) for t in row if int(t) != tok.pad_token_id]
            stop = tok.eos_token_id
            ids = ids[: ids.index(stop)] if stop in ids else ids
            results.append({"text": tok.decode(ids, skip_special_tokens=True).strip(), "new_tokens": len(ids)})
        return results


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
