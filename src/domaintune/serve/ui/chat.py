"""The chat page, and its endpoints: the streamed answer (through /v1/chat/completions), feedback,
and the principal's server-side sessions."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse

from domaintune.serve.errors import ApiError, invalid
from domaintune.serve.permissions import CHAT, FEEDBACK, SESSIONS
from domaintune.serve.pipeline import read_body
from domaintune.serve.ui.core import LoginRequired
from domaintune.serve.ui.inprocess import call_json, inner_scope, replay
from domaintune.serve.ui.security import PREFIX
from domaintune.serve.ui.sessions import acting_as

# the full /ui path on each route, not an include prefix: audit records name the route's template
router = APIRouter(prefix=PREFIX)


CHAT_ROUTE, FEEDBACK_ROUTE = "/v1/chat/completions", "/v1/feedback"
MAX_TURNS = 200


def _console(request: Request):
    return request.app.state.console


@router.get("/")
async def home(request: Request):
    console = _console(request)
    who = console.current(request)
    if who is None:
        raise LoginRequired
    from domaintune.serve.ui.core import NAV

    for perm, url, _key in NAV:
        if console.holds(who.principal, perm):
            return RedirectResponse(url, status_code=303)
    return console.page(request, "error.jinja", who, status=403, message_key="error.no_pages")


@router.get("/chat")
async def chat_page(request: Request):
    console = _console(request)
    who = console.require(request, CHAT)
    sessions = console.backend("sessions")
    listed = sessions.list(who.principal) if sessions is not None and console.holds(who.principal, SESSIONS) else None
    return console.page(request, "chat.jinja", who, sessions=listed, model=console.path.engine.model_name,
                        feedback=console.backend("experiments") is not None)


def _messages(raw) -> list[dict]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_TURNS:
        raise invalid(f"messages must be a list of 1 to {MAX_TURNS} turns", "messages")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(m.get("content"),
                                                                                                      str):
            raise invalid(f"messages[{i}] must be {{role: user|assistant, content: string}}", f"messages[{i}]")
        out.append({"role": m["role"], "content": m["content"]})
    return out


class ChatStream:
    """POST /ui/api/chat: the console's question, answered by the API's own chat route, streamed as is
    (the same SSE chunks an OpenAI client gets, with citations/variant/template/session_id extensions)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        request = Request(scope, receive)
        try:
            principal, payload, extra = await self._prepare(request)
        except LoginRequired:
            err = ApiError(401, "log in to the console first", code="login_required")
            return await JSONResponse(err.body(), status_code=401)(scope, receive, send)
        except ApiError as err:
            return await JSONResponse(err.body(), status_code=err.status, headers=err.headers)(scope, receive, send)
        body = json.dumps(payload).encode("utf-8")
        with acting_as(principal):
            await self.app(inner_scope(scope, CHAT_ROUTE, body, extra), replay(body, receive), send)

    async def _prepare(self, request: Request):
        console = request.app.state.console
        who = console.require(request, CHAT)
        raw = await read_body(request, console.path.settings.max_body_bytes)
        try:
            asked = json.loads(raw)
        except ValueError:
            raise invalid("the body must be JSON: {messages: [...], session_id?}", "body") from None
        if not isinstance(asked, dict):
            raise invalid("the body must be a JSON object", "body")
        payload = {"model": console.path.engine.model_name, "messages": _messages(asked.get("messages")),
                   "stream": True, "max_tokens": console.settings.max_tokens}
        extra = []
        session_id = asked.get("session_id")
        if session_id is not None and console.backend("sessions") is not None:
            if not isinstance(session_id, str) or len(session_id) > 128:
                raise invalid("session_id must be a string", "session_id")
            console.backend("sessions").messages(who.principal, session_id)  # another principal's id: 404
            if getattr(getattr(console.path, "records", None), "sessions", None) is not None:
                payload["session_id"] = session_id  # the request path's records layer keeps the turns
        return who.principal, payload, extra


@router.post("/api/feedback")
async def feedback(request: Request):
    console = _console(request)
    who = console.require(request, FEEDBACK)
    asked = await request.json()
    if not isinstance(asked, dict) or not isinstance(asked.get("request_id"), str) \
            or asked.get("thumbs") not in ("up", "down"):
        raise invalid("feedback must be {request_id: string, thumbs: up|down}", "body")
    if console.backend("experiments") is None:
        raise ApiError(404, "feedback is not configured on this server (no experiments)", code="not_configured")
    status, body = await call_json(request.app, request.scope, request.receive, who.principal, FEEDBACK_ROUTE,
                                   {"request_id": asked["request_id"], "thumbs": asked["thumbs"]})
    return JSONResponse(body, status_code=status)


def _sessions(console, who):
    sessions = console.backend("sessions")
    if sessions is None:
        raise ApiError(404, "server-side sessions are not configured on this server", code="not_configured")
    return sessions


@router.post("/api/sessions")
async def new_session(request: Request):
    console = _console(request)
    who = console.require(request, SESSIONS)
    return {"id": _sessions(console, who).create(who.principal)}


@router.get("/api/sessions/{session_id}")
async def session_messages(request: Request, session_id: str):
    console = _console(request)
    who = console.require(request, SESSIONS)
    return {"id": session_id, "messages": _sessions(console, who).messages(who.principal, session_id)}


@router.delete("/api/sessions/{session_id}")
async def delete_session(request: Request, session_id: str):
    console = _console(request)
    who = console.require(request, SESSIONS)
    _sessions(console, who).delete(who.principal, session_id)
    return {"deleted": session_id}
