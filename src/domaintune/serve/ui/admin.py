"""Admin pages: API keys, the audit log, the review queue, experiments and knowledge bases.

Each page drives its backend on app.state through the documented interface and shows "not
configured" when that backend is None. Every form carries the session's CSRF token.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Request

from domaintune.serve.errors import ApiError
from domaintune.serve.permissions import AUDIT, EXPERIMENTS, KB_MANAGE, KEYS, REVIEW, ROLES
from domaintune.serve.rules.review import ReviewError
from domaintune.serve.store.trail import note
from domaintune.serve.ui.security import PREFIX

# the full /ui path on each route, not an include prefix: audit records name the route's template
router = APIRouter(prefix=PREFIX + "/admin")


BACKEND_ERRORS = (ApiError, ReviewError, ValueError, KeyError, LookupError)  # a user's mistake: 4xx, never 500


def _message(err: Exception) -> str:
    return err.message if isinstance(err, ApiError) else str(err).strip("'\"")


def _page(request, template, who, backend_name, status=200, **values):
    console = request.app.state.console
    backend = console.backend(backend_name)
    return console.page(request, template, who, status=status, configured=backend is not None, **values)


# ------------------------------------------------------------------ keys
@router.get("/keys")
async def keys_page(request: Request):
    console = request.app.state.console
    who = console.require(request, KEYS)
    keys = console.backend("keys")
    return _page(request, "admin_keys.jinja", who, "keys", listed=keys.list() if keys else [], roles=list(ROLES))


def _expiry(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ApiError(400, f"expires_at '{text}' is not a date (YYYY-MM-DD)", code="invalid_value",
                       param="expires_at") from None


@router.post("/keys")
async def create_key(request: Request):
    console = request.app.state.console
    who, form = await console.require_form(request, KEYS)
    keys = console.backend("keys")
    if keys is None:
        return _page(request, "admin_keys.jinja", who, "keys", status=409, listed=[], roles=list(ROLES))
    groups = tuple(g.strip() for g in str(form.get("groups", "")).split(",") if g.strip())
    try:
        key_id, secret = keys.create(str(form.get("name", "")).strip(), str(form.get("role", "user")),
                                     expires_at=_expiry(form.get("expires_at")), user=form.get("user") or None,
                                     groups=groups)
    except BACKEND_ERRORS as err:
        return _page(request, "admin_keys.jinja", who, "keys", status=400, listed=keys.list(), roles=list(ROLES),
                     error=_message(err))
    note(created_key=key_id, role=form.get("role", "user"))  # into this request's audit record (never the secret)
    return _page(request, "admin_keys.jinja", who, "keys", listed=keys.list(), roles=list(ROLES),
                 created={"key_id": key_id, "secret": secret})


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str):
    console = request.app.state.console
    who, _form = await console.require_form(request, KEYS)
    keys = console.backend("keys")
    error = None
    if keys is not None:
        try:
            keys.revoke(key_id)
            note(revoked_key=key_id)
        except BACKEND_ERRORS as err:
            error = _message(err)
    return _page(request, "admin_keys.jinja", who, "keys", status=400 if error else 200,
                 listed=keys.list() if keys else [], roles=list(ROLES), error=error,
                 revoked=None if error else key_id)


# ------------------------------------------------------------------ audit
AUDIT_FILTERS = ("key_id", "route", "status", "since", "until")


def _audit_filters(params) -> dict:
    chosen = {k: params.get(k) or None for k in AUDIT_FILTERS}
    if chosen["status"] is not None:
        if not str(chosen["status"]).isdigit():
            raise ApiError(400, f"status '{chosen['status']}' must be an HTTP status code", code="invalid_value",
                           param="status")
        chosen["status"] = int(chosen["status"])
    for key in ("since", "until"):
        chosen[key] = _expiry(chosen[key]) if chosen[key] else None
    return chosen


@router.get("/audit")
async def audit_page(request: Request):
    console = request.app.state.console
    who = console.require(request, AUDIT)
    audit = console.backend("audit")
    filters = _audit_filters(request.query_params)
    records = audit.query(**filters, limit=200) if audit else []
    return _page(request, "admin_audit.jinja", who, "audit", records=records, filters=request.query_params)


@router.post("/audit/verify")
async def audit_verify(request: Request):
    console = request.app.state.console
    who, _form = await console.require_form(request, AUDIT)
    audit = console.backend("audit")
    verdict = audit.verify() if audit else None
    return _page(request, "admin_audit.jinja", who, "audit", records=audit.query(limit=200) if audit else [],
                 filters={}, verdict=verdict)


# ------------------------------------------------------------------ review
@router.get("/review")
async def review_page(request: Request):
    console = request.app.state.console
    who = console.require(request, REVIEW)
    review = console.backend("review")
    return _page(request, "admin_review.jinja", who, "review", items=review.list("pending") if review else [])


@router.post("/review/{item_id}")
async def review_decide(request: Request, item_id: str):
    console = request.app.state.console
    who, form = await console.require_form(request, REVIEW)
    review = console.backend("review")
    decision, error = str(form.get("decision", "")), None
    if review is not None:
        if decision not in ("approve", "edit", "reject"):
            error = f"decision '{decision}' must be approve, edit or reject"
        else:
            try:
                review.decide(item_id, decision, who.principal,
                              text=str(form.get("text")) if decision == "edit" else None)
            except BACKEND_ERRORS as err:
                error = _message(err)
    return _page(request, "admin_review.jinja", who, "review", status=400 if error else 200,
                 items=review.list("pending") if review else [], error=error,
                 decided=None if error else item_id)


# ------------------------------------------------------------------ experiments, knowledge bases
@router.get("/experiments")
async def experiments_page(request: Request):
    console = request.app.state.console
    who = console.require(request, EXPERIMENTS)
    experiments = console.backend("experiments")
    reports = {name: experiments.report(name) for name in experiments.names()} if experiments else {}
    return _page(request, "admin_experiments.jinja", who, "experiments", reports=reports)


def _kb_view(kb) -> dict:
    return {name: kb.documents(name) for name in kb.names()} if kb else {}


@router.get("/kb")
async def kb_page(request: Request):
    console = request.app.state.console
    who = console.require(request, KB_MANAGE)
    return _page(request, "admin_kb.jinja", who, "kb", bases=_kb_view(console.backend("kb")))


@router.post("/kb/{name}/reindex")
async def kb_reindex(request: Request, name: str):
    console = request.app.state.console
    who, _form = await console.require_form(request, KB_MANAGE)
    kb, error, result = console.backend("kb"), None, None
    if kb is not None:
        try:
            result = kb.reindex(name)
        except BACKEND_ERRORS as err:
            error = _message(err)
    return _page(request, "admin_kb.jinja", who, "kb", status=400 if error else 200, bases=_kb_view(kb),
                 error=error, reindexed=None if error else {"name": name, "result": result})
