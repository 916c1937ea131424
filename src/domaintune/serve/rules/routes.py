"""Reviewer API: list, read, approve, edit, reject (permission REVIEW); a caller reads its own held
answer's outcome (permission CHAT). Every route authenticates before it looks anything up."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from domaintune.serve.errors import ApiError
from domaintune.serve.permissions import CHAT, REVIEW

router = APIRouter()
MAX_DECISION_BYTES = 262_144


def _queue(request: Request):
    queue = request.app.state.review
    if queue is None:
        raise ApiError(404, "the review queue is not configured (serve.rules)", code="not_configured")
    return queue


def _call(fn, *args, **kwargs):
    from domaintune.serve.rules.review import ReviewError

    try:
        return fn(*args, **kwargs)
    except ReviewError as err:
        code = {400: "invalid_value", 404: "not_found", 409: "conflict"}[err.status]
        raise ApiError(err.status, str(err), code=code) from None


@router.get("/v1/review/items")
async def list_items(request: Request, status: str = "pending"):
    request.app.state.path.principal(request, REVIEW)
    return {"object": "list", "data": _call(_queue(request).list, status)}


@router.get("/v1/review/items/{item_id}")
async def get_item(request: Request, item_id: str):
    request.app.state.path.principal(request, REVIEW)
    item = _queue(request).get(item_id)
    if item is None:
        raise ApiError(404, f"no review item '{item_id}'", code="not_found")
    return item


async def _body(request: Request) -> dict:
    from domaintune.serve.pipeline import read_body

    raw = await read_body(request, MAX_DECISION_BYTES)
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "the body is not JSON", code="invalid_json") from None
    if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
        raise ApiError(400, "the body must be a JSON object of strings ('text', 'note')", code="invalid_value")
    return body


@router.post("/v1/review/items/{item_id}/{decision}")
async def decide(request: Request, item_id: str, decision: str):
    principal = request.app.state.path.principal(request, REVIEW)
    body = await _body(request)
    return _call(_queue(request).decide, item_id, decision, principal, text=body.get("text"), note=body.get("note"))


@router.get("/v1/review/outcomes/{item_id}")
async def outcome(request: Request, item_id: str):
    """The caller's own flagged answer: its status and, once approved or edited, the answer."""
    principal = request.app.state.path.principal(request, CHAT)
    item = _queue(request).get(item_id)
    if item is None or item["owner"] != (principal.key_id or principal.id):
        raise ApiError(404, f"no review item '{item_id}'", code="not_found")  # another key's item: not found
    return {"item_id": item_id, "status": item["status"], "answer": item["final"]}
