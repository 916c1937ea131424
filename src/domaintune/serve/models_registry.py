"""Several model versions behind one server: each registered version is its own engine, reachable by
its id; the served model name is an alias that points at the promoted version (the run's own model
until something is promoted). Promotion and rollback are rows in the experiment store, written by
one audited command (`domaintune serve-models promote|rollback`); a running server reads the alias
on every request, so a promotion takes effect on the next request without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from domaintune.errors import ConfigError
from domaintune.serve.errors import ApiError
from domaintune.serve.experiment_store import ExperimentStore
from domaintune.serve.hooks import Auditor, AuditRecord


@dataclass
class Served:
    engine: object
    renderer: object
    description: str = ""


class ModelRegistry:
    def __init__(self, alias: str, primary: Served, versions: dict[str, Served], store: ExperimentStore):
        if alias in versions:
            raise ConfigError([f"serve.models.versions: id '{alias}' is the served model name itself; the name is "
                               f"the alias of the promoted version, so give the version another id"])
        self.alias, self.primary, self.versions, self.store = alias, primary, versions, store
        active = store.active_version(alias)
        if active is not None and active not in versions:
            raise ConfigError([f"serve.models: '{alias}' is promoted to version '{active}', which is not in "
                               f"serve.models.versions; register it or run `domaintune serve-models rollback`"])

    def ids(self) -> list[str]:
        return [self.alias, *self.versions]

    def active(self) -> str | None:
        return self.store.active_version(self.alias)

    def resolve(self, model_id: str) -> Served:
        if model_id == self.alias:
            active = self.active()
            return self.versions.get(active, self.primary)
        if model_id in self.versions:
            return self.versions[model_id]
        raise ApiError(404, f"the model '{model_id}' does not exist; this server serves {self.ids()} "
                            f"(GET /v1/models)", code="model_not_found", param="model")

    def start(self) -> None:
        for served in self.versions.values():
            served.engine.start()

    def stop(self) -> None:
        for served in self.versions.values():
            served.engine.stop()

    def describe(self) -> dict:
        return {"alias": self.alias, "active": self.active(),
                "versions": [{"id": vid, "description": s.description} for vid, s in self.versions.items()],
                "history": self.store.model_history(self.alias)}


def _stack(history: list[dict]) -> list[str]:
    """The promotion stack after replaying the log: promote pushes, rollback pops."""
    stack: list[str] = []
    for event in history:
        if event["action"] == "promote":
            stack.append(event["version"])
        elif stack:
            stack.pop()
    return stack


def change(store: ExperimentStore, alias: str, action: str, version: str | None, known: list[str], actor: str,
           auditor: Auditor) -> dict:
    """Promote `version` (or roll back one step) for `alias`, record it and audit it; returns the new state."""
    stack = _stack(store.model_history(alias))
    previous = stack[-1] if stack else None
    if action == "promote":
        if version not in known:
            raise ConfigError([f"version '{version}' is not registered in serve.models.versions (have: {known})"])
        if version == previous:
            raise ConfigError([f"'{alias}' already points at version '{version}'"])
        target = version
    else:
        if not stack:
            raise ConfigError([f"nothing to roll back: '{alias}' already serves the run's own model"])
        target = stack[-2] if len(stack) > 1 else None
    seq = store.model_event(alias, action, target, previous, actor)
    auditor.record(AuditRecord(request_id=f"model-event-{seq}", route=f"cli:serve-models {action}",
                               principal=actor, tenant="default", status=200, model=target or alias,
                               detail={"alias": alias, "version": target or "", "previous": previous or ""}))
    return {"alias": alias, "action": action, "active": target, "previous": previous, "seq": seq}
