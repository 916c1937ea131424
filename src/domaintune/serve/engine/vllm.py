"""GPU engine: forward each sequence to a running vLLM OpenAI server over HTTP (never `import vllm`).

Our request path has already authenticated, checked caps, applied the template and retrieval and
rendered the prompt, so we send vLLM token ids on /v1/completions: vLLM sees exactly the prompt
our path built, and every governance layer applies unchanged. Only allowlisted parameters are
sent, and the prefix-cache `cache_salt` is derived here from the tenant (clients cannot send one:
the protocol refuses unknown fields), so no tenant can probe another's cached prefixes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from pathlib import Path

import httpx

from domaintune.config.serve import VLLMConfig
from domaintune.errors import ModelError
from domaintune.serve.engine.base import EngineFailed, EngineStats, Event, GenRequest, QueueFull, Stream


class VLLMEngine:
    def __init__(self, settings: VLLMConfig, tokenizer, model_name: str, max_inflight: int = 40):
        self.settings = settings
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.upstream_model = settings.model
        self.context_length = 0
        self.max_inflight = max_inflight
        self._salt_key = secrets.token_bytes(32)  # salts cannot be guessed from tenant names
        self._tasks: dict[str, asyncio.Task] = {}
        self._client: httpx.AsyncClient | None = None
        self._peak = 0
        self._ready = False
        self._api_key = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _read_key(self) -> None:
        path = self.settings.api_key_file
        if path is None:
            return
        try:
            self._api_key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ModelError(f"serve.vllm.api_key_file: cannot read {path}: {err}") from None

    def start(self) -> None:
        """Attach: learn the upstream model and its context length (vLLM must already be running)."""
        self._read_key()
        url = self.settings.url.rstrip("/") + "/v1/models"
        try:
            resp = httpx.get(url, headers=self._headers(), timeout=10)
            resp.raise_for_status()
            models = resp.json()["data"]
        except (httpx.HTTPError, KeyError, ValueError) as err:
            raise ModelError(f"serve.vllm.url: cannot list models at {url}: {err}; start the vLLM server first "
                             f"(vllm serve MODEL_DIR --port ...) or fix the URL") from None
        chosen = next((m for m in models if m.get("id") == self.upstream_model), None) if self.upstream_model \
            else (models[0] if models else None)
        if chosen is None:
            names = ", ".join(m.get("id", "?") for m in models)
            raise ModelError(f"serve.vllm.model: '{self.upstream_model}' is not served at {url} (it serves: {names})")
        self.upstream_model = chosen["id"]
        self.context_length = int(chosen.get("max_model_len") or getattr(self.tokenizer, "model_max_length", 2048))
        self._client = httpx.AsyncClient(base_url=self.settings.url.rstrip("/"), headers=self._headers(),
                                         timeout=self.settings.timeout_s)
        self._ready = True

    def stop(self) -> None:
        self._ready = False
        for task in list(self._tasks.values()):
            task.cancel()

    def ready(self) -> bool:
        return self._ready

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self._tasks), waiting=0, peak_running=self._peak)

    def cache_salt(self, tenant: str) -> str:
        return hmac.new(self._salt_key, tenant.encode(), hashlib.sha256).hexdigest()[:32]

    def payload(self, req: GenRequest) -> dict:
        body = {"model": self.upstream_model, "prompt": req.prompt_ids, "max_tokens": req.max_tokens,
                "temperature": req.temperature, "top_p": req.top_p, "stream": True,
                "stream_options": {"include_usage": True}, "skip_special_tokens": True}
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stop:
            body["stop"] = req.stop
        if self.settings.cache_salt_per_tenant:
            body["cache_salt"] = self.cache_salt(req.tenant)
        if req.json_schema is not None:
            # A forced tool call: vLLM's own guided decoding (what it does for a named/required tool_choice
            # on chat) on the prompt we rendered. `structured_outputs` is vLLM >= 0.10.2 (guided_json's successor).
            body["structured_outputs"] = {"json": req.json_schema}
        return body

    def submit(self, request: GenRequest) -> Stream:
        if len(self._tasks) >= self.max_inflight:
            raise QueueFull(f"{len(self._tasks)} requests in flight to vLLM")
        stream = Stream(request.request_id, asyncio.get_running_loop(), self._cancel)
        task = asyncio.get_running_loop().create_task(self._forward(request, stream))
        self._tasks[request.request_id] = task
        self._peak = max(self._peak, len(self._tasks))
        task.add_done_callback(lambda _t: self._tasks.pop(request.request_id, None))
        return stream

    def _cancel(self, request_id: str) -> None:
        task = self._tasks.get(request_id)
        if task is not None:
            task.cancel()  # closing the HTTP stream makes vLLM abort the sequence

    async def _forward(self, req: GenRequest, stream: Stream) -> None:
        try:
            async with self._client.stream("POST", "/v1/completions", json=self.payload(req)) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", "replace")[:500]
                    raise EngineFailed(f"vLLM answered {resp.status_code}: {text}")
                await self._relay(resp, req, stream)
        except httpx.HTTPError as err:
            stream.put(EngineFailed(f"vLLM at {self.settings.url} failed: {type(err).__name__}: {err}"))
        except EngineFailed as err:
            stream.put(err)

    async def _relay(self, resp, req: GenRequest, stream: Stream) -> None:
        reason, pieces = None, 0
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise EngineFailed(f"vLLM failed mid-stream: {chunk['error'].get('message', chunk['error'])}")
            for choice in chunk.get("choices") or []:
                pieces += 1
                reason = choice.get("finish_reason") or reason
                if choice.get("text"):
                    stream.put(Event(text=choice["text"], prompt_tokens=len(req.prompt_ids),
                                     completion_tokens=pieces))
            if chunk.get("usage") and reason:  # the usage chunk comes last: exact counts from vLLM
                usage = chunk["usage"]
                stream.put(Event(finish_reason=reason, prompt_tokens=usage["prompt_tokens"],
                                 completion_tokens=usage["completion_tokens"]))
                return
        raise EngineFailed("vLLM ended the stream without a finish reason and usage")
