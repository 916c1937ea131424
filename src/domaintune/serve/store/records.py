"""Build the records backends from `serve:` settings, hang them on the app, and erase a user.

`attach_records(app, path, settings)` is the one call create_app makes: it opens what is enabled
(keyring and vault, audit chain, sessions, cache), sets `app.state.audit` / `.sessions` /
`.records` (None when not configured), puts the chain auditor in the request path, registers the
cache's metrics and adds the /v1/sessions and /v1/users routes.
"""

from __future__ import annotations

import uuid

from domaintune.config.serve import ServeConfig
from domaintune.serve.hooks import AuditRecord
from domaintune.serve.store.audit import ChainAuditor
from domaintune.serve.store.cache import ResponseCache
from domaintune.serve.store.crypto import Keyring, Vault
from domaintune.serve.store.layer import RecordsLayer
from domaintune.serve.store.sessions import RedisSessions, Sessions, SqliteSessions
from domaintune.serve.store.trail import AuditEveryRequest, Marking


class Records:
    """The enabled stores of one server (or of one CLI command over the same files)."""

    def __init__(self, settings: ServeConfig):
        audit, sessions, cache = settings.audit, settings.sessions, settings.cache
        self.keyring = self.vault = self.audit = self.sessions = self.cache = self.review = None
        if not (audit.enabled or sessions.enabled or cache.enabled or settings.rules is not None):
            return
        self.keyring = Keyring.load(settings.encryption)  # fails closed: no keys, no server
        self.vault = Vault(self.keyring, settings.encryption.user_keys_db)
        if audit.enabled:
            self.audit = ChainAuditor(audit.db, self.keyring, self.vault, audit.content, _redactor(audit))
        if sessions.enabled:
            backend = SqliteSessions(sessions.db) if sessions.backend == "sqlite" else RedisSessions(sessions.redis_url)
            self.sessions = Sessions(backend, self.vault, sessions.ttl_s, sessions.max_sessions_per_owner)
        if cache.enabled:
            self.cache = ResponseCache(cache.db, self.vault, cache.ttl_s, cache.max_entries)
        if settings.rules is not None:  # flagged prompts and answers: sealed like sessions (rules/review.py)
            from domaintune.serve.rules.review import ReviewQueue

            self.review = ReviewQueue(settings.rules.review_db, self.vault)

    def erase(self, subject: str, by: str = "cli", tenant: str = "default", audit: bool = True) -> dict:
        """GDPR-style erasure: delete the user's sessions, cached answers and review items, destroy their data
        key (their audit content becomes unreadable; the chain is untouched), and audit the erasure itself (the
        API route audits its own request instead: one record per request)."""
        done = {"user": subject,
                "sessions_deleted": self.sessions.erase(subject) if self.sessions else 0,
                "cache_entries_deleted": self.cache.erase(subject) if self.cache else 0,
                "review_items_deleted": self.review.erase(subject) if self.review else 0,
                "data_key_destroyed": self.vault.destroy(subject) if self.vault else False}
        if audit and self.audit is not None:
            self.audit.record(AuditRecord(request_id=uuid.uuid4().hex[:24], route="users.erase", principal=by,
                                          tenant=tenant, status=200, user=subject))
        return done

    def close(self) -> None:
        for store in (self.audit, self.sessions, self.cache, self.review, self.vault):
            if store is not None:
                store.close()


def admin_auditor(settings: ServeConfig):
    """The auditor of an administrative command run outside the server (`keys create|revoke`,
    `serve-models promote|rollback`): the server's own hash chain when serve.audit is on (appends are
    BEGIN IMMEDIATE transactions, so a CLI and a running server interleave whole records and the chain
    stays linear), else the log auditor. Open it before changing anything: a missing keyring then
    refuses the change instead of leaving it unaudited."""
    if not settings.audit.enabled:
        from domaintune.serve.hooks import LogAuditor

        return LogAuditor()
    return ChainAuditor(settings.audit.db, Keyring.load(settings.encryption))


def cli_record(route: str, actor: str, **detail) -> AuditRecord:
    return AuditRecord(request_id=uuid.uuid4().hex[:24], route=route, principal=actor, tenant="default", status=200,
                       detail={k: str(v) for k, v in detail.items() if v is not None})


def _redactor(audit):
    if audit.content != "redacted":
        return None
    from domaintune.governance.pii import Redactor

    return Redactor.from_config(audit.pii, key="serve.audit.pii")


def attach_records(app, path, settings: ServeConfig) -> Records:
    from domaintune.serve.store.routes import router

    records = Records(settings)
    app.state.records, app.state.audit, app.state.sessions = records, records.audit, records.sessions
    app.state.cache = records.cache
    path.records = RecordsLayer(records.sessions, records.cache, settings.sessions.context_tokens)
    # Every request leaves exactly one record (store/trail.py): the chain when audit is on, else the hook's.
    path.hooks.audit = Marking(records.audit if records.audit is not None else path.hooks.audit)
    app.add_middleware(AuditEveryRequest, auditor=lambda: path.hooks.audit)  # read per request: wrappers added later
    if records.cache is not None:
        path.metrics.registry.register(_CacheMetrics(records.cache))
    app.include_router(router)
    return records


class _CacheMetrics:
    def __init__(self, cache: ResponseCache):
        self.cache = cache

    def collect(self):
        return self.cache.collect()
