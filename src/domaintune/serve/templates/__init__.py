"""Versioned prompt templates (YAML, Jinja in a sandbox) and the registry that applies them per request."""

from domaintune.serve.templates.registry import TemplateRegistry
from domaintune.serve.templates.spec import TemplateSpec

__all__ = ["TemplateRegistry", "TemplateSpec"]
