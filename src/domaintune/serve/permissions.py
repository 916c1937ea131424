"""Every permission a route can require, and which role holds which.

Deny by default: a route declares exactly one permission (or is on the LIVENESS list), and a
principal may call it only when its role grants that permission. Keep this the one table: the
route-enumeration test and the console's menus read it.
"""

from __future__ import annotations

# OpenAI-compatible API
CHAT = "chat"
COMPLETIONS = "completions"
MODELS = "models:read"
FEEDBACK = "feedback:write"  # POST /v1/feedback (A/B experiments)
SESSIONS = "sessions:use"  # own dialog sessions: list, read, delete
KB_QUERY = "kb:query"  # retrieval through the chat API or /v1/kb/.../search
TOOLS = "tools:use"  # server-side tools (each tool also has its own per-role allowlist)
# operations
METRICS = "metrics:read"
RUNS = "runs:read"  # the console's run dashboard (training artifacts on disk)
AUDIT = "audit:read"  # query, verify and export the audit log
REVIEW = "review:decide"  # the human-review queue: list, approve, edit, reject
KEYS = "keys:manage"  # create, list, revoke API keys
EXPERIMENTS = "experiments:manage"  # templates, experiments, model versions (promote / rollback)
KB_MANAGE = "kb:manage"  # documents, ACL labels, re-index
USERS = "users:erase"  # GDPR-style erasure of a user's sessions, cache and audit content

ALL_PERMISSIONS = frozenset({CHAT, COMPLETIONS, MODELS, FEEDBACK, SESSIONS, KB_QUERY, TOOLS, METRICS, RUNS,
                             AUDIT, REVIEW, KEYS, EXPERIMENTS, KB_MANAGE, USERS})

_USER = frozenset({CHAT, COMPLETIONS, MODELS, FEEDBACK, SESSIONS, KB_QUERY, TOOLS})
ROLES: dict[str, frozenset[str]] = {
    "admin": ALL_PERMISSIONS,
    "user": _USER,
    "engineer": _USER | {METRICS, RUNS},  # ML engineers: the model and the run dashboard, no governance data
    "auditor": frozenset({MODELS, AUDIT, METRICS}),
    "reviewer": frozenset({MODELS, REVIEW}),
    "service": frozenset({CHAT, COMPLETIONS}),  # a backend that only generates: no listing, sessions or tools
}

# Routes that answer without a key: liveness and readiness carry no data.
LIVENESS = frozenset({"/health", "/ready"})


def permissions_of(role: str) -> frozenset[str]:
    """The role's permissions; an unknown role holds none (deny by default)."""
    return ROLES.get(role, frozenset())
