"""Records of the service: audit chain, encryption at rest, dialog sessions, response cache, erasure.

crypto (keyring + per-user data keys), db (SQLite discipline), audit (ChainAuditor), sessions
(SQLite / Redis), cache (principal-keyed), layer (the request-path steps), records (build from
settings, attach to the app, erase a user), routes (/v1/sessions, /v1/users). docs/serve-records.md.
"""
