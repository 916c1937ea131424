"""The FastAPI application: OpenAI routes, health, readiness and metrics over one RequestPath."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from domaintune.config.serve import ServeConfig
from domaintune.serve import experiment_routes
from domaintune.serve.engine.base import EngineFailed
from domaintune.serve.errors import ApiError
from domaintune.serve.experiments_setup import install as install_experiments
from domaintune.serve.hooks import METRICS, MODELS, Hooks
from domaintune.serve.metrics import Metrics
from domaintune.serve.pipeline import Admitted, RequestPath, new_record
from domaintune.serve.protocol import models_list
from domaintune.serve.security.install import install_access
from domaintune.serve.store.records import attach_records
from domaintune.serve.tools import build_runtime
from domaintune.serve.ui import mount as mount_console

CLIENT_CLOSED = 499  # nginx's code for "the client went away": audited and counted, never read by anyone


class _ClientGone(Exception):
    pass


def _json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def create_app(engine, renderer, settings: ServeConfig, hooks: Hooks | None = None, versions=None) -> FastAPI:
    """`renderer(Prompt) -> list[int]` turns messages or text into prompt ids (the model's chat template).
    `versions`: {id: models_registry.Served} more model versions served next to `engine`."""
    path = RequestPath(engine, renderer, settings, hooks or Hooks(), Metrics(engine))
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_app):
        engine.start()
        if app.state.models is not None:
            app.state.models.start()
        yield
        engine.stop()
        path.tools.close()
        if app.state.models is not None:
            app.state.models.stop()
        records.close()

    app = FastAPI(title="domaintune serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # the schema lists every route: not for callers without a key
    app.state.engine, app.state.path = engine, path
    records = attach_records(app, path, settings)  # audit chain, sessions, cache, /v1/sessions (serve/store)
    install_access(app, settings, path)  # after records: the review queue audits to the chain
    app.state.kb = getattr(path.hooks.retrieval, "service", None)  # KBService when a kb: section is configured
    path.tools = app.state.tools = build_runtime(settings.tools, kb=getattr(app.state, "kb", None))
    install_experiments(app, settings, versions)
    app.include_router(experiment_routes.router)

    @app.exception_handler(ApiError)
    async def _api_error(_request, err: ApiError):
        return _error_response(err)

    @app.exception_handler(HTTPException)
    async def _http_error(_request, err: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return _error_response(ApiError(err.status_code, str(err.detail), code=code))

    @app.exception_handler(Exception)
    async def _unexpected(_request, err: Exception):  # a bug must still answer in the OpenAI shape
        return _error_response(ApiError(500, f"internal error: {type(err).__name__}", code="internal_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not engine.ready():
            return _error_response(ApiError(503, "the engine is not running", code="not_ready",
                                            headers={"Retry-After": "1"}))
        return {"status": "ready", "model": engine.model_name}

    @app.get("/metrics")
    async def metrics(request: Request):
        path.principal(request, METRICS)
        return Response(path.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request):
        who = path.principal(request, MODELS)
        listed = models_list(engine.model_name, created)
        if app.state.models is not None:  # registered versions are model ids of their own
            listed["data"] += [{**listed["data"][0], "id": vid} for vid in app.state.models.versions]
        return {**listed, "data": [m for m in listed["data"] if who.allows("models", m["id"])]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _generate(path, request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _generate(path, request, chat=False)

    mount_console(app, settings)
    return app


async def _generate(path: RequestPath, http: Request, chat: bool):
    record = new_record("/v1/chat/completions" if chat else "/v1/completions")
    started = time.perf_counter()
    try:
        run = await path.admit(http, chat, record)
    except ApiError as err:
        path.finish(None, record, err.status, started, err)
        raise
    if run.turn is not None and run.turn.cached is not None:
        return JSONResponse(_from_cache(path, run, started))
    if run.tools is not None:  # the output is parsed for tool calls: serve/tools runs the loop
        from domaintune.serve.tools.respond import respond

        return await respond(path, run, http, started)
    if run.request.stream:
        return EventSourceResponse(_sse(path, run, started), sep="\n", ping=15,
                                   headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})
    try:
        body = await _collect(path, run, http)
    except ApiError as err:
        path.finish(run, record, err.status, started, err)
        raise
    except _ClientGone:
        path.finish(run, record, CLIENT_CLOSED, started)
        return Response(status_code=CLIENT_CLOSED)
    path.finish(run, record, 200, started)
    return JSONResponse(body)


class _Outcome:
    """Text, finish reason and token count of each of the n choices, filled as events arrive."""

    def __init__(self, n: int):
        self.texts, self.reasons, self.tokens = [""] * n, [None] * n, [0] * n

    def add(self, index: int, event) -> None:
        self.texts[index] += event.text
        self.tokens[index] = event.completion_tokens
        if event.finish_reason:
            self.reasons[index] = event.finish_reason

    def into(self, record) -> None:
        record.completion_tokens = sum(self.tokens)
        record.finish_reasons = [r for r in self.reasons if r]


def _from_cache(path: RequestPath, run: Admitted, started: float) -> dict:
    cached = run.turn.cached
    choices = [(text, reason) for text, reason in cached["choices"]]
    path.records.complete(run.turn, run.record, [t for t, _ in choices], [r for _, r in choices],
                          cached["completion_tokens"])
    path.finish(run, run.record, 200, started)
    return {**run.envelope.response(choices, run.prompt_tokens, cached["completion_tokens"]),
            **cached.get("extensions", {})}


async def _collect(path: RequestPath, run: Admitted, http: Request) -> dict:
    outcome = _Outcome(len(run.streams))

    async def gather():
        async for index, event in path.events(run):
            outcome.add(index, event)

    task = asyncio.ensure_future(gather())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await http.is_disconnected():
                task.cancel()  # the client left: free the slots now, not when generation would end
                raise _ClientGone
        task.result()
    except EngineFailed as err:
        raise ApiError(500, str(err), code="engine_error") from None
    finally:
        outcome.into(run.record)
    texts, post = outcome.texts, path.answer_filter(run)
    if post is not None:  # citations: [n] markers resolved against the retrieved sources
        texts = [post.feed(i, t) + post.flush(i) for i, t in enumerate(texts)]
    body = run.envelope.response(list(zip(texts, outcome.reasons, strict=True)), run.prompt_tokens,
                                 sum(outcome.tokens))
    extensions = post.extensions() if post is not None else {}
    path.records.complete(run.turn, run.record, texts, outcome.reasons, sum(outcome.tokens), extensions)
    return {**body, **extensions}


async def _sse(path: RequestPath, run: Admitted, started: float):
    env, outcome = run.envelope, _Outcome(len(run.streams))
    status, error = 200, None
    post = path.answer_filter(run)
    last = None  # the latest finish chunk is held back: the final chunk carries the citations
    try:
        if env.chat:
            for index in range(len(run.streams)):
                yield _json(env.chunk(index, role=True))
        async for index, event in path.events(run):
            outcome.add(index, event)
            text = event.text if post is None else post.feed(index, event.text)
            if event.finish_reason and post is not None:
                text += post.flush(index)
            if text:
                yield _json(env.chunk(index, text))
            if event.finish_reason:
                if last is not None:
                    yield _json(last)
                last = env.chunk(index, None, event.finish_reason)
        extra = post.extensions() if post is not None else {}
        if run.request.stream_options and run.request.stream_options.include_usage:
            if last is not None:
                yield _json(last)
            last = env.usage_chunk(run.prompt_tokens, sum(outcome.tokens))
        if last is not None:
            yield _json({**last, **extra})
    except EngineFailed as err:  # headers are sent: report in-band, then end the stream properly
        status, error = 500, ApiError(500, str(err), code="engine_error")
        yield _json(error.body())
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        outcome.into(run.record)
        if status == 200:
            try:
                path.records.complete(run.turn, run.record, outcome.texts, outcome.reasons, sum(outcome.tokens))
            except Exception as err:  # the answer is sent: the audit must still get its record
                status, error = 500, ApiError(500, f"storing the session turn failed: {type(err).__name__}",
                                              code="records_error")
        path.finish(run, run.record, status, started, error)
    yield "[DONE]"
