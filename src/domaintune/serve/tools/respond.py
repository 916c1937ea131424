"""HTTP answers of a chat request with tools: one JSON body, or SSE chunks with `delta.tool_calls`.

Shapes follow OpenAI exactly: a call is {id, type: "function", function: {name, arguments}} with the
arguments a JSON string; content is null when the turn only calls tools; a stream sends each call as
a first delta (index, id, type, name, empty arguments) and then its arguments. The server-side calls
the loop ran are listed in the extension field `server_tool_calls` (non-stream body and final chunk).
"""

from __future__ import annotations

import asyncio
import json

from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.requests import Request

from domaintune.serve.engine.base import EngineFailed
from domaintune.serve.errors import ApiError
from domaintune.serve.tools.loop import Calls, Content, Finish, turns

CLIENT_CLOSED = 499  # as in app.py: the client went away


def _json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class _Result:
    def __init__(self):
        self.content, self.calls, self.reason = "", [], None

    def add(self, item) -> None:
        if isinstance(item, Content):
            self.content += item.text
        elif isinstance(item, Calls):
            self.calls = item.calls
        else:
            self.reason = item.reason


def _finish_record(run, reason: str | None) -> None:
    run.record.completion_tokens = run.tools.completion_tokens
    run.record.finish_reasons = [reason] if reason else []


async def respond(path, run, http: Request, started: float) -> Response:
    if run.request.stream:
        return EventSourceResponse(_sse(path, run, started), sep="\n", ping=15,
                                   headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})
    result = _Result()

    async def gather():
        async for item in turns(path, run):
            result.add(item)

    task = asyncio.ensure_future(gather())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await http.is_disconnected():
                task.cancel()
                _finish_record(run, None)
                path.finish(run, run.record, CLIENT_CLOSED, started)
                return Response(status_code=CLIENT_CLOSED)
        task.result()
    except EngineFailed as err:
        _fail(path, run, started, ApiError(500, str(err), code="engine_error"))
    except ApiError as err:
        _fail(path, run, started, err)
    _finish_record(run, result.reason)
    path.finish(run, run.record, 200, started)
    return JSONResponse(_body(run, result))


def _fail(path, run, started: float, err: ApiError):
    _finish_record(run, None)
    path.finish(run, run.record, err.status, started, err)
    raise err


def _body(run, result: _Result) -> dict:
    body = run.envelope.response([(result.content, result.reason)], run.prompt_tokens, run.tools.completion_tokens)
    message = body["choices"][0]["message"]
    if result.calls:
        message["content"] = result.content if result.content.strip() else None
        message["tool_calls"] = [c.openai() for c in result.calls]
    if run.tools.outcomes:
        body["server_tool_calls"] = run.tools.outcomes
    return body


def _call_chunks(env, calls) -> list[dict]:
    chunks = []
    for index, call in enumerate(calls):
        head = env.chunk(0)
        head["choices"][0]["delta"] = {"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                                       "function": {"name": call.name, "arguments": ""}}]}
        args = env.chunk(0)
        args["choices"][0]["delta"] = {"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}
        chunks += [head, args]
    return chunks


async def _sse(path, run, started: float):
    env, status, error, reason = run.envelope, 200, None, None
    try:
        yield _json(env.chunk(0, role=True))
        async for item in turns(path, run):
            if isinstance(item, Content):
                yield _json(env.chunk(0, item.text))
            elif isinstance(item, Calls):
                for chunk in _call_chunks(env, item.calls):
                    yield _json(chunk)
            elif isinstance(item, Finish):
                reason = item.reason
                last = env.chunk(0, None, reason)
                if run.tools.outcomes:
                    last["server_tool_calls"] = run.tools.outcomes
                yield _json(last)
        if run.request.stream_options and run.request.stream_options.include_usage:
            yield _json(env.usage_chunk(run.prompt_tokens, run.tools.completion_tokens))
    except EngineFailed as err:  # headers are sent: report in-band, then end the stream properly
        status, error = 500, ApiError(500, str(err), code="engine_error")
        yield _json(error.body())
    except ApiError as err:  # a later round refused (context, limits) or a forced call that never came
        status, error = err.status, err
        yield _json(err.body())
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        _finish_record(run, reason)
        path.finish(run, run.record, status, started, error)
    yield "[DONE]"
