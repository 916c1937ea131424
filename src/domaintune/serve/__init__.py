"""`domaintune serve`: the tuned model behind an OpenAI-compatible API (see docs/serve.md)."""
