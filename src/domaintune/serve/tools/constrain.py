"""The JSON schema a forced tool call is decoded under (tool_choice `required` or a named function).

When the client forces a call, the first model turn is constrained (engine/constrained.py on the CPU
engine, vLLM's structured outputs on the GPU engine) to one call object:
`{"name": <an allowed function>, "arguments": {...valid against that function's parameters}}`, so even
a weak model answers with a valid call. Only the client's tool_choice turns this on: retrieved text or a
tool result can never force a call, and the names are only those the request's plan allows.

The supported subset of JSON Schema is checked at admission, and anything outside it is a 400 naming the
parameter and the keyword — never a silent fallback to unconstrained decoding.
"""

from __future__ import annotations

from domaintune.serve.errors import invalid

SCALARS = {"string", "number", "integer", "boolean", "null"}
ANNOTATIONS = {"description", "title", "default", "examples", "$comment"}
KEYWORDS = {  # per type: the keywords the constraint enforces
    "string": {"minLength", "maxLength", "pattern"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "boolean": set(),
    "null": set(),
    "array": {"items", "minItems", "maxItems"},
    "object": {"properties", "required", "additionalProperties"},
}
SUPPORTED = ("object (properties, required), string (minLength, maxLength, pattern), number/integer "
             "(minimum, maximum), boolean, null, enum, const, array (items, minItems, maxItems)")


def _refuse(param: str, why: str):
    raise invalid(f"{param}: {why}; a forced tool_choice decodes the call under the tool's schema, which "
                  f"supports {SUPPORTED}. Simplify the schema or use tool_choice 'auto'", param)


def _narrowed(schema, param: str) -> dict:
    """A copy of a supported schema in which objects allow only their declared properties (a subset of what
    the schema accepts, so every constrained call is still valid); 400 for anything unsupported."""
    if not isinstance(schema, dict):
        _refuse(param, "a schema must be an object")
    keys = set(schema) - ANNOTATIONS
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        if not isinstance(values, list) or not values or any(isinstance(v, dict | list) for v in values):
            _refuse(param, "enum/const values must be a non-empty list of strings, numbers, booleans or null")
        extra = keys - {"enum", "const", "type"}
        if extra:
            _refuse(f"{param}.{sorted(extra)[0]}", "not supported next to enum/const")
        return {k: schema[k] for k in ("enum", "const", "type") if k in schema}
    kind = schema.get("type")
    if isinstance(kind, list):
        if not kind or not set(kind) <= SCALARS or keys - {"type"}:
            _refuse(f"{param}.type", "a list of types may only name scalar types, with no other keywords")
        return {"type": kind}
    if kind not in KEYWORDS:
        unknown = sorted(keys - {"type"})
        where = f"{param}.{unknown[0]}" if kind is None and unknown else f"{param}.type"
        _refuse(where, f"type {kind!r} is not supported" if kind is not None else
                "every schema needs a `type` (or an enum/const)")
    extra = keys - {"type"} - KEYWORDS[kind]
    if extra:
        _refuse(f"{param}.{sorted(extra)[0]}", f"keyword not supported for type {kind!r}")
    out = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
    if kind == "array":
        if "items" not in schema:
            _refuse(f"{param}.items", "an array needs an `items` schema")
        out["items"] = _narrowed(schema["items"], f"{param}.items")
    if kind == "object":
        out = _object(schema, param)
    return out


def _object(schema: dict, param: str) -> dict:
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        _refuse(f"{param}.properties", "must map property names to schemas")
    extra = schema.get("additionalProperties", False)
    if not isinstance(extra, bool):
        _refuse(f"{param}.additionalProperties", "a schema for additional properties is not supported "
                "(declare the properties)")
    required = schema.get("required", [])
    missing = [name for name in required if name not in props] if isinstance(required, list) else None
    if missing is None or missing:
        _refuse(f"{param}.required", "must list declared properties only"
                + (f" ('{missing[0]}' is not in properties)" if missing else ""))
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": {name: _narrowed(sub, f"{param}.properties.{name}") for name, sub in props.items()}}


def arguments_schema(parameters: dict | None, param: str) -> dict:
    """The constraint for one function's arguments (a JSON object)."""
    schema = parameters if parameters is not None else {"type": "object", "properties": {}}
    if not isinstance(schema, dict) or schema.get("type") != "object":
        _refuse(f"{param}.type", "a function's parameters must be a schema of type 'object'")
    return _narrowed(schema, param)


def call_schema(specs: list[dict], names: list[str], params: dict[str, str]) -> dict:
    """The schema of one call object to one of `names` (in the order a call is parsed: name, then arguments)."""
    from domaintune.extras import MissingExtra
    from domaintune.serve.engine.constrained import schema_grammar

    by_name = {s["function"]["name"]: s["function"] for s in specs}
    options = []
    for name in names:
        param = params[name]
        options.append({"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                        "properties": {"name": {"const": name},
                                       "arguments": arguments_schema(by_name[name].get("parameters"), param)}})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    try:
        schema_grammar(schema)  # what llguidance cannot compile (a bad pattern) fails here, not in the engine
    except MissingExtra as err:
        raise invalid(f"tool_choice: a forced call needs constrained decoding: {err}", "tool_choice") from None
    except ValueError as err:
        raise invalid(f"{params[names[0]] if len(names) == 1 else 'tools'}: the schema cannot be used to "
                      f"constrain the call: {err}", params[names[0]] if len(names) == 1 else "tools") from None
    return schema
