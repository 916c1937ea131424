"""Chat templates: the tokenizer's own (default), a shipped named one, or a custom Jinja file.

The resolved template is set on the tokenizer, and the tokenizer is saved with the trained
model, so export and serving format prompts exactly as training did. Shipped templates mark
assistant turns with `{% generation %}`, so transformers returns the assistant-token mask
directly; other templates are masked by incremental rendering (see masking.py).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from domaintune.errors import ConfigError
from domaintune.registry import suggest


def named_templates() -> list[str]:
    folder = resources.files("domaintune.instruct") / "templates"
    return sorted(p.name.removesuffix(".jinja") for p in folder.iterdir() if p.name.endswith(".jinja"))


def load_template(spec: str | None, tokenizer) -> str:
    """The Jinja source for `spec`: None -> the tokenizer's own, a shipped name, or a file path."""
    if spec is None:
        if not tokenizer.chat_template:
            raise ConfigError([f"sft.template: the tokenizer has no chat template; name one of "
                               f"{', '.join(named_templates())} or give a .jinja file"])
        return tokenizer.chat_template
    if spec in named_templates():
        return (resources.files("domaintune.instruct") / "templates" / f"{spec}.jinja").read_text(encoding="utf-8")
    path = Path(spec)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError([f"sft.template: '{spec}' is neither a shipped template "
                       f"({', '.join(named_templates())}){suggest(spec, named_templates())} nor an existing file"])


def template_problem(spec: str | None) -> str | None:
    """For `domaintune validate`: a named/path template that cannot be found (None: fine)."""
    if spec is None or spec in named_templates() or Path(spec).is_file():
        return None
    return (f"sft.template: '{spec}' is neither a shipped template ({', '.join(named_templates())})"
            f"{suggest(spec, named_templates())} nor an existing file")


def apply_template(tokenizer, spec: str | None) -> str:
    """Set the resolved template on the tokenizer (it is saved with it) and return it."""
    tokenizer.chat_template = load_template(spec, tokenizer)
    return tokenizer.chat_template


def has_generation_marks(template: str) -> bool:
    return "{% generation %}" in template or "{%- generation %}" in template
