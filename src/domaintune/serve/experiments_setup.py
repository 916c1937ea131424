"""Wire templates, model versions and experiments into an app (called by create_app).

The template library is always installed, so a request's `template` field always means something;
the experiment store (SQLite) is opened only when experiments or model versions are configured.
Backends hang on app.state (`templates`, `experiments`, `models`), None when not configured.
"""

from __future__ import annotations

from pathlib import Path

from domaintune.config.serve import ServeConfig
from domaintune.errors import ConfigError
from domaintune.serve.experiment_store import ExperimentStore
from domaintune.serve.experiments import AuditTee, Experiments
from domaintune.serve.hooks import ModelTemplate
from domaintune.serve.models_registry import ModelRegistry, Served
from domaintune.serve.templates import TemplateRegistry


def install(app, settings: ServeConfig, versions: dict[str, Served] | None = None) -> None:
    path, versions = app.state.path, dict(versions or {})
    templates = TemplateRegistry.from_config(settings.templates)
    app.state.templates, app.state.experiments, app.state.models = templates, None, None
    if isinstance(path.hooks.templates, ModelTemplate):  # a caller's own Templates hook stays in charge
        path.hooks.templates = templates
    configured = {v.id for v in settings.models.versions}
    if configured - set(versions):
        raise ConfigError([f"serve.models.versions: {sorted(configured - set(versions))} are configured but were "
                           f"not loaded (start the server with `domaintune serve CONFIG`)"])
    if not settings.experiments.active and not versions:
        return
    store = ExperimentStore(settings.experiments.store)
    name = path.engine.model_name
    if versions:
        path.models = app.state.models = ModelRegistry(name, Served(path.engine, path.renderer), versions, store)
    if settings.experiments.active:
        experiments = Experiments(settings.experiments, store, name, templates, list(versions))
        path.experiments = app.state.experiments = experiments
        path.hooks.audit = AuditTee(path.hooks.audit, experiments)


def build_versions(settings: ServeConfig, build_engine, base=None) -> dict[str, Served]:
    """One engine per registered version, built by server.build_engine (passed in: server imports this
    module). With engine: vllm each version id is a model name on the same vLLM server (e.g. one LoRA
    adapter per version, `--lora-modules`)."""
    out = {}
    for version in settings.models.versions:
        own = settings.model_copy(update={"vllm": settings.vllm.model_copy(update={"model": version.id})})
        engine, renderer = build_engine(own, Path(version.path), version.id, base)
        out[version.id] = Served(engine, renderer, version.description)
    return out
