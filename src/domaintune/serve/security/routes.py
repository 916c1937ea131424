"""Key management over the API (permission KEYS): list, create (the token is in this one response), revoke."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from domaintune.serve.errors import ApiError
from domaintune.serve.permissions import KEYS
from domaintune.serve.store.trail import note

router = APIRouter()


def _store(request: Request):
    store = request.app.state.keys
    if store is None:
        raise ApiError(404, "API keys are not configured (serve.auth)", code="not_configured")
    return store


@router.get("/v1/keys")
async def list_keys(request: Request):
    request.app.state.path.principal(request, KEYS)
    return {"object": "list", "data": _store(request).list()}


@router.post("/v1/keys")
async def create_key(request: Request):
    from domaintune.serve.pipeline import read_body

    request.app.state.path.principal(request, KEYS)
    store = _store(request)
    try:
        body = json.loads(await read_body(request, 65536) or b"{}")
        key_id, token = store.create(str(body["name"]), str(body["role"]), expires_at=body.get("expires_at"),
                                     scopes=body.get("scopes"), user=body.get("user"),
                                     groups=tuple(body.get("groups") or ()), limits=body.get("limits"))
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ApiError(400, f"cannot create the key: {type(err).__name__}: {err}; send name, role and optional "
                            "expires_at, scopes, user, groups, limits", code="invalid_value") from None
    note(action="create", key=key_id, role=body["role"])  # in the request's audit record; never the token
    return {"key_id": key_id, "token": token}


@router.delete("/v1/keys/{key_id}")
async def revoke_key(request: Request, key_id: str):
    request.app.state.path.principal(request, KEYS)
    note(action="revoke", key=key_id)
    try:
        _store(request).revoke(key_id)
    except KeyError:
        raise ApiError(404, f"no key '{key_id}'", code="not_found") from None
    return {"key_id": key_id, "revoked": True}
