"""The request path's extension points, as small protocols with working defaults.

Every request runs: principal (auth) -> permission -> limits -> caps -> template -> retrieval ->
engine -> audit -> metrics (see pipeline.py). Governance (keys, roles, rate limits, audit chain),
the knowledge base (retrieval with per-document ACL) and the console replace these defaults;
nothing else in the request path changes. docs/serve.md documents each interface.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Protocol

from domaintune.serve.errors import ApiError

# Permissions a route can require live in permissions.py (one table); re-exported for existing imports.
from domaintune.serve.permissions import ALL_PERMISSIONS, CHAT, COMPLETIONS, METRICS, MODELS  # noqa: E402,F401


@dataclass(frozen=True)
class Principal:
    """Who is asking. `tenant` partitions anything shared across requests (caches, vLLM's cache_salt)."""

    id: str
    tenant: str = "default"
    permissions: frozenset[str] = ALL_PERMISSIONS
    role: str = "admin"  # the open principal may do everything; governance sets the key's role
    key_id: str | None = None  # the API key's public id (never its secret); None without governance
    user: str | None = None  # the person or service the key belongs to: owns sessions, erasure subject
    groups: frozenset[str] = frozenset()  # ACL groups for the knowledge base's per-document access control
    scopes: Mapping[str, frozenset[str]] = field(default_factory=dict)  # e.g. {"models": .., "kbs": .., "tools": ..}

    def allows(self, kind: str, name: str) -> bool:
        """True when the key is not scoped for `kind` (no entry) or lists `name` (or '*')."""
        allowed = self.scopes.get(kind)
        return allowed is None or "*" in allowed or name in allowed


@dataclass
class Prompt:
    """What the template and retrieval hooks pass along: chat messages or a raw completion prompt."""

    messages: list[dict[str, str]] | None = None
    text: str | None = None
    template_id: str = "model-chat-template"
    sources: list[dict] = field(default_factory=list)  # retrieval: what was added, for audit and citations
    # What the response cache keys on besides the principal (kb fills them when it retrieves): a change of
    # the documents the principal may read, or of the index, must never hit an answer cached before it.
    acl_fingerprint: str | None = None
    index_version: str | None = None
    template: str | None = None  # template asked for (request `template` field or an A/B arm): 'name[@version]'
    route: str = ""  # the route serving the request, for templates bound per route
    kb: str | None = None  # the knowledge base the request named (extension field `kb`); retrieval sets it


@dataclass
class AuditRecord:
    request_id: str
    route: str
    principal: str
    tenant: str
    status: int
    model: str = ""
    user: str | None = None
    key_id: str | None = None
    session_id: str | None = None
    template_id: str | None = None
    variant: str | None = None  # A/B experiment arm the principal was assigned to
    sources: list[str] = field(default_factory=list)  # retrieved document/chunk ids
    tools: list[str] = field(default_factory=list)  # names of tools called, in order
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reasons: list[str] = field(default_factory=list)
    error_code: str | None = None
    latency_ms: float = 0.0
    detail: dict[str, str] = field(default_factory=dict)  # e.g. rules fired, review item and decision
    subject: str | None = None  # the erasure subject (principal.user, else principal.id): its key seals content
    cached: bool = False  # answered from the response cache
    # Content for the audit's content policy (none / redacted / encrypted); never logged as such.
    prompt_text: str | None = field(default=None, repr=False)
    answer_text: str | None = field(default=None, repr=False)


CONTENT_FIELDS = ("prompt_text", "answer_text")  # user text: only the audit's content policy may store it


class Authenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The request's principal, or ApiError(401)."""
        ...


class Authorizer(Protocol):
    def check(self, principal: Principal, permission: str) -> None:
        """Return if `principal` may use a route needing `permission`; else raise ApiError(403)."""
        ...


class Limiter(Protocol):
    def acquire(self, principal: Principal, tokens: int) -> Callable[..., None]:
        """Admit a request that may use up to `tokens` tokens; return its release callback, or raise
        ApiError(429) with Retry-After. Release is called exactly once when the request ends, with the
        tokens actually used (or no argument when nothing ran)."""
        ...


class Templates(Protocol):
    def apply(self, principal: Principal, prompt: Prompt) -> Prompt:
        """Choose and apply a prompt template (versioned, A/B) to the request's prompt."""
        ...


class Retriever(Protocol):
    def augment(self, principal: Principal, prompt: Prompt) -> Prompt:
        """Add context the principal may read (ACL applied before ranking), recording it in `sources`."""
        ...


class Auditor(Protocol):
    def record(self, record: AuditRecord) -> None:
        """Persist one record per request, success or failure. Must not raise for a valid record."""
        ...


class Rules(Protocol):
    def screen(self, principal: Principal, prompt: Prompt, record: AuditRecord):
        """Check the request before the model; return a Screen (serve/rules/screen.py): the prompt to use,
        an optional fixed answer, and the filter the answer passes through after the model."""
        ...


# --------------------------------------------------------------------------- defaults
class OpenAccess:
    """One open principal for a loopback-only server: everyone is `local` with every permission."""

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        return Principal(id="local")


class PermissionCheck:
    """Deny unless the principal holds the route's permission."""

    def check(self, principal: Principal, permission: str) -> None:
        if permission not in principal.permissions:
            raise ApiError(403, f"principal '{principal.id}' lacks the '{permission}' permission",
                           code="permission_denied")


class NoLimits:
    """Admission is bounded by the engine's queue (503 when full), not per principal."""

    def acquire(self, principal: Principal, tokens: int) -> Callable[..., None]:
        return lambda used=None: None


class ModelTemplate:
    """The model's own chat template, unchanged."""

    def apply(self, principal: Principal, prompt: Prompt) -> Prompt:
        return prompt


class NoRetrieval:
    def augment(self, principal: Principal, prompt: Prompt) -> Prompt:
        return prompt


class LogAuditor:
    """One JSON line per request on the `domaintune.serve.audit` logger: ids and counts, never prompt text."""

    def __init__(self, logger: logging.Logger | None = None):
        self.logger = logger or logging.getLogger("domaintune.serve.audit")

    def record(self, record: AuditRecord) -> None:
        meta = {k: v for k, v in asdict(record).items() if k not in CONTENT_FIELDS}
        self.logger.info(json.dumps(meta, ensure_ascii=False, sort_keys=True))


class NoRules:
    def screen(self, principal: Principal, prompt: Prompt, record: AuditRecord):
        from domaintune.serve.rules.screen import Screen

        return Screen(prompt)


@dataclass
class Hooks:
    auth: Authenticator = field(default_factory=OpenAccess)
    authz: Authorizer = field(default_factory=PermissionCheck)
    limits: Limiter = field(default_factory=NoLimits)
    templates: Templates = field(default_factory=ModelTemplate)
    retrieval: Retriever = field(default_factory=NoRetrieval)
    audit: Auditor = field(default_factory=LogAuditor)
    rules: Rules = field(default_factory=NoRules)
