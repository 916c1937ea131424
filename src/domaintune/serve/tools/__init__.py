"""Tool use (function calling) for `domaintune serve`: OpenAI `tools` / `tool_choice` in chat requests,
calls parsed from the model's own output, client-side tools returned to the client, server-side tools
(built-ins and your own functions) run under a per-role allowlist with validated arguments and
timeouts, every call audited. docs/serve-tools.md describes the design and the config."""

from __future__ import annotations

from domaintune.config.serve_tools import ToolsConfig
from domaintune.serve.tools.loop import ToolState
from domaintune.serve.tools.plan import ToolPlan, plan_tools
from domaintune.serve.tools.registry import ToolRuntime, build_runtime
from domaintune.serve.tools.render import message_dict, render_ids

__all__ = ["ToolPlan", "ToolRuntime", "ToolState", "build_runtime", "message_dict", "plan_tools", "render_ids",
           "tool_state"]


def tool_state(plan: ToolPlan | None, runtime: ToolRuntime | None, principal, prompt, prefix: str,
               cfg: ToolsConfig) -> ToolState | None:
    """The loop's state for a request whose output must be parsed for calls; None for every other request."""
    if plan is None or not plan.offered:
        return None
    return ToolState(plan, runtime or ToolRuntime(cfg, {}), principal, prompt, prefix)
