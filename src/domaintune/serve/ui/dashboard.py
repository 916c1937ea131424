"""The run dashboard: every run under the console's runs_dir, and one run's stages, reports and plots."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse

from domaintune.serve.errors import ApiError
from domaintune.serve.permissions import RUNS
from domaintune.serve.ui import runs
from domaintune.serve.ui.security import PREFIX

# the full /ui path on each route, not an include prefix: audit records name the route's template
router = APIRouter(prefix=PREFIX)


def _runs_dir(console) -> Path | None:
    configured = console.settings.runs_dir
    return Path(configured) if configured is not None else None


@router.get("/runs")
async def runs_page(request: Request):
    console = request.app.state.console
    who = console.require(request, RUNS)
    runs_dir = _runs_dir(console)
    listed = runs.list_runs(runs_dir) if runs_dir else None
    return console.page(request, "runs.jinja", who, runs=listed, runs_dir=runs_dir)


@router.get("/runs/{name}")
async def run_page(request: Request, name: str):
    console = request.app.state.console
    who = console.require(request, RUNS)
    runs_dir = _runs_dir(console)
    view = runs.run_view(runs_dir, name) if runs_dir else None
    if view is None:
        return console.page(request, "error.jinja", who, status=404, message_key="runs.not_found")
    return console.page(request, "run.jinja", who, run=view)


@router.get("/runs/{name}/image")
async def run_image(request: Request, name: str, path: str):
    console = request.app.state.console
    console.require(request, RUNS)
    runs_dir = _runs_dir(console)
    found = runs.image_path(runs_dir, name, path) if runs_dir else None
    if found is None:
        raise ApiError(404, f"run '{name}' shows no image '{path}'", code="not_found")
    return FileResponse(found, media_type="image/png")
