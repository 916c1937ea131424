"""Build the engine and app from settings, and run them under uvicorn (loopback, or TLS, or an explicit opt-out)."""

from __future__ import annotations

import ssl
from pathlib import Path

from domaintune.config import ModelConfig
from domaintune.config.serve import ServeConfig, TLSConfig, is_loopback
from domaintune.errors import ConfigError

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def check_bind(settings: ServeConfig) -> None:
    """Refuse plain HTTP on a non-loopback address unless the config opts out in writing.

    The settings validator does the same on load; this runs again at bind time because a copy made
    with model_copy(update=...) (CLI flags) skips validation."""
    if not is_loopback(settings.host) and settings.tls is None and not settings.allow_insecure_public:
        raise ConfigError([f"serve.host: '{settings.host}' is not a loopback address and serve.tls is not set; "
                           "add serve.tls (certfile, keyfile) or set serve.allow_insecure_public: true"])


def ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]  # 1.3 is negotiated whenever the client offers it
    try:
        ctx.load_cert_chain(certfile=str(tls.certfile), keyfile=str(tls.keyfile))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError([f"serve.tls: cannot load certificate {tls.certfile} with key {tls.keyfile}: {err}"]) \
            from None
    return ctx


def uvicorn_config(app, settings: ServeConfig):
    import uvicorn

    check_bind(settings)
    tls = settings.tls
    factory = (lambda _config, _default: ssl_context(tls)) if tls else None
    if tls:
        ssl_context(tls)  # fail before binding, with our message, if the files are wrong
    return uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on", log_level="info",
                          access_log=False, timeout_graceful_shutdown=5, ssl_context_factory=factory,
                          ssl_certfile=str(tls.certfile) if tls else None)


def build_engine(settings: ServeConfig, model_dir: Path, model_name: str, base: ModelConfig | None = None):
    """(engine, renderer): the CPU engine loads the model here; the vLLM engine only needs the tokenizer."""
    from domaintune.serve.render import ChatRenderer

    if settings.engine == "vllm":
        from transformers import AutoTokenizer

        from domaintune.serve.engine.vllm import VLLMEngine

        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        engine = VLLMEngine(settings.vllm, tokenizer, model_name, settings.max_running + settings.max_waiting)
        return engine, ChatRenderer(tokenizer)
    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.loading import load_for_serving

    model, tokenizer = load_for_serving(model_dir, base=base)
    limits = SchedulerLimits(max_running=settings.max_running, max_waiting=settings.max_waiting,
                             prefill_chunk_tokens=settings.prefill_chunk_tokens,
                             prefill_prompts_per_step=settings.prefill_prompts_per_step, threads=settings.threads,
                             prefix_cache_bytes=int(settings.prefix_cache_mb * 2**20))
    return HFEngine(model, tokenizer, model_name, limits), ChatRenderer(tokenizer)


def serve(settings: ServeConfig, model_dir: Path, model_name: str, base: ModelConfig | None = None,
          hooks=None) -> None:
    import uvicorn

    from domaintune.serve.app import create_app
    from domaintune.serve.experiments_setup import build_versions

    check_bind(settings)
    engine, renderer = build_engine(settings, model_dir, model_name, base)
    app = create_app(engine, renderer, settings, hooks, versions=build_versions(settings, build_engine, base))
    uvicorn.Server(uvicorn_config(app, settings)).run()
