"""Stage "export": a standalone model folder (adapters merged), with the training-time chat
template, then answers to sample prompts from the exported folder itself — proof that it
loads and works without domaintune or peft."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from domaintune import models
from domaintune.artifacts import RunDir, StageResult, atomic_write_json
from domaintune.config import Config
from domaintune.console import console
from domaintune.export import deploy
from domaintune.generation import generate_reply
from domaintune.model_meta import EXPORT_RECORD, describe_folder, method_of

STAGE = "export"


def inputs(cfg: Config) -> list[str]:
    return models.model_inputs(cfg.model)


def _write_model(cfg: Config, run_dir: RunDir, out: Path, device: str) -> None:
    source = cfg.final_model_stage  # the last model stage: train, sft or align
    trained_dir = run_dir.output(source, "model", by=STAGE)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    merged = cfg.export.merge or not models.is_adapter_dir(trained_dir)
    if merged:  # the trained folder's tokenizer carries the chat template training used (e.g. sft.template)
        trained = models.load_trained(trained_dir, base=cfg.model, device=device)
        models.merge_and_save(trained.model, trained.tokenizer, staging, dtype=cfg.export.dtype)
    else:  # adapter-only export: small, loads onto the base recorded below (`domaintune chat` does that)
        shutil.copytree(trained_dir, staging)
    folder = describe_folder(trained_dir, base=cfg.model)
    pinned = models.hub_revision(cfg.model)
    provenance = {"base_model": cfg.model.base, "revision": cfg.model.revision,
                  "base_commit": pinned.sha if pinned else None, "run": cfg.name, "source_stage": source,
                  "merged": cfg.export.merge, "source_fingerprint": run_dir.require(source, by=STAGE)["fingerprint"],
                  "method": method_of(trained_dir, folder.kind, folder.manifest, folder.export),
                  "model": cfg.section("model")}  # what an adapter-only export loads onto
    (staging / EXPORT_RECORD).write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def _answer_samples(cfg: Config, model_dir: Path, device: str) -> list[dict[str, str]]:
    if not cfg.export.sample_prompts:
        return []
    # the exported folder alone, as `domaintune chat` will load it (an adapter onto its recorded base)
    trained = models.load_trained(model_dir, device=device)
    model, tokenizer = trained.model.eval(), trained.tokenizer
    samples = []
    for prompt in cfg.export.sample_prompts:
        answer = generate_reply(model, tokenizer, [{"role": "user", "content": prompt}],
                                max_new_tokens=cfg.export.max_new_tokens)
        samples.append({"prompt": prompt, "answer": answer.strip()})
        console.print(f"  [bold]Q:[/] {prompt}\n  [bold green]A:[/] {answer.strip()}\n")
    return samples


def run(cfg: Config, run_dir: RunDir) -> StageResult:
    out_dir = run_dir.stage_dir(STAGE)
    device = models.resolve_device(cfg.runtime.device)
    model_dir = out_dir / "model"
    _write_model(cfg, run_dir, model_dir, device)
    size_mb = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()) / 2**20
    kind = "merged model" if (model_dir / "config.json").is_file() else f"adapter for {cfg.model.base}"
    console.print(f"  exported the {kind} to {model_dir} ({size_mb:.0f} MB); try: domaintune chat {model_dir}")
    samples = _answer_samples(cfg, model_dir, device)
    atomic_write_json(out_dir / "samples.json", samples)
    report = deploy.export_formats(cfg, run_dir, out_dir, model_dir)  # raises past a tolerance, report written
    outputs = {"model": "model", "samples": "samples.json"}
    metrics = {"size_mb": round(size_mb, 1), "samples": len(samples)}
    if report:
        outputs["report"] = deploy.REPORT
        outputs.update({f"gguf_{r['format']}": r["file"] for r in report["formats"] if r["format"] != "int8"})
        outputs.update({"int8": "int8"} if cfg.export.quantize else {})
        outputs.update({"modelfile": "gguf/Modelfile"} if "modelfile" in report else {})
        metrics.update({f"{r['format']}_ppl_rise_pct": round(r["ppl_rise_pct"], 4) for r in report["formats"]})
        metrics.update({f"{r['format']}_smaller": round(r["smaller"], 2) for r in report["formats"]})
    return StageResult(outputs=outputs, metrics=metrics,
                       summary=f"{'merged' if cfg.export.merge else 'adapter'} model, {size_mb:.0f} MB → {model_dir}"
                               + deploy.summary(report))
