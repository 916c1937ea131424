"""The `domaintune` command line. Every command takes `key.path=value` overrides after the file."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
import typer.core

from domaintune.console import console
from domaintune.errors import DomainTuneError, storage_error
from domaintune.pipeline import MODEL, StageSpec
from domaintune.serve.audit_cli import audit_app, users_app

# The pipeline, in order. `sections` are the config sections a stage reads (their settings that can
# change a result are fingerprinted; the schema marks the rest); which section switches a stage on
# is config.STAGE_SECTIONS; MODEL is the model a stage starts from.
STAGES: list[StageSpec] = [
    StageSpec("data", "domaintune.data", ("data", "seed"), (), "read, normalize, dedup, split"),
    StageSpec("synth", "domaintune.synth", ("synth", "model", "seed", "eval"), ("data",),
              "instruction synthesis with a teacher: doc_qa, self_instruct, evol, magpie, augment, judge"),
    StageSpec("mix", "domaintune.mix", ("mix", "model", "seed"), ("data",), "token mixture + packing"),
    StageSpec("train", "domaintune.train", ("train", "model", "seed"), ("mix",), "continual pre-training",
              distributed=True),
    StageSpec("sft", "domaintune.sft", ("sft", "model", "seed"), (MODEL, "synth"),
              "supervised fine-tuning on conversations", distributed=True),
    StageSpec("align", "domaintune.align", ("align", "model", "seed"), (MODEL, "synth"),
              "reward model, confidence filter, DPO"),
    StageSpec("distill", "domaintune.distill", ("distill", "model", "seed"), ("mix", MODEL),
              "distil the tuned model into a smaller student"),
    StageSpec("eval", "domaintune.eval", ("eval", "model", "seed"), ("data", MODEL),
              "perplexity per stream, benchmark tasks, forgetting gate, report"),
    StageSpec("export", "domaintune.export", ("export", "model", "eval.split", "seed"), ("data", MODEL),
              "merged model + samples; GGUF, Modelfile, INT8, each verified"),
]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn an open base LLM into a governed enterprise domain model, from one YAML file.")
models_app = typer.Typer(no_args_is_help=True, help="Model utilities (GGUF import).")
app.add_typer(models_app, name="models")
from domaintune.serve.keys_cli import keys_app  # noqa: E402  (light: typer only at import)

app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")  # domaintune audit verify|export (serve/audit_cli.py)
app.add_typer(users_app, name="users")  # domaintune users erase USER CFG
from domaintune.serve.experiments_cli import ab_app, serve_models_app  # noqa: E402  (light: typer only)

app.add_typer(ab_app, name="ab")
app.add_typer(serve_models_app, name="serve-models")
from domaintune.kb.command import kb_app  # noqa: E402  (light: its commands import the kb lazily)

app.add_typer(kb_app, name="kb")



@app.callback()
def _setup() -> None:
    from domaintune.console import quiet_third_party

    quiet_third_party()


ConfigArg = typer.Argument(..., exists=False, help="The run's domaintune.yaml.")
OverridesArg = typer.Argument(None, help="Overrides like train.optim.lr=1e-4 mix.tokens=2M.")


def _fail(err: DomainTuneError) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(str(err))}")  # "domaintune[gpu]" is text, not markup
    raise typer.Exit(err.exit_code)


@contextmanager
def _handled() -> Iterator[None]:
    """Expected failures (our own errors, a full disk, an unwritable folder) print one line and exit
    with their code; any other exception keeps its traceback, since it is a bug to report."""
    try:
        yield
    except DomainTuneError as err:
        _fail(err)
    except Exception as exc:
        known = storage_error(exc)
        if known is None:
            raise
        _fail(known)


def _load(config: Path, overrides: list[str] | None):
    """Load the config; its warnings (old key names, settings that do nothing) are printed once."""
    import warnings

    from rich.markup import escape

    from domaintune.config import ConfigWarning, load_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        cfg = load_config(config, overrides or [])
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ConfigWarning)):
        console.print(f"[yellow]warning:[/] {escape(message)}")
    for w in caught:  # anything else goes on as it came
        if not issubclass(w.category, ConfigWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return cfg


@app.command()
def validate(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """Check the config, its files, optional packages and GPU-only options; report all problems."""
    from domaintune.checks import validate as run_checks
    from domaintune.errors import ConfigError

    with _handled():
        cfg = _load(config, overrides)
        problems = run_checks(cfg)
        if problems:
            raise ConfigError(problems, source=str(config))
    enabled = [s.name for s in STAGES if s.enabled(cfg)]
    sources = f"{len(cfg.data.sources)} source(s); " if cfg.data else ""
    mixture = "mixture " + ", ".join(f"{k}:{v:g}" for k, v in cfg.mix.mixture.items()) + "; " if cfg.mix else ""
    console.print(f"[green]ok[/] {config}: run '{cfg.name}' → {cfg.run_path}; model {cfg.model.base}; "
                  f"{sources}{mixture}stages {' → '.join(enabled)}")


@app.command()
def init(folder: Path = typer.Argument(..., help="The folder of documents to look at."),
         model: str = typer.Option("HuggingFaceTB/SmolLM2-135M-Instruct", help="Base model id or folder."),
         out: Path = typer.Option(Path("."), help="Where to write domaintune.yaml and rules.yaml."),
         force: bool = typer.Option(False, help="Overwrite existing files.")) -> None:
    """Look at a folder (formats, languages, sizes, likely PII and duplicates); write a starter config."""
    from domaintune.data.starter import print_findings, write_starter
    from domaintune.data.survey import survey

    if not folder.is_dir():
        _fail(DomainTuneError(f"{folder}: not a folder; give the folder that holds your documents"))
    from domaintune.checks import validate as run_checks
    from domaintune.errors import ConfigError

    try:
        found = survey(folder)
        config_path, rules_path = write_starter(found, out, model, force)
        problems = run_checks(_load(config_path, []))  # the files must pass `domaintune validate`
        if problems:
            raise ConfigError(problems, source=str(config_path))
    except DomainTuneError as err:
        _fail(err)
    print_findings(found, config_path, rules_path)


SuperviseOpt = typer.Option(False, "--supervise", help="Run as a child process; restart it after crashes and "
                            "hangs (runtime.supervise: max_restarts, restart_backoff_s, hang_timeout_s).")


def _supervised(config: Path, overrides, command: list[str], force: bool) -> None:
    """Re-invoke this same command without --supervise, as a supervised child process."""
    from domaintune.supervise import supervise

    with _handled():
        cfg = _load(config, overrides)
    argv = [sys.executable, "-m", "domaintune", *command, str(config), *(overrides or []),
            *(["--force"] if force else [])]
    code = supervise(argv, cfg, cfg.run_path)
    if code:
        raise typer.Exit(code)


def _run(config: Path, overrides, stages: str | None, force: bool) -> None:
    from domaintune.pipeline import run_pipeline

    t0 = time.perf_counter()
    with _handled():
        cfg = _load(config, overrides)
        names = [s.strip() for s in stages.split(",")] if stages else None
        outcomes = run_pipeline(cfg, STAGES, names, force=force)
    _summary(outcomes, time.perf_counter() - t0, cfg.run_path)


def _summary(outcomes, total_s: float, run_path: Path) -> None:
    from rich.table import Table

    table = Table(title=f"run summary — {run_path}", title_justify="left")
    for col in ("stage", "status", "time", "result"):
        table.add_column(col)
    for o in outcomes:
        status = {"ran": "[green]ran[/]", "skipped": "[dim]skipped[/]"}.get(o.status, "[dim]off[/]")
        table.add_row(o.name, status, f"{o.wall_time_s:.1f}s", o.summary)
    console.print(table)
    console.print(f"total {total_s:.1f}s")


@app.command()
def run(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg,
        stages: str | None = typer.Option(None, help="Comma-separated subset, e.g. train,eval."),
        force: bool = typer.Option(False, help="Re-run the selected stages even if unchanged."),
        supervise: bool = SuperviseOpt) -> None:
    """Run the pipeline; stages whose inputs and settings are unchanged are skipped."""
    if supervise:
        _supervised(config, overrides, ["run", *(["--stages", stages] if stages else [])], force)
        return
    _run(config, overrides, stages, force)


def _stage_command(name: str, help_text: str):
    def command(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg,
                force: bool = typer.Option(False, help="Re-run even if unchanged."),
                supervise: bool = SuperviseOpt) -> None:
        if supervise:
            _supervised(config, overrides, [name], force)
            return
        _run(config, overrides, name, force)

    command.__doc__ = f"Run only the '{name}' stage ({help_text})."
    return command


for _spec in STAGES:
    if _spec.name != "data":  # `data` is a command group (below)
        app.command(name=_spec.name)(_stage_command(_spec.name, _spec.help))


class _DataGroup(typer.core.TyperGroup):
    """`domaintune data CONFIG` (no subcommand) still means `domaintune data prepare CONFIG`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["prepare", *args]
        return super().parse_args(ctx, args)


data_app = typer.Typer(cls=_DataGroup, no_args_is_help=True,
                       help="The data stage: prepare (run it), trace a record, re-render the report.")
app.add_typer(data_app, name="data")
data_app.command("prepare")(_stage_command("data", "read, steps, dedup, split, report"))


@data_app.command("trace")
def data_trace(config: Path = ConfigArg, record_id: str = typer.Argument(..., help="A record id (see lineage.jsonl)."),
               overrides: list[str] | None = OverridesArg,
               max_chars: int = typer.Option(2000, help="Characters of the original text to show.")) -> None:
    """Show a record's original text, each step's change, and the split/stream it went to (or why not)."""
    from domaintune.artifacts import RunDir
    from domaintune.data.lineage import print_trace
    from domaintune.data.stage import trace_record

    with _handled():
        cfg = _load(config, overrides)
        print_trace(trace_record(cfg, RunDir(cfg.run_path), record_id), max_chars=max_chars)


@data_app.command("report")
def data_report(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """Re-render data_report.html from the last data run's data_report.json."""
    from domaintune.data.report import rerender

    with _handled():
        cfg = _load(config, overrides)
        path = rerender(cfg.run_path / "data")
    console.print(f"[green]ok[/] {path}")


@models_app.command("import-gguf")
def import_gguf(gguf: Path = typer.Argument(..., help="The .gguf file."),
                out_dir: Path = typer.Argument(..., help="Folder to write (safetensors + tokenizer)."),
                verify: bool = typer.Option(True, help="Check the saved model's logits against the GGUF.")) -> None:
    """Convert a GGUF checkpoint into a normal safetensors model folder (loads 10x faster)."""
    from domaintune.models import import_gguf as do_import

    with _handled(), console.status(f"importing {gguf} (dequantizing to fp32)…"):
        report = do_import(gguf, out_dir, verify=verify)
    diff = report.get("max_abs_logit_diff")
    checked = f"; logits match (max abs diff {diff:.2g})" if diff is not None else ""
    console.print(f"[green]ok[/] {report['parameters']:,} parameters → {out_dir}{checked}")


@app.command()
def chat(model_dir: Path = typer.Argument(..., help="A model folder (e.g. runs/<name>/export/model)."),
         prompt: str | None = typer.Option(None, help="Answer one prompt and exit."),
         system: str | None = typer.Option(None, help="System message."),
         max_new_tokens: int = typer.Option(256), temperature: float = typer.Option(0.0),
         device: str = typer.Option("auto")) -> None:
    """Chat with a model using its own chat template (interactive, or one-shot with --prompt)."""
    from domaintune.chat import chat_session

    with _handled():
        chat_session(model_dir, prompt=prompt, system=system, max_new_tokens=max_new_tokens,
                     temperature=temperature, device=device)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder, e.g. runs/quickstart.")) -> None:
    """Regenerate eval_report.html (+ .json) of a run from its eval results and training metrics."""
    from domaintune.eval.report import write_report

    with _handled():
        written = write_report(run_dir)
    console.print(f"[green]ok[/] {written['html']} and {written['json'].name}")


@app.command()
def serve(config: Path | None = typer.Argument(None, help="The run's domaintune.yaml: serves its last model "
                                                          "with its serve: settings."),
          overrides: list[str] | None = OverridesArg,
          model: Path | None = typer.Option(None, "--model", help="Serve this model folder (HF safetensors, or an "
                                                                   "adapter folder) instead of the run's model."),
          host: str | None = typer.Option(None, help="Override serve.host."),
          port: int | None = typer.Option(None, help="Override serve.port.")) -> None:
    """Serve a model behind an OpenAI-compatible API (see docs/serve.md)."""
    from domaintune.errors import ConfigError
    from domaintune.serve.command import load_with_settings, run_model, validate_settings, with_flags
    from domaintune.serve.server import serve as run_server

    try:
        if config is None and model is None:
            raise ConfigError(["give the run's config file (domaintune serve CONFIG) or a folder (--model DIR)"])
        base, cfg = None, None
        if config is not None:
            cfg, settings = load_with_settings(config, overrides or [])
            model_dir, base = (model, None) if model is not None else run_model(cfg)
            name = settings.model_name or cfg.name
        else:
            settings, model_dir = validate_settings({}, Path.cwd(), "defaults"), model
            name = settings.model_name or model.resolve().name
        settings = with_flags(settings, host, port)
        scheme = "https" if settings.tls else "http"
        console.print(f"serving {model_dir} as '{name}' on {scheme}://{settings.host}:{settings.port}/v1 "
                      f"(engine {settings.engine})")
        from domaintune.serve.kb_hook import with_kb

        run_server(settings, Path(model_dir), name, base, hooks=with_kb(cfg))
    except DomainTuneError as err:
        _fail(err)


@app.command("hash-password")
def hash_password() -> None:
    """Print an argon2 hash of a password for serve.console.users (read from the terminal, never echoed)."""
    from domaintune.serve.ui.passwords import hash_password as make_hash

    password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    print(make_hash(password))


def main() -> None:  # pragma: no cover - entry point
    app(sys.argv[1:])


if __name__ == "__main__":  # `python -m domaintune.cli`, like `python -m domaintune`
    main()
