"""Wire keys, limits, rules and review from `serve.auth`, `serve.limits`, `serve.rules` into an app.

Sets `app.state.keys` and `app.state.review` (None when not configured) and mounts the reviewer
routes. Without `serve.auth` the open principal stays (loopback); binding elsewhere warns loudly."""

from __future__ import annotations

import logging

from domaintune.config.serve import ServeConfig, is_loopback
from domaintune.serve.hooks import NoLimits, OpenAccess

log = logging.getLogger("domaintune.serve.security")


def _defaults(settings: ServeConfig) -> dict:
    return settings.limits.model_dump(exclude_none=True) if settings.limits else {}


def install_access(app, settings: ServeConfig, path) -> None:
    hooks, metrics = path.hooks, path.metrics
    app.state.keys = app.state.review = None
    defaults = _defaults(settings)
    if settings.auth is not None:
        from domaintune.serve.security.auth import KeyAuthenticator
        from domaintune.serve.security.keys import KeyStore

        store = KeyStore.open(settings.auth.db, settings.auth.secret_file)
        app.state.keys = store
        if isinstance(hooks.auth, OpenAccess):
            hooks.auth = KeyAuthenticator(store, metrics)
    elif not is_loopback(settings.host):
        log.warning("serve.auth is not set and serve.host is %s: EVERY client on the network gets full access "
                    "(admin). Configure serve.auth (docs/serve-access.md).", settings.host)
    if isinstance(hooks.limits, NoLimits) and (defaults or settings.auth is not None):
        from domaintune.serve.security.limits import KeyLimiter

        def limits_of(principal):  # a key's own limits override the config's defaults
            own = app.state.keys.get(principal.key_id) if app.state.keys and principal.key_id else None
            return {**defaults, **(own["limits"] if own else {})}
        hooks.limits = KeyLimiter(limits_of, metrics)
    if settings.rules is not None:
        from domaintune.serve.rules.engine import RuleEngine

        app.state.review = app.state.records.review  # opened with the records stores: sealed by the same vault
        app.state.review.auditor = hooks.audit
        hooks.rules = RuleEngine(settings.rules, app.state.review)
    from domaintune.serve.rules.routes import router as review_router
    from domaintune.serve.security.routes import router as keys_router

    app.include_router(review_router)
    app.include_router(keys_router)
