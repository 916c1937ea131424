"""Engines behind the one request path: `hf` (CPU continuous batching) and `vllm` (HTTP proxy)."""
