"""The report takes each training stage's loss curves from its manifest `outputs`: SFT-auto
attempts and align appear (they never wrote `<stage>/loss_curves.png`)."""

import json

from domaintune.artifacts import RunDir, atomic_write_json
from domaintune.eval.report import write_report


def _png(path):
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure()
    fig.add_subplot().plot([1, 2, 3], [3, 2, 1])
    fig.savefig(path)


def test_every_listed_loss_plot_is_in_the_report_in_stage_order(tmp_path):
    run = RunDir(tmp_path / "demo")
    atomic_write_json(run.root / "eval" / "eval.json", {"streams": {}, "tasks": {}, "gate": {}})
    for rel in ("attempts/lora/loss_curves.png", "attempts/full/loss_curves.png"):
        _png(run.root / "sft" / rel)
    _png(run.root / "align" / "loss_curves.png")
    attempts = [{"method": "lora", "steps": 3, "stop_reason": "completed all 3 planned steps"},
                {"method": "full", "steps": 2, "stop_reason": "auto-eval plateau: flat"}]
    run.write_manifest("align", {"started_at": "2026-01-01T10:05:00", "outputs": {"loss_curves": "loss_curves.png"},
                                 "metrics": {}})
    run.write_manifest("sft", {"started_at": "2026-01-01T10:00:00", "metrics": {"attempts": attempts},
                               "outputs": {"loss_curves/lora": "attempts/lora/loss_curves.png",
                                           "loss_curves/full": "attempts/full/loss_curves.png"}})
    written = write_report(run.root)
    images = json.loads(written["json"].read_text())["images"]
    assert [k for k in images if k.startswith("loss/")] == ["loss/sft/lora", "loss/sft/full", "loss/align"]
    page = written["html"].read_text()
    assert "Training loss — sft/full" in page and "auto-eval plateau: flat" in page
