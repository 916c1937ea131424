"""The `serve.templates`, `serve.experiments` and `serve.models` sections: prompt templates, A/B
experiments and registered model versions (see docs/serve-experiments.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from domaintune.config.base import FilePath, Section

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
TEMPLATE_REF = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(@[0-9]+)?$"


class TemplatesConfig(Section):
    dirs: list[FilePath] = Field(default_factory=list, description="Folders of your own template YAML files "
                                 "(relative to the config file), next to the shipped library.")
    default: str | None = Field(None, pattern=TEMPLATE_REF, description="Template applied when neither the "
                                "request nor its route names one ('name' = latest version, 'name@2' pinned); "
                                "none: the model's own chat template only.")
    routes: dict[str, str] = Field(default_factory=dict, description="Route path -> template bound to it, e.g. "
                                   "{'/v1/chat/completions': 'qa-grounded'}; a request's `template` field wins.")

    @model_validator(mode="after")
    def _routes_are_generation(self) -> TemplatesConfig:
        allowed = {"/v1/chat/completions", "/v1/completions"}
        for route in self.routes:
            if route not in allowed:
                raise ValueError(f"routes: '{route}' is not a generation route; use one of {sorted(allowed)}")
        return self


class VariantConfig(Section):
    name: str = Field(pattern=ID_PATTERN, description="The arm's name, recorded as '<experiment>:<name>'.")
    weight: float = Field(gt=0, description="Relative share of the traffic (weights need not sum to 1 or 100).")
    template: str | None = Field(None, pattern=TEMPLATE_REF, description="Template this arm applies.")
    model: str | None = Field(None, pattern=ID_PATTERN, description="Model version id this arm answers with "
                                                                     "(one of serve.models.versions).")

    @model_validator(mode="after")
    def _changes_something(self) -> VariantConfig:
        if self.template is None and self.model is None:
            raise ValueError(f"variant '{self.name}': give a template, a model version, or both")
        return self


class ExperimentConfig(Section):
    name: str = Field(pattern=ID_PATTERN, description="Experiment name (`domaintune ab report CFG NAME`).")
    enabled: bool = Field(True, description="false: stop assigning new requests (the report still reads).")
    model: str | None = Field(None, description="The model id whose requests are split; default: the served "
                                                "model name. Requests that pin a `template` are not enrolled.")
    unit: Literal["user", "key"] = Field("user", description="Hash unit: user (the key's user, else the request's "
                                         "`user` field, else the key) or key (the API key id).")
    variants: list[VariantConfig] = Field(min_length=2, description="The arms; the first is the control.")

    @model_validator(mode="after")
    def _unique_variants(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment '{self.name}': variant names must be unique (got {names})")
        return self


class ExperimentsConfig(Section):
    store: FilePath = Field("serve-experiments.db", description="SQLite file for assignments, feedback and model "
                            "promotions (relative to the config file); created on first use.")
    active: list[ExperimentConfig] = Field(default_factory=list, description="The experiments; a request joins "
                                           "the first enabled one whose model it asks for.")

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentsConfig:
        names = [e.name for e in self.active]
        if len(set(names)) != len(names):
            raise ValueError(f"active: experiment names must be unique (got {names})")
        return self


class ModelVersionConfig(Section):
    id: str = Field(pattern=ID_PATTERN, description="The model id clients send to reach this version directly.")
    path: FilePath = Field(description="Model folder (full model or adapter), relative to the config file.")
    description: str = Field("", description="Shown by `domaintune serve-models list`.")


class ModelsConfig(Section):
    versions: list[ModelVersionConfig] = Field(default_factory=list, description="Registered model versions, "
                                               "each served by its own engine next to the run's model.")

    @model_validator(mode="after")
    def _unique_ids(self) -> ModelsConfig:
        ids = [v.id for v in self.versions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"versions: ids must be unique (got {ids})")
        return self


def experiment_problems(serve) -> list[str]:
    """Cross-section checks for `domaintune validate`: every arm's model version is registered, every
    version folder and template folder exists. Template names resolve when the server starts."""
    from pathlib import Path

    versions = {v.id for v in serve.models.versions}
    problems = [f"serve.models.versions[{i}].path: folder not found: {v.path}"
                for i, v in enumerate(serve.models.versions) if not Path(v.path).is_dir()]
    problems += [f"serve.templates.dirs[{i}]: folder not found: {d}" for i, d in enumerate(serve.templates.dirs)
                 if not Path(d).is_dir()]
    for i, exp in enumerate(serve.experiments.active):
        for j, arm in enumerate(exp.variants):
            if arm.model is not None and arm.model not in versions:
                problems.append(f"serve.experiments.active[{i}].variants[{j}].model: '{arm.model}' is not a "
                                f"registered version; add it to serve.models.versions (have: {sorted(versions)})")
    return problems
