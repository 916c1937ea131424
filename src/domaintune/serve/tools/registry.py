"""Server-side tools: built from `serve.tools.server`, checked against the caller, validated, run with a timeout.

A call is executed only when all of these hold: the tool is enabled for THIS request (listed in its
`tools`, or `auto`), the principal holds `tools:use`, its role is in the tool's allowlist, its key's
`tools` scope admits it, and the arguments validate against the tool's JSON schema (jsonschema,
Draft 2020-12). Anything else returns an error to the model instead of a call; each outcome is audited.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from domaintune.config.serve_tools import FunctionTool, KbSearchTool, SqlTool, ToolsConfig
from domaintune.errors import ConfigError
from domaintune.extras import require
from domaintune.serve.hooks import Principal
from domaintune.serve.permissions import TOOLS
from domaintune.serve.tools.builtins import calculator, kb_search, sql
from domaintune.serve.tools.calls import ParsedCall


def jsonschema():
    """The jsonschema package (Draft 2020-12 validation of tool arguments), part of the serve extra."""
    return require("jsonschema", "serve", "tool argument validation (serve.tools)")


@dataclass
class RegisteredTool:
    name: str
    description: str
    parameters: dict[str, Any]
    roles: frozenset[str]
    timeout_s: float
    auto: bool
    run: Callable[[dict, Principal], Any]  # (validated arguments, caller) -> JSON-able result

    def __post_init__(self):
        validator = jsonschema().Draft202012Validator
        validator.check_schema(self.parameters)
        self.validator = validator(self.parameters)

    def spec(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def refusal(self, principal: Principal) -> str | None:
        """Why `principal` may not call this tool, or None."""
        if TOOLS not in principal.permissions:
            return f"principal '{principal.id}' lacks the '{TOOLS}' permission"
        if "*" not in self.roles and principal.role not in self.roles:
            return f"role '{principal.role}' may not call tool '{self.name}'"
        if not principal.allows("tools", self.name):
            return f"the API key is not scoped for tool '{self.name}'"
        return None


@dataclass
class Outcome:
    call: ParsedCall
    status: str  # ok | not_enabled | denied | invalid_arguments | timeout | error
    content: str  # what goes back to the model as the tool message
    ms: float = 0.0

    def audit(self) -> str:
        return f"{self.call.name}:{self.status}"


class ToolRuntime:
    def __init__(self, cfg: ToolsConfig, tools: dict[str, RegisteredTool]):
        self.cfg, self.tools = cfg, tools
        self._pool: ThreadPoolExecutor | None = None

    def offered(self, principal: Principal) -> list[RegisteredTool]:
        """`auto` tools the principal may call: offered without the client listing them."""
        return [t for t in self.tools.values() if t.auto and t.refusal(principal) is None]

    async def execute(self, call: ParsedCall, principal: Principal, enabled: set[str]) -> Outcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await self._execute(call, principal, enabled)
        outcome.ms = round((loop.time() - started) * 1000, 2)
        return outcome

    async def _execute(self, call: ParsedCall, principal: Principal, enabled: set[str]) -> Outcome:
        tool = self.tools.get(call.name)
        reason = tool.refusal(principal) if tool is not None else None
        if reason:  # checked first so the error says why, even for a tool the request did not enable
            return _error(call, "denied", f"permission denied: {reason}; it was not called.")
        if tool is None or call.name not in enabled:
            return _error(call, "not_enabled", f"tool '{call.name}' is not enabled for this request; it was not "
                                               "called. Answer without it.")
        args = json.loads(call.arguments)
        problems = sorted(tool.validator.iter_errors(args), key=lambda e: list(e.path))
        if problems:
            where = "/".join(str(p) for p in problems[0].path) or "(arguments)"
            return _error(call, "invalid_arguments", f"invalid arguments at {where}: {problems[0].message}")
        pool = self._pool = self._pool or ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="dt-tool")
        future = asyncio.get_running_loop().run_in_executor(pool, tool.run, args, principal)
        try:
            result = await asyncio.wait_for(future, tool.timeout_s)
        except TimeoutError:  # the thread cannot be killed: built-ins bound their own work (sql time limit)
            return _error(call, "timeout", f"tool '{call.name}' did not answer within {tool.timeout_s} s")
        except Exception as err:  # a failing tool is reported to the model, never a server error
            return _error(call, "error", f"tool '{call.name}' failed: {type(err).__name__}: {str(err)[:500]}")
        return Outcome(call, "ok", self._text(result))

    def _text(self, result: Any) -> str:
        text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
        cap = self.cfg.max_result_chars
        return text if len(text) <= cap else text[:cap] + f"... [cut at {cap} characters]"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _error(call: ParsedCall, status: str, message: str) -> Outcome:
    return Outcome(call, status, json.dumps({"error": message}, ensure_ascii=False))


# --------------------------------------------------------------------------- building from config
def build_runtime(cfg: ToolsConfig, kb: kb_search.Searchable | None = None) -> ToolRuntime:
    """Every configured tool, or a ConfigError naming each one that cannot be built."""
    tools, problems = {}, []
    for i, entry in enumerate(cfg.server):
        try:
            tools[entry.name] = _build(entry, kb)
        except (ValueError, ImportError, AttributeError, OSError, jsonschema().SchemaError) as err:
            problems.append(f"serve.tools.server[{i}] ({entry.name}, kind {entry.kind}): {err}")
    if problems:
        raise ConfigError(problems)
    return ToolRuntime(cfg, tools)


def _build(entry, kb) -> RegisteredTool:
    common = dict(name=entry.name, roles=frozenset(entry.roles), timeout_s=entry.timeout_s, auto=entry.auto)
    if isinstance(entry, SqlTool):
        db = sql.ReadOnlyDatabase(entry.database, entry.max_rows, entry.time_limit_ms)
        text = sql.DESCRIPTION.format(name=entry.name, tables=", ".join(db.tables()) or "none")
        return RegisteredTool(description=entry.description or text, parameters=sql.PARAMETERS,
                              run=lambda args, _p: db.query(args["query"]), **common)
    if isinstance(entry, KbSearchTool):
        if kb is None:
            raise ValueError("kind kb_search needs a knowledge base: configure the `kb:` section (or remove "
                             "this tool)")
        k = entry.k
        return RegisteredTool(description=entry.description or kb_search.DESCRIPTION,
                              parameters=kb_search.PARAMETERS,
                              run=lambda args, p: kb_search.search(kb, p, args["query"], k), **common)
    if isinstance(entry, FunctionTool):
        fn = import_function(entry.function)
        return RegisteredTool(description=entry.description or inspect.getdoc(fn) or entry.name,
                              parameters=entry.parameters, run=_caller(fn), **common)
    return RegisteredTool(description=entry.description or calculator.DESCRIPTION,
                          parameters=calculator.PARAMETERS,
                          run=lambda args, _p: calculator.calculator(**args), **common)


def import_function(path: str) -> Callable:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"function '{path}' is not an import path; write 'package.module:function'")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise ValueError(f"'{path}' is not callable")
    return fn


def _caller(fn: Callable) -> Callable[[dict, Principal], Any]:
    """Call with the arguments as keywords; a function that declares `principal` also gets the caller."""
    wants_principal = "principal" in inspect.signature(fn).parameters
    # the server's principal always wins over an argument of the same name the model might send
    return lambda args, principal: fn(**{**args, "principal": principal}) if wants_principal else fn(**args)
