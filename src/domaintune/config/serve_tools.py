"""The `serve.tools:` section: server-side tools the model may call, and the limits of the tool loop.

Client-side tools need no config: a request lists them in OpenAI's `tools` and the server returns
the model's calls to the client. Server-side tools are executed by the server, so each one is
declared here with who may call it (deny by default: only `admin` unless `roles` says otherwise).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from domaintune.config.base import FilePath, Section

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


class _ToolBase(Section):
    name: str = Field(description="The function name the model calls (letters, digits, _ and -, at most 64).")
    description: str | None = Field(None, description="What the tool does, shown to the model; default: the "
                                                       "built-in's own description or the function's docstring.")
    roles: list[str] = Field(["admin"], description="Roles allowed to call it ('*': every role holding the "
                                                    "tools:use permission). Deny by default.")
    timeout_s: float = Field(10.0, gt=0, le=600, description="Seconds one call may take; the model gets a "
                                                             "timeout error after that.")
    auto: bool = Field(False, description="Offer the tool on every chat request whose principal may call it, "
                                          "without the client listing it in `tools`.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not TOOL_NAME.match(value):
            raise ValueError(f"'{value}' is not a valid tool name: use 1-64 letters, digits, '_' or '-'")
        return value


class CalculatorTool(_ToolBase):
    kind: Literal["calculator"] = Field(description="Arithmetic on numbers (+ - * / // % **, parentheses, "
                                                    "abs/round/min/max/sqrt/log), evaluated from its syntax tree.")


class SqlTool(_ToolBase):
    kind: Literal["sql"] = Field(description="Read-only SELECT queries over one SQLite database.")
    database: FilePath = Field(description="The SQLite file (relative to the config file); opened read-only.")
    max_rows: int = Field(100, ge=1, le=10_000, description="Rows returned at most (the rest are cut).")
    time_limit_ms: int = Field(1000, ge=10, le=60_000, description="A query running longer is interrupted.")


class KbSearchTool(_ToolBase):
    kind: Literal["kb_search"] = Field(description="Search the knowledge base with the caller's own access "
                                                   "rights; needs the `kb:` section.")
    k: int = Field(5, ge=1, le=50, description="Passages returned per search.")


class FunctionTool(_ToolBase):
    kind: Literal["function"] = Field(description="Your own Python function, called with the validated "
                                                  "arguments as keyword arguments.")
    function: str = Field(description="Import path 'package.module:function' (or 'package.module.function').")
    parameters: dict[str, Any] = Field(description="JSON schema (an object schema) of the arguments; calls "
                                                   "are validated against it before the function runs.")

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError("parameters must be a JSON schema with \"type\": \"object\"")
        return value


ServerTool = Annotated[CalculatorTool | SqlTool | KbSearchTool | FunctionTool, Field(discriminator="kind")]


class ToolsConfig(Section):
    """Tool use (function calling): server-side tools and the limits of the tool loop."""

    server: list[ServerTool] = Field(default_factory=list, description="Server-side tools; each has a `kind`: "
                                                                      "calculator, sql, kb_search or function.")
    max_rounds: int = Field(4, ge=1, le=32, description="Rounds of server-side tool calls per request; a model "
                                                        "still calling tools after that gets its answer cut.")
    max_calls_per_round: int = Field(8, ge=1, le=64, description="Tool calls executed from one model turn.")
    max_result_chars: int = Field(8000, ge=100, description="A tool result longer than this is cut before "
                                                            "it goes back to the model.")
    workers: int = Field(4, ge=1, le=64, description="Threads running server-side tool calls.")

    @model_validator(mode="after")
    def _unique_names(self) -> ToolsConfig:
        names = [tool.name for tool in self.server]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"server tool names must be unique; repeated: {', '.join(dupes)}")
        return self
