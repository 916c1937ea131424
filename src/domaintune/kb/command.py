"""`domaintune kb build|query|eval CONFIG`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import typer

from domaintune.console import console
from domaintune.errors import DomainTuneError

kb_app = typer.Typer(no_args_is_help=True, help="Knowledge base: build the index, query it, evaluate retrieval.")
ConfigArg = typer.Argument(..., help="The run's domaintune.yaml (with a kb: section).")


@dataclass(frozen=True)
class CliPrincipal:
    """Who `kb query --user` searches as (the shape of serve.hooks.Principal that the ACL reads)."""

    id: str
    user: str | None = None
    groups: frozenset[str] = frozenset()
    key_id: str | None = None
    scopes: dict = field(default_factory=dict)


@contextmanager
def _handled() -> Iterator[None]:
    """Our own errors print one line and exit with their code (as every domaintune command does)."""
    from rich.markup import escape

    try:
        yield
    except DomainTuneError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        raise typer.Exit(err.exit_code) from None


def _load(config: Path, overrides):
    from domaintune.config import load_config

    return load_config(config, overrides or [])


@kb_app.command("build")
def build(config: Path = ConfigArg, overrides: list[str] | None = typer.Argument(None, help="key.path=value")) -> None:
    """Index the governed documents; re-index changed ones, drop deleted ones."""
    from domaintune.kb.service import build_from_config, index_dir

    with _handled():
        cfg = _load(config, overrides)
        with console.status("kb: chunking and indexing…"):
            r = build_from_config(cfg)
    console.print(f"[green]ok[/] kb '{cfg.kb.name}' version {r.version}: {r.documents} documents, {r.chunks} chunks "
                  f"in {index_dir(cfg)} (added {len(r.added)}, changed {len(r.changed)}, deleted {len(r.deleted)}, "
                  f"relabelled {len(r.relabelled)}; {r.embedded_chunks} chunks embedded)")


@kb_app.command("query")
def query(config: Path = ConfigArg, question: str = typer.Argument(..., help="What to search for."),
          overrides: list[str] | None = typer.Argument(None, help="key.path=value"),
          k: int | None = typer.Option(None, help="Chunks to show (default kb.retrieval.top_k)."),
          mode: str | None = typer.Option(None, help="hybrid, lexical or dense (default kb.retrieval.mode)."),
          user: str | None = typer.Option(None, help="Search as this user (ACL), not the open local principal."),
          group: list[str] = typer.Option([], help="A group of --user (repeat the option)."),
          ) -> None:
    """Show the chunks a question retrieves, as a principal would see them."""
    from rich.markup import escape

    from domaintune.kb.service import open_from_config

    principal = CliPrincipal("local") if user is None else CliPrincipal(user, user, frozenset(group), key_id=user)
    with _handled():
        cfg = _load(config, overrides)
        hits = open_from_config(cfg, mode=mode).search(principal, question, k, mode=mode)
    if not hits:
        console.print("no chunk this principal may read matches")
    for h in hits:
        console.print(f"[bold][{h.rank}][/] {escape(h.document_id)} chars {h.start}-{h.end} "
                      f"(score {h.score:.4f}) — {escape(h.title)}")
        console.print("    " + escape(h.text[:300].replace("\n", " ")))


@kb_app.command("eval")
def evaluate(config: Path = ConfigArg, overrides: list[str] | None = typer.Argument(None, help="key.path=value"),
             questions: Path | None = typer.Option(None, help="Labelled JSONL set (default kb.eval_set)."),
             k: int = typer.Option(5, help="Cut-off of recall@k."),
             answers: bool = typer.Option(False, help="Also generate answers with the run's model (slow on CPU): "
                                                      "accuracy with and without retrieval, citation correctness."),
             limit: int | None = typer.Option(None, help="Use the first N questions (answers are slow)."),
             modes: str = typer.Option("lexical,dense,hybrid", help="Retrieval modes to compare."),
             models: str = typer.Option("base,tuned", help="With --answers: the models that answer (base: "
                                                           "model.base; tuned: the run's final model)."),
             batch_size: int = typer.Option(16, min=1, help="With --answers: prompts generated together."),
             out: Path | None = typer.Option(None, help="Write the results as JSON here (default: next to the "
                                                        "index, eval.json)."),
             ) -> None:
    """Recall@k and MRR per retrieval mode; with --answers, exact-answer accuracy and citations."""
    from domaintune.kb.evaluate import print_report, run_eval

    with _handled():
        cfg = _load(config, overrides)
        result = run_eval(cfg, questions, k=k, modes=[m.strip() for m in modes.split(",") if m.strip()],
                          answers=answers, limit=limit, out=out,
                          models=tuple(m.strip() for m in models.split(",") if m.strip()), batch_size=batch_size)
    print_report(result)


@kb_app.command("sft-data")
def sft_data(config: Path = ConfigArg, overrides: list[str] | None = typer.Argument(None, help="key.path=value"),
             out: Path = typer.Option(..., help="The JSONL to write (list it under sft.data)."),
             limit: int | None = typer.Option(None, min=1, help="Stop after this many conversations."),
             ) -> None:
    """Grounded-answer SFT conversations from the governed train split's Q/A pairs, in the served prompt format."""
    from domaintune.kb.grounded import write_sft_data
    from domaintune.kb.service import open_from_config

    with _handled():
        cfg = _load(config, overrides)
        with console.status("kb: retrieving sources for each pair…"):
            r = write_sft_data(cfg, open_from_config(cfg), out, limit=limit)
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r.dropped.items())
    console.print(f"[green]ok[/] {r.kept} conversations from {r.pairs} Q/A pairs in {r.documents} train documents "
                  f"-> {out} (dropped: {dropped}; report {out.name}.report.json)")
