"""A small interpreter for the subset of Go's text/template that Ollama chat templates use.

Enough to render our Modelfile TEMPLATEs and compare them with `apply_chat_template` (Ollama's
own renderer is Go; none is installable here): text, `{{ .Field }}`, `{{ $v }}`, `{{ $v := x }}`
and `{{ $v = x }}` (assignment to an outer variable persists, as in Go >= 1.11), `if` / `else if`
/ `else` / `end`, integer literals, `range .List` and `range $i, $m := .List`, the functions `eq ne and or not`,
parentheses, string literals, and the `{{-` / `-}}` whitespace trims. Anything else is an error,
so a template this renders is one Go renders the same way.
"""

from __future__ import annotations

import re
from typing import Any

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


class TemplateError(ValueError):
    pass


def _lex(template: str) -> list[tuple[str, str]]:
    """[('text', s) | ('action', s)], with trim markers applied to the neighbouring text."""
    out: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        pos, trim_next = m.end(), bool(m.group(3))
    tail = template[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return [t for t in out if t != ("text", "")]


def _parse(tokens: list[tuple[str, str]], i: int = 0, stop: tuple[str, ...] = ()) -> tuple[list, int, str]:
    """Nodes until an action starting with one of `stop` (returned with its text)."""
    nodes: list = []
    while i < len(tokens):
        kind, value = tokens[i]
        i += 1
        if kind == "text":
            nodes.append(("text", value))
            continue
        word = value.split(" ", 1)[0]
        if word in stop or (value.startswith("else") and "else" in stop):
            return nodes, i, value
        if word == "if":
            nodes.append(_parse_if(tokens, i, value[3:]))
            i = nodes[-1][-1]
        elif word == "range":
            body, i, _ = _parse(tokens, i, ("end",))
            nodes.append(("range", value[6:].strip(), body))
        elif word in ("end", "else"):
            raise TemplateError(f"unexpected {{{{ {value} }}}}")
        else:
            nodes.append(("action", value))
    if stop:
        raise TemplateError(f"missing {{{{ {stop[0]} }}}}")
    return nodes, i, ""


def _parse_if(tokens, i: int, cond: str) -> tuple:
    branches = []
    while True:
        body, i, closer = _parse(tokens, i, ("end", "else"))
        branches.append((cond.strip(), body))
        if closer == "end":
            return ("if", branches, i)
        rest = closer[4:].strip()
        cond = rest[3:] if rest.startswith("if ") else "true"


class _Scope:
    def __init__(self, root: Any):
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def get(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f"undefined variable {name}")

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"assignment to undeclared variable {name}")


def _field(obj: Any, path: list[str]) -> Any:
    for part in path:
        obj = obj.get(part, "") if isinstance(obj, dict) else getattr(obj, part, "")
    return obj


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+')
_FUNCS = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "not": lambda a: not a,
          "and": lambda *a: next((x for x in a if not x), a[-1]),
          "or": lambda *a: next((x for x in a if x), a[-1])}


def _group(tokens: list[str]) -> list:
    """Nest parenthesized sub-expressions: ['eq', ['len', '.X'], '"a"']."""
    stack: list[list] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise TemplateError("unbalanced ')'")
            inner = stack.pop()
            stack[-1].append(inner)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise TemplateError("unbalanced '('")
    return stack[0]


def _value(term: Any, dot: Any, scope: _Scope) -> Any:
    if isinstance(term, list):
        return _call(term, dot, scope)
    if term.startswith('"'):
        return term[1:-1].encode().decode("unicode_escape")
    if term in ("true", "false"):
        return term == "true"
    if re.fullmatch(r"-?\d+", term):
        return int(term)
    if term == ".":
        return dot
    if term.startswith("."):
        return _field(dot, term[1:].split("."))
    if term.startswith("$"):
        name, *path = term.split(".")
        return _field(scope.get(name), path)
    raise TemplateError(f"unsupported term {term!r}")


def _call(terms: list, dot: Any, scope: _Scope) -> Any:
    if len(terms) == 1:
        return _value(terms[0], dot, scope)
    fn = terms[0]
    if not isinstance(fn, str) or fn not in _FUNCS:
        raise TemplateError(f"unsupported function {fn!r}")
    return _FUNCS[fn](*(_value(t, dot, scope) for t in terms[1:]))


def _eval(expr: str, dot: Any, scope: _Scope) -> Any:
    return _call(_group(_TOKEN.findall(expr)), dot, scope)


def _run(nodes: list, dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "action":
            m = re.fullmatch(r"(\$\w+)\s*(:?=)\s*(.+)", node[1], re.S)
            if m and m.group(2) == ":=":
                scope.frames[-1][m.group(1)] = _eval(m.group(3), dot, scope)
            elif m:
                scope.assign(m.group(1), _eval(m.group(3), dot, scope))
            else:
                value = _eval(node[1], dot, scope)
                out.append("" if value is None else str(value))
        elif node[0] == "if":
            for cond, body in node[1]:
                if _eval(cond, dot, scope):
                    scope.frames.append({})
                    _run(body, dot, scope, out)
                    scope.frames.pop()
                    break
        else:  # range
            m = re.fullmatch(r"(?:(\$\w+)\s*,\s*(\$\w+)\s*:=\s*)?(.+)", node[1])
            for index, item in enumerate(_eval(m.group(3), dot, scope) or []):
                scope.frames.append({m.group(1): index, m.group(2): item} if m.group(1) else {})
                _run(node[2], item, scope, out)
                scope.frames.pop()


def render(template: str, data: dict[str, Any]) -> str:
    """Render `template` with `data` as dot (e.g. {"Messages": [{"Role": ..., "Content": ...}]})."""
    nodes, _, _ = _parse(_lex(template))
    out: list[str] = []
    _run(nodes, data, _Scope(data), out)
    return "".join(out)
