"""The `serve:` section: how `domaintune serve` puts the run's model behind an OpenAI-compatible API.

Every limit the server enforces is a key here, so what the service accepts is written in the
run's YAML and nowhere else (no environment variables act as hidden config). File paths resolve
against the config file's folder like every other path field (`FilePath`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from domaintune.config.base import FilePath, Section
from domaintune.config.console import ConsoleConfig
from domaintune.config.serve_access import AuthConfig, LimitSet, RulesConfig
from domaintune.config.serve_experiments import ExperimentsConfig, ModelsConfig, TemplatesConfig, experiment_problems
from domaintune.config.serve_records import (
    AuditConfig,
    CacheConfig,
    EncryptionConfig,
    SessionsConfig,
    records_problems,
)
from domaintune.config.serve_tools import ToolsConfig

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; '0.0.0.0' and '::' bind every interface, so False."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


class TLSConfig(Section):
    certfile: FilePath = Field(description="PEM certificate chain served to clients (relative to the config file).")
    keyfile: FilePath = Field(description="PEM private key of the certificate (relative to the config file).")
    min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description="Lowest TLS version accepted; 1.3 is preferred by the handshake either way.")


class VLLMConfig(Section):
    url: str = Field("http://127.0.0.1:8001", description="Base URL of a running vLLM OpenAI server (no /v1).")
    model: str | None = Field(None, description="Model id on the vLLM server; default: the first one it lists.")
    api_key_file: FilePath | None = Field(None, description="File holding the vLLM server's --api-key (relative to the "
                                                        "config file), so the key is not written in the YAML.")
    timeout_s: float = Field(600.0, gt=0, description="Seconds to wait for one upstream response.")
    cache_salt_per_tenant: bool = Field(
        True, description="Send a server-derived cache_salt per tenant so vLLM's prefix cache is never shared "
                          "across tenants (CVE-2025-46570). A client-sent cache_salt is always rejected.")


class ServeConfig(Section):
    """How `domaintune serve` puts the run's model behind an OpenAI-compatible API."""

    host: str = Field("127.0.0.1", description="Address to bind. Loopback by default; any other address "
                                               "needs tls or allow_insecure_public: true.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: pick a free one).")
    model_name: str | None = Field(None, description="The id clients send as `model`; default: the run name "
                                                     "(CFG) or the model folder's name (--model).")
    engine: Literal["cpu", "vllm"] = Field("cpu", description="cpu: in-process continuous batching on "
                                                              "transformers; vllm: proxy to a vLLM server.")
    weights: Literal["full", "int8"] = Field(
        "full", description="Which of the run's models `serve CFG` loads: full = the export stage's folder (or the "
                            "last training stage's); int8 = export/int8, the torchao INT8 folder that "
                            "export.quantize: int8 writes (CPU engine only; ~2.4x smaller, measured).")
    threads: int | None = Field(None, ge=1, description="torch CPU threads of the engine thread; default: torch's "
                                                         "choice. Set it: 2 threads collapse under foreign load.")
    max_running: int = Field(8, ge=1, le=256, description="Sequences decoded together in one batch (slots).")
    max_waiting: int = Field(32, ge=0, description="Requests queued for a slot; one more is answered 503 with "
                                                   "Retry-After at once.")
    prefill_chunk_tokens: int = Field(512, ge=16, description="Prompt tokens prefilled per engine step, so a long "
                                                              "prompt cannot stall the running decodes for long.")
    prefill_prompts_per_step: int = Field(0, ge=0, description="Most prompts that start prefilling in one engine "
                                          "step while other requests decode (0: as many as the token budget "
                                          "allows). 1 spreads prompts that arrived together over consecutive "
                                          "steps, so they do not finish together; at 8 closed-loop clients on "
                                          "a 2-core CPU it changed neither throughput nor the TTFT tail "
                                          "beyond noise (bench/README.md), hence off by default.")
    prefix_cache_mb: float = Field(256, ge=0, description="KV of recent prompts kept for reuse by a prompt "
                                                           "of the same tenant starting with the same tokens "
                                                           "(cpu engine; 0: off). Cuts prefill of shared "
                                                           "system turns and templates.")
    max_tokens_cap: int = Field(1024, ge=1, description="Largest max_tokens a request may ask for (400 above).")
    max_prompt_tokens: int = Field(4096, ge=1, description="Largest prompt in tokens (400 above); prompt + "
                                                           "max_tokens must also fit the model's context.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body in bytes (413 above).")
    max_n: int = Field(4, ge=1, le=16, description="Largest `n` (choices per request).")
    max_stop: int = Field(4, ge=0, le=16, description="Most stop strings per request.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with 503 when the queue is full.")
    tls: TLSConfig | None = Field(None, description="Serve HTTPS with this certificate and key.")
    allow_insecure_public: bool = Field(
        False, description="Allow plain HTTP on a non-loopback address (traffic and keys travel in clear text).")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="Used when engine: vllm.")
    auth: AuthConfig | None = Field(None, description="API keys with roles on every route (docs/serve-access.md); "
                                                      "absent: one open principal, loopback only.")
    limits: LimitSet | None = Field(None, description="Default per-key limits; a key's own limits override them.")
    rules: RulesConfig | None = Field(None, description="Rule engine and human-review queue.")
    console: ConsoleConfig = Field(default_factory=ConsoleConfig, description="The web console at /ui.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Hash-chained audit log of every request.")
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig, description="Keys for data at rest.")
    sessions: SessionsConfig = Field(default_factory=SessionsConfig, description="Server-side dialog sessions.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="Principal-keyed response cache.")
    tools: ToolsConfig = Field(default_factory=ToolsConfig, description="Tool use: server-side tools and limits.")
    templates: TemplatesConfig = Field(default_factory=TemplatesConfig, description="Versioned prompt templates.")
    experiments: ExperimentsConfig = Field(default_factory=ExperimentsConfig, description="A/B experiments.")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="Registered model versions.")

    @model_validator(mode="after")
    def _int8_is_cpu(self) -> ServeConfig:
        if self.weights == "int8" and self.engine != "cpu":
            raise ValueError("weights: int8 loads the run's torchao INT8 folder in-process (engine: cpu); a vLLM "
                             "server loads its own weights: set serve.weights: full with engine: vllm")
        return self

    @model_validator(mode="after")
    def _public_needs_tls(self) -> ServeConfig:
        if not is_loopback(self.host) and self.tls is None and not self.allow_insecure_public:
            raise ValueError(f"host '{self.host}' is not a loopback address: add serve.tls (certfile, keyfile) "
                             "or set serve.allow_insecure_public: true to serve plain HTTP on it")
        return self

    def problems(self) -> list[str]:
        """File checks for `domaintune validate`: the certificate, its key and the vLLM key file must exist."""
        files = [("tls.certfile", self.tls.certfile), ("tls.keyfile", self.tls.keyfile)] if self.tls else []
        if self.engine == "vllm" and self.vllm.api_key_file is not None:
            files.append(("vllm.api_key_file", self.vllm.api_key_file))
        return ([f"serve.{key}: file not found: {path}" for key, path in files if not Path(path).is_file()]
                + experiment_problems(self) + (self.rules.problems() if self.rules else [])
                + records_problems(self.encryption, self.audit, self.sessions, self.cache,
                                   rules=self.rules is not None))
