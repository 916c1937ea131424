"""Routes of the experiments layer: feedback (users) and read-only views of templates, experiments and
model versions (EXPERIMENTS). Each route checks its permission first; a layer that is not
configured answers 404 with what to configure."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from domaintune.serve.errors import ApiError, invalid
from domaintune.serve.permissions import EXPERIMENTS, FEEDBACK
from domaintune.serve.pipeline import read_body

router = APIRouter()


def _need(request: Request, name: str, key: str):
    found = getattr(request.app.state, name, None)
    if found is None:
        raise ApiError(404, f"{name} are not configured on this server (serve.{key} in the config)",
                       code="not_configured")
    return found


@router.post("/v1/feedback")
async def feedback(request: Request):
    principal = request.app.state.path.principal(request, FEEDBACK)
    experiments = _need(request, "experiments", "experiments.active")
    body = await read_body(request, request.app.state.path.settings.max_body_bytes)  # counted as it arrives
    try:
        parsed = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as err:
        raise invalid(f"the request body is not valid JSON: {err}", None, code="invalid_json") from None
    return experiments.feedback(principal, parsed)


@router.get("/v1/experiments")
async def experiments_list(request: Request):
    request.app.state.path.principal(request, EXPERIMENTS)
    experiments = _need(request, "experiments", "experiments.active")
    return {"object": "list", "data": [{"name": n, "model": experiments.get(n).model,
                                        "enabled": experiments.get(n).cfg.enabled,
                                        "variants": [v.model_dump() for v in experiments.get(n).cfg.variants]}
                                       for n in experiments.names()]}


@router.get("/v1/experiments/{name}/report")
async def experiment_report(request: Request, name: str):
    request.app.state.path.principal(request, EXPERIMENTS)
    return _need(request, "experiments", "experiments.active").report(name)


@router.get("/v1/templates")
async def templates_list(request: Request):
    request.app.state.path.principal(request, EXPERIMENTS)
    return {"object": "list", "data": _need(request, "templates", "templates").describe()}


@router.get("/v1/model-versions")
async def model_versions(request: Request):
    request.app.state.path.principal(request, EXPERIMENTS)
    return _need(request, "models", "models.versions").describe()
