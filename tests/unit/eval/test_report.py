"""The HTML report is self-contained (images as base64 PNG) and regenerates from files on disk."""

import base64
import json
import re

import pytest
from typer.testing import CliRunner

from domaintune.artifacts import atomic_write_json
from domaintune.cli import app
from domaintune.errors import StageError
from domaintune.eval.report import write_report


def _results() -> dict:
    def task(b, t, group):
        return {"base": {"metrics": {"acc": b}, "n": 10, "shots": 0},
                "tuned": {"metrics": {"acc": t}, "n": 10, "shots": 0},
                "group": group, "metric": "acc", "version": "1", "delta_points": 100 * (t - b)}

    streams = {s: {"base": {"ppl": 10.0, "bpb": 1.0}, "tuned": {"ppl": p, "bpb": 0.9}, "ppl_change_pct": 10 * (p - 10)}
               for s, p in (("english", 9.5), ("chinese", 10.2), ("domain", 6.0))}
    return {"split": "test", "streams": streams, "tasks": {"mmlu": task(0.3, 0.29, "general"),
                                                           "bank": task(0.4, 0.6, "domain")},
            "gate": {"status": "failed", "reason": "task mmlu: acc change (points) -1.00, needs >= -0.5",
                     "checks": [{"what": "task mmlu", "group": "general", "measure": "acc change (points)",
                                 "value": -1.0, "rule": ">= -0.5", "passed": False}]}, "gate_metric": "acc"}


def _loss_png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 2, 1])
    fig.savefig(path)
    plt.close(fig)


def test_report_embeds_radar_perplexity_and_loss_images(tmp_path):
    run = tmp_path / "demo"
    atomic_write_json(run / "eval" / "eval.json", _results())
    (run / "train").mkdir()
    _loss_png(run / "train" / "loss_curves.png")
    atomic_write_json(run / "train" / "manifest.json", {"outputs": {"loss_curves": "loss_curves.png"}, "metrics": {}})
    written = write_report(run)
    page = written["html"].read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3  # radar, perplexity bars, loss curves
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "FAILED" in page and "task mmlu" in page and "+20.0" in page
    report = json.loads(written["json"].read_text(encoding="utf-8"))
    assert report["gate"]["status"] == "failed" and set(report["images"]) == {"radar", "perplexity", "loss/train"}


def test_report_command_regenerates_and_errors_clearly(tmp_path):
    run = tmp_path / "demo"
    atomic_write_json(run / "eval" / "eval.json", _results())
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "eval" / "eval_report.html").is_file()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "run `domaintune eval`" in " ".join(missing.output.split())
    with pytest.raises(StageError):
        write_report(tmp_path / "nope")


def test_report_shows_the_kb_eval_next_to_the_tables(tmp_path):
    run = tmp_path / "demo"
    atomic_write_json(run / "eval" / "eval.json", _results())
    atomic_write_json(run / "kb" / "bank" / "eval.json", {
        "kb": "bank", "embedder": None, "k": 5,
        "retrieval": [{"mode": "lexical", "questions": 312, "recall@5": 0.9647, "mrr": 0.9, "recall_by_lang":
                       {"en": 0.96, "zh": 0.97}, "latency_ms_p50": 0.5, "latency_ms_p95": 4.2}],
        "answers": [{"model": "tuned", "questions": 13, "accuracy_no_retrieval": 0.0769,
                     "accuracy_with_retrieval": 0.8462, "correct_and_cited": 0.6923}]})
    atomic_write_json(run / "kb" / "other" / "eval.json", {"not": "a kb eval"})
    page = write_report(run)["html"].read_text(encoding="utf-8")
    assert "Knowledge base 'bank'" in page and "0.965" in page and "84.6" in page and "69.2" in page
    assert "other" not in page.split("Knowledge base")[-1]
