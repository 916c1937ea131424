"""Stage "mix": tokenize each stream's training split, sample it at the declared token ratios,
and pack the result into rows with document boundaries (saved as an Arrow dataset)."""

from __future__ import annotations

import json
from pathlib import Path

from domaintune import models
from domaintune.artifacts import RunDir, StageResult, atomic_write_json
from domaintune.config import Config
from domaintune.console import console, progress
from domaintune.errors import DataError
from domaintune.mix.boundaries import boundary_tokens
from domaintune.mix.buckets import choose_buckets
from domaintune.mix.sampling import Doc, draw_stream, token_targets
from domaintune.packing import pack, unfilled_fraction

STAGE = "mix"


def inputs(cfg: Config) -> list[str]:
    return models.model_inputs(cfg.model)  # the tokenizer decides the token counts


def _read_docs(run_dir: RunDir, stream: str, split: str = "train") -> list[tuple[str, str]]:
    index = json.loads(run_dir.output("data", "streams", by=STAGE).read_text(encoding="utf-8"))
    if stream not in index:
        raise DataError(f"mix.mixture names stream '{stream}', but the data stage produced only "
                        f"{sorted(index)}; add a data source with stream: {stream}")
    path = run_dir.root / "data" / index[stream][split]
    with path.open(encoding="utf-8") as fh:
        return [(r["id"], r["text"]) for r in map(json.loads, fh)]


def _tokenize(tokenizer, docs: list[tuple[str, str]]) -> list[Doc]:
    """Documents framed as [bos] + text + [eos] (bos only if the tokenizer has one), with the
    token positions where an over-long document may be split cleanly."""
    texts = [t for _, t in docs]
    fast = getattr(tokenizer, "is_fast", False)  # offsets (for clean splits) need a fast tokenizer
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=fast)
    head = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    tail = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    out = []
    for i, (doc_id, text) in enumerate(docs):
        cuts = boundary_tokens(text, enc["offset_mapping"][i]) if fast else {}
        out.append(Doc(doc_id, head + enc["input_ids"][i] + tail, {k + len(head): v for k, v in cuts.items()}))
    return out


def _save_rows(rows, out: Path) -> None:
    from datasets import Dataset

    Dataset.from_dict({
        "input_ids": [[t for s in r.segments for t in s.ids] for r in rows],
        "segment_lengths": [[len(s.ids) for s in r.segments] for r in rows],
        "segment_streams": [[s.stream for s in r.segments] for r in rows],
        "segment_doc_ids": [[s.doc_id for s in r.segments] for r in rows],
        "segment_pieces": [[s.piece for s in r.segments] for r in rows],
        "bucket": [r.capacity for r in rows],
        "length": [r.used for r in rows],
    }).save_to_disk(str(out))


def _heldout_rows(cfg: Config, run_dir: RunDir, tokenizer, streams: list[str], buckets: list[int]):
    """Up to `heldout_tokens` per stream from the val split, packed like the training data, so
    training can report held-out loss per stream at each eval interval."""
    segments = []
    for idx, name in enumerate(streams):
        docs = _read_docs(run_dir, name, "val")
        if cfg.mix.heldout_tokens and docs:
            segments += draw_stream(_tokenize(tokenizer, docs), idx, cfg.mix.heldout_tokens, max(buckets),
                                    max_repeats=1, seed=cfg.seed).segments
    return pack(segments, buckets, cfg.seed)


def _cut_counts(segments) -> dict[str, int]:
    """How documents were split: pieces ending at a paragraph, a sentence, a hard cut, ..."""
    counts: dict[str, int] = {}
    for s in segments:
        if s.piece > 0 or s.cut != "end":
            counts[s.cut] = counts.get(s.cut, 0) + 1
    return counts


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    mcfg = cfg.mix
    out_dir = run_dir.stage_dir(STAGE)
    tokenizer = models.load_tokenizer(cfg.model)
    streams = list(mcfg.mixture)
    targets = token_targets(mcfg.mixture, mcfg.tokens)
    buckets = mcfg.bucket_lengths
    segments, per_stream = [], {}
    with progress() as bar:
        task = bar.add_task("tokenize + sample", total=len(streams), info="")
        for idx, name in enumerate(streams):
            bar.update(task, info=name)
            docs = _read_docs(run_dir, name)
            draw = draw_stream(_tokenize(tokenizer, docs), idx, targets[name], max(buckets),
                               mcfg.max_repeats, cfg.seed)
            if draw.exhausted:
                console.print(f"  [yellow]warning:[/] stream '{name}' ran out after {mcfg.max_repeats} "
                              f"epochs: {draw.tokens:,} of {targets[name]:,} target tokens")
            segments += draw.segments
            per_stream[name] = {"target_tokens": targets[name], "tokens": draw.tokens,
                                "segments": len(draw.segments), "epochs": draw.epochs,
                                "source_docs": len(docs), "exhausted": draw.exhausted,
                                "splits": _cut_counts(draw.segments)}
            bar.advance(task)
    if not segments:
        raise DataError("the mixture produced no tokens; check mix.tokens and the data stage output")
    auto = None
    if mcfg.buckets == "auto":  # the row length from the sampled segments' lengths (mix/buckets.py)
        auto = choose_buckets([len(s.ids) for s in segments], mcfg.seq_len, cfg.seed)
        buckets = auto.buckets
        console.print(f"  buckets: auto chose {buckets} (simulated empty share per row length: "
                      f"{', '.join(f'{r}: {u:.1%}' for r, u in list(auto.unfilled.items())[:6])}, ...)")
    rows = pack(segments, buckets, cfg.seed)
    _save_rows(rows, out_dir / "packed")
    heldout = _heldout_rows(cfg, run_dir, tokenizer, streams, buckets)
    if heldout:
        _save_rows(heldout, out_dir / "heldout")
    total = sum(s["tokens"] for s in per_stream.values())
    weight_sum = sum(mcfg.mixture.values())
    for name, s in per_stream.items():
        s["share"] = s["tokens"] / total
        s["declared_share"] = mcfg.mixture[name] / weight_sum
    info = {"streams": streams, "buckets": buckets, "rows": len(rows), "tokens": total,
            "rows_per_bucket": {b: sum(r.capacity == b for r in rows) for b in buckets},
            "unfilled_fraction": unfilled_fraction(rows), "per_stream": per_stream}
    if auto is not None:
        info["auto_buckets"] = auto.report()
    atomic_write_json(out_dir / "mix.json", info)
    _print_table(info)
    return StageResult(
        outputs={"packed": "packed", "info": "mix.json"} | ({"heldout": "heldout"} if heldout else {}),
        metrics={k: info[k] for k in ("rows", "tokens", "unfilled_fraction")} | {
            f"share/{n}": round(s["share"], 4) for n, s in per_stream.items()},
        summary=f"{total:,} tokens in {len(rows):,} rows (buckets {buckets}), "
                f"rows {1 - info['unfilled_fraction']:.1%} full",
    )


def _print_table(info: dict) -> None:
    from rich.table import Table

    table = Table(title="token mixture", title_justify="left")
    for col in ("stream", "tokens", "share", "declared", "epochs", "docs"):
        table.add_column(col, justify="right" if col != "stream" else "left")
    for name, s in info["per_stream"].items():
        table.add_row(name, f"{s['tokens']:,}", f"{s['share']:.1%}", f"{s['declared_share']:.1%}",
                      str(s["epochs"]), str(s["source_docs"]))
    console.print(table)
