"""Compile a template version in a Jinja sandbox and apply it to a request's messages or text.

The sandbox (`ImmutableSandboxedEnvironment`, StrictUndefined) refuses attribute walks such as
`''.__class__.__mro__`, mutation of passed-in objects and undefined names; repetition and power
are capped so a template cannot allocate gigabytes. User text only ever enters as the value of
`input`, never as template source, so a prompt containing `{{ ... }}` is passed through verbatim.
Every template is rendered once with a probe input at load time: a template that fails, fails
before the server starts, naming its file.
"""

from __future__ import annotations

import operator

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from domaintune.errors import ConfigError
from domaintune.serve.templates.spec import TemplateSpec

MAX_OUTPUT_CHARS = 65_536  # one rendered block; far above any real system prompt
MAX_REPEAT = 10_000
FIELDS = ("role", "task", "output_format", "chain_of_thought")


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator_name, left, right):
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent above 64 refused in a prompt template")
            return operator.pow(left, right)
        sizes = [x for x in (left, right) if isinstance(x, int)]
        if any(isinstance(x, (str, list, tuple)) for x in (left, right)) and any(abs(n) > MAX_REPEAT for n in sizes):
            raise SecurityError(f"repetition above {MAX_REPEAT} refused in a prompt template")
        return operator.mul(left, right)


_ENV = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)


class TemplateFailed(Exception):
    """Rendering failed at request time (the message names the template id)."""


class CompiledTemplate:
    def __init__(self, spec: TemplateSpec, source: str):
        self.spec, self.source, self.id = spec, source, spec.id
        self._parts = {name: self._compile(name, getattr(spec, name)) for name in (*FIELDS, "system", "user")}
        self._static: tuple[dict, str] | None = None  # fields and system text depend on the YAML only
        try:
            self.apply_messages([{"role": "user", "content": "probe"}])
        except TemplateFailed as err:
            raise ConfigError([f"template '{spec.id}' cannot render: {err}"], source=source) from None

    def _compile(self, name: str, text: str) -> jinja2.Template:
        try:
            return _ENV.from_string(text)
        except jinja2.TemplateSyntaxError as err:
            raise ConfigError([f"{name}: Jinja syntax error on line {err.lineno}: {err.message}"],
                              source=self.source) from None

    def _render(self, name: str, context: dict) -> str:
        try:
            out = self._parts[name].render(context)
        except (SecurityError, jinja2.TemplateError, TypeError, ValueError, OverflowError) as err:
            raise TemplateFailed(f"template '{self.id}' field '{name}': {type(err).__name__}: {err}") from None
        if len(out) > MAX_OUTPUT_CHARS:
            raise TemplateFailed(f"template '{self.id}' field '{name}' rendered {len(out)} characters "
                                 f"(limit {MAX_OUTPUT_CHARS})")
        return out.strip()

    def _context(self) -> dict:
        spec = self.spec
        context: dict = dict(spec.variables)
        for name in FIELDS:
            context[name] = self._render(name, context) if getattr(spec, name) else ""
        context["examples"] = [ex.model_dump() for ex in spec.examples]
        context["few_shot"] = spec.few_shot
        return context

    def _rendered(self) -> tuple[dict, str]:
        """(context, system text), rendered once: neither depends on the request."""
        if self._static is None:
            context = self._context()
            self._static = context, self._render("system", context)
        return self._static

    def system_text(self) -> str:
        return self._rendered()[1]

    def user_text(self, text: str) -> str:
        return self._render("user", {**self._rendered()[0], "input": text})

    def apply_messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Template system message first (the request's own system text appended to it), the examples as
        prior turns when few_shot is 'messages', the last user turn wrapped by `user`."""
        system = self.system_text()
        own = [m["content"] for m in messages if m["role"] == "system"]
        rest = [dict(m) for m in messages if m["role"] != "system"]
        content = "\n\n".join(t for t in [system, *own] if t)
        out = [{"role": "system", "content": content}] if content else []
        if self.spec.few_shot == "messages":
            for ex in self.spec.examples:
                out += [{"role": "user", "content": self.user_text(ex.input)},
                        {"role": "assistant", "content": ex.output}]
        last_user = max((i for i, m in enumerate(rest) if m["role"] == "user"), default=None)
        if last_user is not None:
            rest[last_user]["content"] = self.user_text(rest[last_user]["content"])
        return out + rest

    def apply_text(self, text: str) -> str:
        """A raw completion prompt: the system text, the examples, then the wrapped input."""
        parts = [self.system_text()]
        if self.spec.few_shot == "messages":
            parts += [f"{self.user_text(ex.input)}\n{ex.output}" for ex in self.spec.examples]
        parts.append(self.user_text(text))
        return "\n\n".join(p for p in parts if p)
