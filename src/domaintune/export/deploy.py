"""The deployment formats of the export stage: GGUF files (+ Modelfile) and the INT8 folder, each
verified against the merged fp32 model and written to export_report.json before the tolerance gate."""

from __future__ import annotations

import json
import random
from pathlib import Path

from domaintune.artifacts import RunDir, atomic_write_json
from domaintune.config import Config
from domaintune.console import console
from domaintune.export import verify

REPORT = "export_report.json"


def source_gguf(cfg: Config) -> Path | None:
    """The GGUF the base model came from: model.base itself, or the file `models import-gguf` recorded."""
    base = Path(cfg.model.base)
    if cfg.model.base.endswith(".gguf") and base.is_file():
        return base
    if cfg.model.gguf_file and (base / cfg.model.gguf_file).is_file():
        return base / cfg.model.gguf_file
    record = base / "domaintune_import.json"
    if record.is_file():
        src = Path(json.loads(record.read_text()).get("source", ""))
        return src if src.is_file() else None
    return None


def held_out_texts(cfg: Config, run_dir: RunDir, split: str | None = None) -> tuple[list[str], str]:
    """Documents of every stream's eval.split (or `split`; seeded order), or Python's own docs without a
    data stage (the first 40 topics; the calibration split "train" takes the next 40)."""
    split = split or cfg.eval.split
    if cfg.data is not None and run_dir.manifest("data") is not None:
        index = json.loads(run_dir.output("data", "streams", by="export").read_text(encoding="utf-8"))
        docs = []
        for stream in sorted(index):
            with (run_dir.root / "data" / index[stream][split]).open(encoding="utf-8") as fh:
                part = [json.loads(line)["text"] for line in fh]
            random.Random(f"{cfg.seed}:{stream}").shuffle(part)
            docs.append(part)
        interleaved = [d for group in zip(*docs) for d in group] if docs else []
        return interleaved, f"data {split} split ({', '.join(sorted(index))})"
    from pydoc_data.topics import topics

    first = 40 if split == "train" else 0
    return [topics[k] for k in sorted(topics)[first:first + 40]], "pydoc_data.topics (no data stage)"


def _q8_importance(cfg: Config, run_dir: RunDir, ref, ref_tok) -> tuple[dict | None, str | None]:
    """Layer-input statistics for the Q8_0 scale search, from other text than the verification's."""
    from domaintune.export.gguf_writer import FOUR_BIT
    from domaintune.export.q8_scales import input_importance

    uses_q8 = any(f == "q8_0" or f in FOUR_BIT for f in cfg.export.gguf)  # 4-bit files hold Q8_0 embeddings
    if not uses_q8 or cfg.export.calibration_tokens == 0:
        return None, None
    texts, origin = held_out_texts(cfg, run_dir, split="train")
    windows = verify.token_windows(ref_tok, texts, cfg.export.calibration_tokens)
    return input_importance(ref, windows), f"{sum(len(w) for w in windows)} tokens of {origin}"


def _weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def _load_reference(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def _gguf_rows(cfg: Config, run_dir: RunDir, out_dir: Path, model_dir: Path, ref, ref_tok,
               texts) -> tuple[list[dict], Path | None]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domaintune.export.gguf_writer import write_gguf

    rows, first = [], None
    gguf_dir = out_dir / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    src = source_gguf(cfg)
    importance, calibration = _q8_importance(cfg, run_dir, ref, ref_tok)
    for fmt in cfg.export.gguf:
        path = gguf_dir / f"{cfg.name}-{fmt}.gguf"
        written = write_gguf(model_dir, path, fmt, source=src, importance=importance)
        written["calibration"] = calibration
        first = first or path
        cand = verify.Candidate(f"gguf {fmt}", AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=path.name, dtype=torch.float32), AutoTokenizer.from_pretrained(
            gguf_dir, gguf_file=path.name), path.stat().st_size)
        row = verify.compare(ref, ref_tok, _weights_bytes(model_dir), cand, texts, cfg.export.verify_tokens,
                             cfg.export.verify_new_tokens)
        row.update(format=fmt, file=str(path.relative_to(out_dir)), written=written,
                   tolerance=cfg.export.tolerance_for(fmt).model_dump())
        row["violations"] = verify.violations(row, cfg.export.tolerance_for(fmt))
        rows.append(row)
        del cand
    return rows, first


def _int8_row(cfg: Config, out_dir: Path, model_dir: Path, ref, ref_tok, texts) -> dict:
    from domaintune import quantized

    model, tok = _load_reference(model_dir)
    names = quantized.quantize_int8(model, keep_lm_head=not cfg.export.quantize_lm_head)
    folder = out_dir / "int8"
    quantized.save_int8(model, tok, names, folder)
    del model
    cand = verify.Candidate("int8", quantized.load_int8(folder), tok, _weights_bytes(folder))  # the saved folder
    row = verify.compare(ref, ref_tok, _weights_bytes(model_dir), cand, texts, cfg.export.verify_tokens,
                         cfg.export.verify_new_tokens)
    row.update(format="int8", file="int8", quantized_modules=len(names), tolerance=cfg.export.tolerance_for(
        "int8").model_dump())
    row["violations"] = verify.violations(row, cfg.export.tolerance_for("int8"))
    return row


def _modelfile(cfg: Config, gguf_path: Path, ref_tok, context_length: int) -> dict:
    from domaintune.export import modelfile

    text, info = modelfile.build(gguf_path.name, ref_tok, context_length, system=cfg.export.system)
    (gguf_path.parent / "Modelfile").write_text(text, encoding="utf-8")
    info["file"] = "gguf/Modelfile"
    return info


def export_formats(cfg: Config, run_dir: RunDir, out_dir: Path, model_dir: Path) -> dict | None:
    """Write and verify every configured format; export_report.json; raise past a tolerance."""
    e = cfg.export
    if not e.gguf and not e.quantize:
        return None
    ref, ref_tok = _load_reference(model_dir)
    texts, texts_from = held_out_texts(cfg, run_dir)
    rows, first = _gguf_rows(cfg, run_dir, out_dir, model_dir, ref, ref_tok, texts) if e.gguf else ([], None)
    if e.quantize == "int8":
        rows.append(_int8_row(cfg, out_dir, model_dir, ref, ref_tok, texts))
    report = {"reference": {"folder": "model", "bytes": _weights_bytes(model_dir)}, "held_out": texts_from,
              "probe": list(verify.PROBE_PROMPTS), "formats": rows}
    if e.modelfile and first is not None:
        report["modelfile"] = _modelfile(cfg, first, ref_tok, ref.config.max_position_embeddings)
    path = out_dir / REPORT
    atomic_write_json(path, report)
    _print(report)
    failures = list(rows)
    if report.get("modelfile") and not report["modelfile"]["render_equal"]:
        failures.append({"label": "Modelfile", "violations": ["its TEMPLATE renders other text than the chat "
                                                              "template (see modelfile.differences)"]})
    verify.check(failures, path)
    return report


def _print(report: dict) -> None:
    from rich.table import Table

    table = Table(title="export verification vs the merged fp32 model", title_justify="left")
    for col in ("format", "size", "smaller", "Δppl % ± SE", "KL", "top-1", "greedy same", "tok/s", "result"):
        table.add_column(col)
    for r in report["formats"]:
        table.add_row(r["format"], f"{r['bytes'] / 2**20:.1f} MiB", f"{r['smaller']:.2f}x",
                      f"{r['ppl_rise_pct']:+.3f} ± {r.get('ppl_rise_se_pct', 0):.3f}", f"{r['kl']:.2g}",
                      f"{r['top1']:.3f}",
                      f"{r['greedy_same']}/{r['greedy_prompts']}", f"{r['tokens_per_s']:.1f}",
                      "[green]ok[/]" if not r["violations"] else "[bold red]" + "; ".join(r["violations"]) + "[/]")
    console.print(table)
    if "modelfile" in report:
        mf = report["modelfile"]
        console.print(f"  Modelfile ({mf['family']}): renders {'equal' if mf['render_equal'] else 'DIFFERENT'} to "
                      f"the chat template on {mf['render_checked']} conversations")


def summary(report: dict | None) -> str:
    if not report:
        return ""
    return "; " + ", ".join(f"{r['format']} {r['smaller']:.1f}x smaller {r['ppl_rise_pct']:+.2f}% ppl"
                            for r in report["formats"])
