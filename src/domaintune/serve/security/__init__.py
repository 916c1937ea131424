"""API keys, the Bearer authenticator and per-key limits (docs/serve-access.md)."""
