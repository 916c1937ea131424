"""The quickstart synthesis example end to end on a tiny random model: data -> synth (doc_qa with the
model itself as teacher) -> mix -> train -> sft on the synthetic pairs -> eval -> export; then a
re-run resumes every generation unit from the journal."""

import json
import shutil
from pathlib import Path

from fixtures.cli import invoke as _invoke
from fixtures.quickstart import QUICKSTART, make_quickstart_workdir


def _overrides(tiny_model_dir: Path) -> list[str]:
    return [f"model.base={tiny_model_dir}", "mix.tokens=4k", "mix.buckets=[64,128]", "train.batch.max_steps=2",
            "train.batch.batch_tokens=256", "train.logging.eval_every=2", "mix.heldout_tokens=1k", "eval.max_docs=2",
            "eval.window=64", "eval.stride=64", "export.max_new_tokens=4", "runtime.threads=1",
            "eval.gate.enabled=false", "synth.doc_qa.max_chunks=3", "synth.doc_qa.questions_per_chunk=2",
            "synth.doc_qa.question.max_new_tokens=12", "synth.doc_qa.answer.max_new_tokens=12",
            "synth.teacher.batch_size=4", "synth.filters.grounding=false", "synth.filters.min_chars=1",
            "sft.batch.max_steps=2", "sft.max_len=512", "sft.val_fraction=0", "sft.template=chatml"]


def test_synth_feeds_sft_end_to_end(tmp_path, tiny_model_dir):
    work = make_quickstart_workdir(tmp_path)
    shutil.copy(QUICKSTART / "synth.yaml", work / "synth.yaml")
    cfg = str(work / "synth.yaml")
    _invoke("validate", cfg, *_overrides(tiny_model_dir))
    _invoke("run", cfg, *_overrides(tiny_model_dir))
    run = work / "runs" / "quickstart-synth"
    synth = json.loads((run / "synth" / "manifest.json").read_text())
    assert synth["metrics"]["generated"] == 6 and synth["metrics"]["kept"] >= 1
    report = json.loads((run / "synth" / "synth_report.json").read_text())
    assert [f["step"] for f in report["funnel"]] == ["generated", "length", "refusal_or_leak", "rouge_l_novelty",
                                                     "near_duplicate", "decontamination"]
    assert set(report["contamination"]) >= {"eval:harborview", "eval:mmlu", "heldout:domain/test"}
    assert report["speed"]["units"] == 12 and report["speed"]["tokens_per_s"] > 0
    rows = (run / "synth" / "sft.jsonl").read_text().splitlines()
    assert len(rows) == synth["metrics"]["kept"]
    sft = json.loads((run / "sft" / "manifest.json").read_text())
    assert "synth" in sft["upstream"] and sft["metrics"]["steps"] == 2
    assert (run / "export" / "manifest.json").is_file()
    # forced re-run of synth: every unit comes from the journal, same bytes out
    before = (run / "synth" / "sft.jsonl").read_bytes()
    _invoke("synth", cfg, *_overrides(tiny_model_dir), "--force")
    again = json.loads((run / "synth" / "synth_report.json").read_text())["speed"]
    assert again["units_resumed"] == 12 and again["units_generated"] == 0
    assert (run / "synth" / "sft.jsonl").read_bytes() == before
