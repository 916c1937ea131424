"""One request path for every engine and both generation routes.

principal (auth) -> permission -> body cap -> parse -> caps -> template -> retrieval -> render ->
context caps -> limits -> engine -> audit -> metrics. Each refusal is an ApiError raised before
the engine sees the request; the engine's own refusal (queue full) is a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.requests import Request

from domaintune.config.serve import ServeConfig
from domaintune.serve.engine.base import EngineFailed, GenRequest, QueueFull
from domaintune.serve.errors import ApiError, invalid, overloaded
from domaintune.serve.hooks import CHAT, COMPLETIONS, AuditRecord, Hooks, Principal, Prompt
from domaintune.serve.metrics import Metrics, Timing
from domaintune.serve.protocol import ChatRequest, CompletionRequest, Envelope, parse_request
from domaintune.serve.store.layer import RecordsLayer, Turn
from domaintune.serve.store.trail import note_principal
from domaintune.serve.tools import message_dict, plan_tools, render_ids, tool_state


@dataclass
class Admitted:
    """A request that passed every check and is running in the engine."""

    request: ChatRequest | CompletionRequest
    envelope: Envelope
    streams: list
    prompt_tokens: int
    started: float
    release: Callable[..., None]
    record: AuditRecord
    tools: object | None = None  # serve.tools.ToolState when the output is parsed for tool calls
    engine: object | None = None  # the engine that serves it (an A/B arm may pick another model version)
    renderer: Callable | None = None  # that engine's renderer: later tool rounds must use the same model
    prompt: Prompt | None = None  # after template and retrieval: its sources feed the post-generation step
    screen: object = None  # the rules' Screen (serve/rules): a fixed answer, and the filter answers pass through
    turn: Turn | None = None  # sessions and cache (store/layer.py); turn.cached: answered without the engine


async def read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"request body of {declared} bytes exceeds serve.max_body_bytes ({cap})",
                       code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > cap:  # chunked uploads carry no length header: count as it arrives
            raise ApiError(413, f"request body exceeds serve.max_body_bytes ({cap})", code="request_too_large")
    return bytes(body)


class RequestPath:
    def __init__(self, engine, renderer, settings: ServeConfig, hooks: Hooks, metrics: Metrics):
        self.engine, self.renderer, self.settings = engine, renderer, settings
        self.hooks, self.metrics = hooks, metrics
        self.tools = None  # serve.tools.ToolRuntime: server-side tools (create_app builds it)
        self.models = None  # models_registry.ModelRegistry when several model versions are served
        self.experiments = None  # experiments.Experiments: assigns an A/B arm per user
        self.records = RecordsLayer()  # sessions and cache off; store.records.attach_records sets the real one

    def principal(self, request: Request, permission: str) -> Principal:
        principal = self.hooks.auth.authenticate(request.headers)
        note_principal(principal)  # the request's audit record names its key id, even when refused below
        self.hooks.authz.check(principal, permission)
        return principal

    async def admit(self, http: Request, chat: bool, record: AuditRecord) -> Admitted:
        started = time.perf_counter()
        principal = self.principal(http, CHAT if chat else COMPLETIONS)
        record.principal, record.tenant, record.key_id = principal.id, principal.tenant, principal.key_id
        body = await read_body(http, self.settings.max_body_bytes)
        req = parse_request(ChatRequest if chat else CompletionRequest, body)
        record.model, record.user = req.model, req.user
        self._check_params(req)
        if not principal.allows("models", req.model):
            raise ApiError(403, f"this key may not use the model '{req.model}'", code="model_not_allowed",
                           param="model")
        plan = plan_tools(req, principal, self.tools) if chat else None
        screen = self.hooks.rules.screen(principal, self._prompt(req, chat), record)
        prompt = screen.prompt
        prompt.template, prompt.route = req.template, record.route
        engine, renderer = self._select(principal, req, prompt, record)
        prompt, turn = self.records.begin(principal, req, prompt, record, renderer, engine.context_length,
                                          self.settings.max_prompt_tokens, tools=plan is not None)
        prompt = self.hooks.templates.apply(principal, prompt)
        if prompt.kb and not hasattr(self.hooks.retrieval, "answer_filter"):
            raise ApiError(404, f"knowledge base '{prompt.kb}' does not exist: this server has no kb configured",
                           code="kb_not_found", param="kb")
        prompt = self.hooks.retrieval.augment(principal, prompt)
        record.template_id = prompt.template_id
        record.sources = [str(s.get("id", "")) for s in prompt.sources]
        ids, prefix = render_ids(renderer, prompt, plan) if plan else (renderer(prompt), "")
        max_tokens = self._check_context(req, len(ids), "messages" if chat else "prompt", engine)
        release = self.hooks.limits.acquire(principal, len(ids) + max_tokens * req.n)
        try:
            streams = screen.streams(req.n, len(ids))  # a rule's fixed answer: neither cache nor engine
            if not streams and plan is None:  # a tool loop's answer depends on the tools' results: never cached
                self.records.lookup(turn, prompt, req, ids, max_tokens, record, engine.model_name)
            if not streams and turn.cached is None:
                streams = self._submit(req, ids, max_tokens, principal, record.request_id, engine,
                                       json_schema=plan.json_schema if plan else None)  # a forced tool call
        except BaseException:
            release()
            raise
        record.prompt_tokens = len(ids)  # a cache hit (turn.cached) has no streams: the engine never sees it
        envelope = Envelope(record.request_id, engine.model_name, chat)
        envelope.extra.update({**self._extensions(prompt, record), **turn.extras()})
        return Admitted(req, envelope, streams, len(ids), started, release, record,
                        tool_state(plan, self.tools, principal, prompt, prefix, self.settings.tools), engine, renderer,
                        prompt, screen, turn)

    def _select(self, principal: Principal, req, prompt: Prompt, record: AuditRecord):
        """(engine, renderer) for the request: an A/B arm may swap the model version and set the template;
        with registered versions the model id picks the engine, else it must be the one served model."""
        model = req.model
        if self.experiments is not None:
            model, record.variant = self.experiments.assign(principal, prompt, model, req.user)
        if self.models is not None:
            served = self.models.resolve(model)
            record.model = served.engine.model_name
            return served.engine, served.renderer
        if model != self.engine.model_name:
            raise ApiError(404, f"the model '{model}' does not exist; this server serves "
                                f"'{self.engine.model_name}' (GET /v1/models)", code="model_not_found", param="model")
        return self.engine, self.renderer

    @staticmethod
    def _extensions(prompt: Prompt, record: AuditRecord) -> dict:
        """Response extension fields: the A/B arm and the template version, when either applies."""
        out = {}
        if record.variant:
            out["variant"] = record.variant
        if prompt.template_id != Prompt.template_id:
            out["template"] = prompt.template_id
        return out

    def _check_params(self, req) -> None:
        s = self.settings
        if req.n > s.max_n:
            raise invalid(f"n={req.n} exceeds serve.max_n ({s.max_n})", "n")
        if len(req.stop_list()) > s.max_stop:
            raise invalid(f"{len(req.stop_list())} stop strings exceed serve.max_stop ({s.max_stop})", "stop")
        asked, param = req.requested_max_tokens()
        if asked is not None and asked > s.max_tokens_cap:
            raise invalid(f"{param}={asked} exceeds serve.max_tokens_cap ({s.max_tokens_cap})", param)
        if req.stream_options is not None and not req.stream:
            raise invalid("stream_options is only allowed when stream is true", "stream_options")

    @staticmethod
    def _prompt(req, chat: bool) -> Prompt:
        if chat:
            return Prompt(messages=[message_dict(m) for m in req.messages], kb=req.kb)
        return Prompt(text=req.prompt_text())

    def _check_context(self, req, prompt_tokens: int, prompt_param: str, engine=None) -> int:
        """max_tokens to use; 400 when the prompt, or prompt + max_tokens, does not fit (never clamped)."""
        cap, ctx = self.settings.max_prompt_tokens, (engine or self.engine).context_length
        if prompt_tokens > cap:
            raise invalid(f"the prompt has {prompt_tokens} tokens, more than serve.max_prompt_tokens ({cap})",
                          prompt_param, code="context_length_exceeded")
        asked, param = req.requested_max_tokens()
        room = ctx - prompt_tokens
        if asked is None:  # chat without a limit: as much as the context and the cap allow
            if room < 1:
                raise invalid(f"the prompt has {prompt_tokens} tokens and fills the model's context of {ctx}",
                              prompt_param, code="context_length_exceeded")
            return min(room, self.settings.max_tokens_cap)
        if asked > room:
            raise invalid(f"this model's context is {ctx} tokens; the prompt has {prompt_tokens}, so {param} "
                          f"can be at most {max(room, 0)} (asked {asked})", param, code="context_length_exceeded")
        return asked

    def _submit(self, req, ids: list[int], max_tokens: int, principal: Principal, request_id: str,
                engine=None, json_schema: dict | None = None) -> list:
        engine, streams = engine or self.engine, []
        try:
            for i in range(req.n):
                seed = None if req.seed is None else req.seed + i  # n choices differ, yet are reproducible
                streams.append(engine.submit(GenRequest(
                    request_id=f"{request_id}-{i}", prompt_ids=ids, max_tokens=max_tokens,
                    temperature=req.temperature, top_p=req.top_p, seed=seed, stop=req.stop_list(),
                    tenant=principal.tenant, json_schema=json_schema)))
        except QueueFull as full:
            for stream in streams:
                stream.cancel()
            raise overloaded(self.settings.retry_after_s, str(full)) from None
        return streams

    def answer_filter(self, run: Admitted):
        """Retrieval's post-generation step (citations), or None: feed/flush text, extensions() at the end."""
        make = getattr(self.hooks.retrieval, "answer_filter", None)
        return make(run.prompt) if make is not None and run.prompt is not None else None

    # ------------------------------------------------------------------ results
    def events(self, run: Admitted) -> AsyncIterator[tuple[int, object]]:
        """(choice index, Event) as the rules let them through (serve/rules/screen.py)."""
        events = self._engine_events(run)
        return events if run.screen is None else run.screen.filter(events, run)

    async def _engine_events(self, run: Admitted) -> AsyncIterator[tuple[int, object]]:
        """(choice index, Event) in arrival order from all n sequences; cancels them all if abandoned."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, stream) -> None:
            try:
                async for event in stream:
                    await queue.put((index, event))
            except EngineFailed as err:
                await queue.put((index, err))
            finally:
                await queue.put((index, None))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(run.streams)]
        timings = [Timing(self.metrics, run.started) for _ in run.streams]
        try:
            remaining = len(tasks)
            while remaining:
                index, item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    timings[index].observe(time.perf_counter(), item.completion_tokens)
                    yield index, item
        finally:
            for task in tasks:
                task.cancel()
            for stream in run.streams:
                stream.cancel()  # a no-op for finished sequences; frees the slot of unfinished ones

    def finish(self, run: Admitted | None, record: AuditRecord, status: int, started: float,
               error: ApiError | None = None) -> None:
        """Audit and count a request exactly once, whatever way it ended."""
        if run is not None:
            run.release(record.prompt_tokens + record.completion_tokens)
        record.status = status
        record.error_code = error.code if error else None
        record.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        if error is not None:
            self.metrics.reject(status)
        self.metrics.requests.labels(record.route, str(status)).inc()
        if record.prompt_tokens:
            self.metrics.prompt_tokens.inc(record.prompt_tokens)
            self.metrics.generation_tokens.inc(record.completion_tokens)
            if status == 200:
                self.metrics.e2e.observe(time.perf_counter() - started)
        self.hooks.audit.record(record)


def new_record(route: str) -> AuditRecord:
    return AuditRecord(request_id=uuid.uuid4().hex[:24], route=route, principal="", tenant="", status=0)
