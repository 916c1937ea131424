"""What a chat request may do with tools, decided at admission (400/403 before the engine runs).

The plan is the server-side policy the tool loop enforces: only names it lists can ever be called,
whatever text reaches the model (retrieved passages, tool results, earlier turns). A request enables
a server-side tool by listing its name in `tools` (no `parameters`: the server's schema is used) or
through the tool's `auto: true`; everything else in `tools` is a client-side tool returned to the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domaintune.serve.errors import ApiError, invalid
from domaintune.serve.hooks import Principal
from domaintune.serve.protocol import ChatRequest, NamedToolChoice
from domaintune.serve.tools.constrain import call_schema
from domaintune.serve.tools.registry import jsonschema

EMPTY_OBJECT = {"type": "object", "properties": {}}


@dataclass
class ToolPlan:
    specs: list[dict] = field(default_factory=list)  # OpenAI function specs offered to the model, in order
    client: set[str] = field(default_factory=set)  # the client executes these
    server: set[str] = field(default_factory=set)  # the server executes these (enabled for THIS request)
    choice: str = "auto"  # none | auto | required | named
    forced: str | None = None  # the function of a named tool_choice
    parallel: bool = True
    json_schema: dict | None = None  # the call object the first turn is decoded under when a call is forced

    @property
    def offered(self) -> bool:
        """Tools are rendered into the prompt and the model's output is parsed for calls."""
        return bool(self.specs) and self.choice != "none"


def _has_tool_history(req: ChatRequest) -> bool:
    return any(m.role == "tool" or m.tool_calls for m in req.messages)


def plan_tools(req: ChatRequest, principal: Principal, runtime) -> ToolPlan | None:
    """None for a request that involves no tools at all (the plain chat path runs unchanged)."""
    auto = runtime.offered(principal) if runtime is not None else []
    if not req.tools and not auto and not _has_tool_history(req):
        if req.tool_choice not in (None, "none"):
            raise invalid("tool_choice needs tools: list the functions in `tools`", "tool_choice")
        return None
    _check_history(req)
    plan = ToolPlan(parallel=req.parallel_tool_calls)
    for i, tool in enumerate(req.tools or []):
        _add_requested(plan, tool.function, i, principal, runtime)
    for tool in auto:
        if tool.name not in plan.server:
            plan.server.add(tool.name)
            plan.specs.append(tool.spec())
    _apply_choice(plan, req.tool_choice, bool(req.tools))
    if plan.choice in ("required", "named"):
        plan.json_schema = _forced_schema(plan, req)
    if plan.offered and req.n > 1:
        raise invalid(f"n={req.n} cannot be combined with tools (one choice per request with tools)", "n")
    return plan


def _add_requested(plan: ToolPlan, fn, i: int, principal: Principal, runtime) -> None:
    name = fn.name
    if name in plan.client or name in plan.server:
        raise invalid(f"tool '{name}' is listed twice", f"tools.{i}.function.name")
    server_tool = runtime.tools.get(name) if runtime is not None else None
    if server_tool is None:
        schema = fn.parameters if fn.parameters is not None else EMPTY_OBJECT
        schemas = jsonschema()
        try:
            schemas.Draft202012Validator.check_schema(schema)
        except schemas.SchemaError as err:
            raise invalid(f"tools.{i}.function.parameters is not a valid JSON schema: {err.message}",
                          f"tools.{i}.function.parameters") from None
        plan.client.add(name)
        plan.specs.append({"type": "function", "function": {"name": name, "description": fn.description or "",
                                                            "parameters": schema}})
        return
    if fn.parameters is not None and fn.parameters != server_tool.parameters:
        raise invalid(f"'{name}' is a server-side tool: omit `parameters` (the server's schema is used)",
                      f"tools.{i}.function.parameters")
    reason = server_tool.refusal(principal)
    if reason:
        raise ApiError(403, f"server-side tool '{name}': {reason}", code="permission_denied",
                       param=f"tools.{i}.function.name")
    plan.server.add(name)
    plan.specs.append(server_tool.spec())


def _apply_choice(plan: ToolPlan, choice, listed: bool) -> None:
    if isinstance(choice, NamedToolChoice):
        names = {s["function"]["name"] for s in plan.specs}
        if choice.function.name not in names:
            raise invalid(f"tool_choice names '{choice.function.name}', which is not in `tools`",
                          "tool_choice.function.name")
        plan.choice, plan.forced = "named", choice.function.name
    elif choice is not None:
        if choice == "required" and not plan.specs:
            raise invalid("tool_choice 'required' needs tools: list the functions in `tools`", "tool_choice")
        plan.choice = choice
    elif not listed and not plan.specs:
        plan.choice = "none"


def _forced_schema(plan: ToolPlan, req: ChatRequest) -> dict:
    """The constraint of a forced first turn; 400 naming the parameter when a schema is outside the subset."""
    params = {s["function"]["name"]: f"server tool '{s['function']['name']}' parameters" for s in plan.specs}
    params.update({t.function.name: f"tools.{i}.function.parameters" for i, t in enumerate(req.tools or [])})
    names = [plan.forced] if plan.choice == "named" else [s["function"]["name"] for s in plan.specs]
    return call_schema(plan.specs, names, params)


def _check_history(req: ChatRequest) -> None:
    """A tool message must answer a call an earlier assistant message made (as OpenAI checks)."""
    seen: set[str] = set()
    for i, message in enumerate(req.messages):
        for call in message.tool_calls or []:
            seen.add(call.id)
        if message.role == "tool" and message.tool_call_id not in seen:
            raise invalid(f"messages.{i}: a 'tool' message must answer a tool call of an earlier assistant "
                          f"message; no call has id '{message.tool_call_id}'", f"messages.{i}.tool_call_id",
                          code="invalid_messages")
