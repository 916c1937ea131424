"""All template versions the server knows (shipped library + the config's folders), chosen per request.

Selection order: the request's `template` field, else the template bound to the route
(`serve.templates.routes`), else `serve.templates.default`, else none (the model's chat template
alone). An A/B arm sets the request's template before this runs. 'name' means the newest version,
'name@3' pins one; the chosen id goes into the audit record (template_id).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from domaintune.errors import ConfigError
from domaintune.serve.errors import ApiError
from domaintune.serve.hooks import Principal, Prompt
from domaintune.serve.templates.render import CompiledTemplate, TemplateFailed
from domaintune.serve.templates.spec import read_template

LIBRARY = Path(__file__).parent / "library"


class TemplateRegistry:
    def __init__(self, dirs: list[str | Path] = (), default: str | None = None,
                 routes: dict[str, str] | None = None):
        self._versions: dict[str, dict[int, CompiledTemplate]] = {}
        for folder in [LIBRARY, *map(Path, dirs)]:
            if not folder.is_dir():
                raise ConfigError([f"serve.templates.dirs: folder not found: {folder}"])
            for file in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                self._add(CompiledTemplate(read_template(file), str(file)))
        self.default, self.routes = default, dict(routes or {})
        for key, ref in [("default", default), *((f"routes.{r}", t) for r, t in self.routes.items())]:
            if ref is not None and self.find(ref) is None:
                raise ConfigError([f"serve.templates.{key}: unknown template '{ref}'{self._suggest(ref)}"])

    @classmethod
    def from_config(cls, cfg) -> TemplateRegistry:
        return cls(cfg.dirs, cfg.default, cfg.routes)

    def _add(self, tpl: CompiledTemplate) -> None:
        versions = self._versions.setdefault(tpl.spec.name, {})
        if tpl.spec.version in versions:
            raise ConfigError([f"template '{tpl.id}' is defined twice: {versions[tpl.spec.version].source} and "
                               f"{tpl.source}; bump the version of the changed one"])
        versions[tpl.spec.version] = tpl

    def _suggest(self, ref: str) -> str:
        from domaintune.registry import suggest

        return suggest(ref.partition("@")[0], sorted(self._versions))

    def find(self, ref: str) -> CompiledTemplate | None:
        name, _, version = ref.partition("@")
        versions = self._versions.get(name)
        if not versions:
            return None
        if not version:
            return versions[max(versions)]
        return versions.get(int(version)) if version.isdigit() else None

    def names(self) -> list[str]:
        return sorted(self._versions)

    def describe(self) -> list[dict]:
        return [{"id": t.id, "name": t.spec.name, "version": t.spec.version, "language": t.spec.language,
                 "description": t.spec.description}
                for name in self.names() for _, t in sorted(self._versions[name].items())]

    def choose(self, prompt: Prompt) -> CompiledTemplate | None:
        ref = prompt.template or self.routes.get(prompt.route) or self.default
        if ref is None:
            return None
        found = self.find(ref)
        if found is None:
            raise ApiError(400, f"unknown template '{ref}'{self._suggest(ref)}; GET /v1/templates lists them",
                           code="template_not_found", param="template")
        return found

    def apply(self, principal: Principal, prompt: Prompt) -> Prompt:
        tpl = self.choose(prompt)
        if tpl is None:
            return prompt
        try:
            if prompt.messages is not None:
                return dataclasses.replace(prompt, messages=tpl.apply_messages(prompt.messages), template_id=tpl.id)
            return dataclasses.replace(prompt, text=tpl.apply_text(prompt.text or ""), template_id=tpl.id)
        except TemplateFailed as err:
            raise ApiError(400, str(err), code="template_error", param="template") from None
