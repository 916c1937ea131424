"""`domaintune ab report` and `domaintune serve-models list|promote|rollback` (registered in cli.py).

Kept light at import time: the CLI imports this module on every start."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import typer

ab_app = typer.Typer(no_args_is_help=True, help="A/B experiments of the server (see docs/serve-experiments.md).")
serve_models_app = typer.Typer(no_args_is_help=True, help="Model versions of the server: list, promote, roll back "
                                                          "(audited; see docs/serve-experiments.md).")
ConfigArg = typer.Argument(..., help="The run's domaintune.yaml (its serve: section).")
OverridesArg = typer.Argument(None, help="Overrides like serve.experiments.store=ab.db.")


def _handled(func):
    """Run `func`, printing a DomainTuneError as one clear line and exiting with its code."""
    from domaintune.console import console
    from domaintune.errors import DomainTuneError

    try:
        return func()
    except DomainTuneError as err:
        from rich.markup import escape

        console.print(f"[bold red]error:[/] {escape(str(err))}")
        raise typer.Exit(err.exit_code) from None


def _setup(config: Path, overrides: list[str] | None):
    from domaintune.errors import ConfigError
    from domaintune.serve.command import load_with_settings
    from domaintune.serve.experiment_store import ExperimentStore

    cfg, settings = load_with_settings(config, overrides or [])
    store_path = Path(settings.experiments.store)
    if not store_path.is_file():
        raise ConfigError([f"serve.experiments.store: {store_path} does not exist yet; it is created when the "
                           f"server first serves an experiment or a model version"], source=str(config))
    return cfg, settings, ExperimentStore(store_path)


@ab_app.command("report")
def report(config: Path = ConfigArg, experiment: str = typer.Argument(..., help="Experiment name."),
           overrides: list[str] | None = OverridesArg,
           task: str | None = typer.Option(None, help="Eval task (built-in name or task YAML) to score each arm on."),
           data: str | None = typer.Option(None, help="The task's data file (your local copy)."),
           limit: int | None = typer.Option(None, min=1, help="Score at most this many task items."),
           as_json: Path | None = typer.Option(None, "--json", help="Also write the report as JSON here.")) -> None:
    """Per arm: requests, latency p50/p95, tokens, feedback rate with a 95 % interval and a verdict against
    the control; with --task also task accuracy."""
    def run():
        from domaintune.errors import ConfigError
        from domaintune.serve.experiments import Experiments, build_report
        from domaintune.serve.templates import TemplateRegistry

        cfg, settings, store = _setup(config, overrides)
        templates = TemplateRegistry.from_config(settings.templates)
        name = settings.model_name or cfg.name
        experiments = Experiments(settings.experiments, store, name, templates,
                                  [v.id for v in settings.models.versions])
        if experiment not in experiments.all:
            raise ConfigError([f"no experiment '{experiment}' in serve.experiments.active "
                               f"(have: {experiments.names()})"], source=str(config))
        exp = experiments.all[experiment]
        accuracy = _task_accuracy(cfg, settings, templates, exp, task, data, limit) if task else None
        result = build_report(exp, store.rows(experiment), accuracy)
        _print_report(result)
        if as_json is not None:
            as_json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _handled(run)


def _task_accuracy(cfg, settings, templates, exp, task, data, limit):
    from domaintune.benchmarks.tasks import load_task
    from domaintune.serve.command import run_model
    from domaintune.serve.experiments_eval import arm_accuracy

    loaded = load_task(task, data=data, limit=limit)
    needs_run_model = any(arm.model is None for arm in exp.cfg.variants)
    model_dir, base = run_model(cfg) if needs_run_model else (None, None)
    return arm_accuracy(exp, settings, templates, model_dir, loaded, base or cfg.model)


def _fmt(value, pattern="{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)


def _interval(iv) -> str:
    return "-" if iv is None else f"[{iv[0]:.2f}, {iv[1]:.2f}]"


def _print_report(result: dict) -> None:
    from rich.table import Table

    from domaintune.console import console

    with_task = any("task" in arm for arm in result["variants"].values())
    table = Table(title=f"experiment {result['experiment']} (control: {result['control']})")
    columns = ["variant", "weight", "n", "errors", "p50 ms", "p95 ms", "prompt tok", "completion tok",
               "feedback", "positive rate", "95% interval", "verdict"]
    for column in columns + (["task acc", "task 95%", "task verdict"] if with_task else []):
        table.add_column(column)
    for name, arm in result["variants"].items():
        fb = arm["feedback"]
        row = [name, f"{result['weights'][name]:g}", str(arm["n"]), str(arm["errors"]),
               _fmt(arm["latency_ms"]["p50"]), _fmt(arm["latency_ms"]["p95"]),
               _fmt(arm["tokens"]["prompt_mean"]), _fmt(arm["tokens"]["completion_mean"]), str(fb["n"]),
               _fmt(fb["rate"], "{:.3f}"), _interval(fb["interval"]), arm["verdict"]]
        if with_task:
            t = arm["task"]
            row += [_fmt(t["rate"], "{:.3f}"), _interval(t["interval"]), t.get("verdict", "control")]
        table.add_row(*row)
    console.print(table)
    console.print(result["summary"] or "only a control arm")


# ---------------------------------------------------------------------- model versions
def _model_context(config, overrides):
    from domaintune.serve.command import load_with_settings
    from domaintune.serve.experiment_store import ExperimentStore

    cfg, settings = load_with_settings(config, overrides or [])
    return settings.model_name or cfg.name, settings, ExperimentStore(settings.experiments.store)


@serve_models_app.command("list")
def list_versions(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg) -> None:
    """The registered versions, which one the served model name points at, and the promotion history."""
    def run():
        from domaintune.console import console

        alias, settings, store = _model_context(config, overrides)
        active = store.active_version(alias)
        console.print(f"'{alias}' -> {active or 'the run’s own model'}")
        for v in settings.models.versions:
            console.print(f"  {'*' if v.id == active else ' '} {v.id}  {v.path}  {v.description}")
        for event in store.model_history(alias):
            console.print(f"  #{event['seq']} {event['action']} -> {event['version'] or 'run model'} "
                          f"(was {event['previous'] or 'run model'}) by {event['actor']}")
    _handled(run)


def _change(config, overrides, action: str, version: str | None, actor: str | None) -> None:
    from domaintune.console import console
    from domaintune.serve.models_registry import change
    from domaintune.serve.store.records import admin_auditor

    alias, settings, store = _model_context(config, overrides)
    auditor = admin_auditor(settings)  # the server's hash chain (serve.audit), opened before the change
    try:
        state = change(store, alias, action, version, [v.id for v in settings.models.versions],
                       actor or f"cli:{getpass.getuser()}", auditor)
    finally:
        getattr(auditor, "close", lambda: None)()
    console.print(f"[green]ok[/] {action}: '{alias}' now serves {state['active'] or 'the run’s own model'} "
                  f"(was {state['previous'] or 'the run’s own model'}); event #{state['seq']} recorded. A running "
                  f"server switches on its next request.")


@serve_models_app.command("promote")
def promote(config: Path = ConfigArg, version: str = typer.Argument(..., help="A serve.models.versions id."),
            overrides: list[str] | None = OverridesArg,
            actor: str | None = typer.Option(None, help="Who promotes (recorded); default: cli:<login>.")) -> None:
    """Point the served model name at VERSION (audited; takes effect on the next request)."""
    _handled(lambda: _change(config, overrides, "promote", version, actor))


@serve_models_app.command("rollback")
def rollback(config: Path = ConfigArg, overrides: list[str] | None = OverridesArg,
             actor: str | None = typer.Option(None, help="Who rolls back (recorded); default: cli:<login>.")) -> None:
    """Undo the last promotion: the served model name points at the version before it (audited)."""
    _handled(lambda: _change(config, overrides, "rollback", None, actor))
