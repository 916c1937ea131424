"""GET/DELETE /v1/sessions[/{id}] (a principal's own sessions) and DELETE /v1/users/{user} (erasure).

Each route authenticates and checks its permission first (deny by default), and is audited like
the generation routes: one record per request, failures included.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request

from domaintune.serve.errors import ApiError
from domaintune.serve.permissions import SESSIONS, USERS
from domaintune.serve.pipeline import new_record

router = APIRouter()


def _audited(request: Request, route: str, permission: str, work: Callable) -> dict:
    path, record, started = request.app.state.path, new_record(route), time.perf_counter()
    try:
        principal = path.principal(request, permission)
        record.principal, record.tenant, record.key_id = principal.id, principal.tenant, principal.key_id
        record.subject = principal.user or principal.id
        result = work(principal, record)
    except ApiError as err:
        record.status, record.error_code = err.status, err.code
        raise
    else:
        record.status = 200
        return result
    finally:
        record.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        path.hooks.audit.record(record)


def _sessions(request: Request):
    sessions = request.app.state.sessions
    if sessions is None:
        raise ApiError(404, "this server keeps no sessions (serve.sessions.enabled is false)",
                       code="sessions_disabled")
    return sessions


@router.get("/v1/sessions")
async def list_sessions(request: Request):
    return _audited(request, "/v1/sessions", SESSIONS,
                    lambda p, _r: {"object": "list", "data": _sessions(request).list(p)})


@router.get("/v1/sessions/{session_id}")
async def get_session(request: Request, session_id: str):
    def work(principal, record):
        record.session_id = session_id
        sessions = _sessions(request)
        return {**sessions.info(principal, session_id), "object": "session",
                "messages": sessions.messages(principal, session_id)}
    return _audited(request, "/v1/sessions/{session_id}", SESSIONS, work)


@router.delete("/v1/sessions/{session_id}")
async def delete_session(request: Request, session_id: str):
    def work(principal, record):
        record.session_id = session_id
        _sessions(request).delete(principal, session_id)
        return {"id": session_id, "object": "session.deleted", "deleted": True}
    return _audited(request, "/v1/sessions/{session_id}", SESSIONS, work)


@router.delete("/v1/users/{user}")
async def erase_user(request: Request, user: str):
    records = request.app.state.records
    return _audited(request, "/v1/users/{user}", USERS,
                    lambda p, r: _erase(records, user, p, r))


def _erase(records, user: str, principal, record) -> dict:
    if records is None or records.vault is None:
        raise ApiError(404, "this server stores no user data (audit, sessions and cache are off)",
                       code="records_disabled")
    record.user = user
    return records.erase(user, by=principal.id, tenant=principal.tenant, audit=False)
