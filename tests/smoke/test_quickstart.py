"""The quickstart pipeline end to end on a tiny random model: data -> mix -> train -> eval -> export,
then an unchanged re-run that skips everything, and a changed setting that re-runs downstream."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domaintune.cli import app
from fixtures.cli import invoke as _invoke
from fixtures.cli import stage_statuses
from fixtures.quickstart import make_quickstart_workdir

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the quickstart config next to a small corpus built by the real builder."""
    return make_quickstart_workdir(tmp_path_factory.mktemp("quickstart"))


def _overrides(tiny_model_dir: Path) -> list[str]:
    return [f"model.base={tiny_model_dir}", "mix.tokens=6k", "mix.buckets=[64,128]", "train.max_steps=3",
            "train.batch_tokens=256", "train.eval_every=2", "mix.heldout_tokens=1k",
            "eval.max_docs=4", "eval.window=64", "eval.stride=32",
            "export.max_new_tokens=8", "runtime.threads=1",
            "eval.gate.enabled=false"]  # a random tiny model has no skills to guard (tests/smoke/test_eval_gate.py)



def test_validate_quickstart(workdir, tiny_model_dir):
    out = _invoke("validate", str(workdir / "domaintune.yaml"), *_overrides(tiny_model_dir)).output
    assert "ok" in out


@pytest.fixture(scope="module")
def first_run(workdir, tiny_model_dir) -> Path:
    """The whole pipeline once; every test that reads its outputs depends on this, not on test order."""
    _invoke("run", str(workdir / "domaintune.yaml"), *_overrides(tiny_model_dir))
    return workdir / "runs" / "quickstart"


def test_pipeline_end_to_end(first_run):
    run = first_run
    for stage in ("data", "mix", "train", "eval", "export"):
        assert (run / stage / "manifest.json").is_file(), stage
    results = json.loads((run / "eval" / "eval.json").read_text())["streams"]
    assert set(results) == {"domain", "english", "chinese"}
    assert all("base" in r and r["tuned"]["ppl"] > 0 for r in results.values())
    export = run / "export" / "model"
    assert (export / "model.safetensors").is_file() and not (export / "adapter_config.json").exists()
    report = json.loads((run / "export" / "export_report.json").read_text())  # the demo's verified Q8_0 + Modelfile
    assert [r["format"] for r in report["formats"]] == ["q8_0"] and not report["formats"][0]["violations"]
    assert (run / "export" / "gguf" / "Modelfile").read_text().startswith("FROM ./quickstart-q8_0.gguf")
    assert (run / "train" / "loss_curves.png").is_file() and (run / "eval" / "perplexity.png").is_file()
    last = json.loads((run / "train" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val/loss/domain", "val/loss/english", "val/loss/chinese", "train/loss"} <= set(last)
    assert list((run / "train" / "tensorboard").glob("events.out.tfevents.*"))
    mix = json.loads((run / "mix" / "mix.json").read_text())
    for s in mix["per_stream"].values():  # realized token shares follow the declared ratio
        assert abs(s["share"] - s["declared_share"]) < 0.01


def test_unchanged_rerun_skips_everything_then_a_changed_setting_reruns_downstream(first_run, workdir,
                                                                                   tiny_model_dir):
    cfg = str(workdir / "domaintune.yaml")
    out = _invoke("run", cfg, *_overrides(tiny_model_dir)).output
    assert stage_statuses(out) == {"data": "skipped", "mix": "skipped", "train": "skipped", "sft": "off",
                                   "align": "off", "distill": "off", "eval": "skipped", "export": "skipped"}

    out = _invoke("run", cfg, *_overrides(tiny_model_dir), "train.lr=5e-4").output
    assert stage_statuses(out) == {"data": "skipped", "mix": "skipped", "train": "ran", "sft": "off",
                                   "align": "off", "distill": "off", "eval": "ran", "export": "ran"}


def test_chat_one_shot_prints_the_exported_models_reply(first_run):
    """`chat --prompt` answers with the exported model and the chat template saved with it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domaintune.generation import generate_reply

    export = first_run / "export" / "model"
    prompt = "What is the wire fee?"
    printed = _invoke("chat", str(export), "--prompt", prompt, "--max-new-tokens", "5").stdout
    tokenizer = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    expected = generate_reply(model, tokenizer, [{"role": "user", "content": prompt}], max_new_tokens=5)
    assert expected  # the trained tiny model answers with newlines, so compare exactly, whitespace included
    assert printed == expected + "\n"


def test_validate_misspelled_key_exits_nonzero(tmp_path):
    bad = (QUICKSTART / "domaintune.yaml").read_text().replace("max_docs:", "max_doc:")
    (tmp_path / "bad.yaml").write_text(bad)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2
    assert "eval.max_doc: unknown key (did you mean 'max_docs'?)" in " ".join(result.output.split())


def test_pipeline_with_new_domain_tokens(workdir, tiny_model_dir, tmp_path):
    """Vocabulary extension flows through every stage: mix tokenizes with the new tokens, train
    grows and trains the embeddings, export ships the larger vocabulary."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = str(workdir / "domaintune.yaml")
    _invoke("run", cfg, *_overrides(tiny_model_dir), f"runs_dir={tmp_path}", "train.train_embeddings=true",
            "model.new_tokens=[Harborview, 海港银行]", "eval.compare_base=false")
    export = tmp_path / "quickstart" / "export" / "model"
    tok = AutoTokenizer.from_pretrained(export)
    assert len(tok("Harborview", add_special_tokens=False).input_ids) == 1
    base_vocab = len(AutoTokenizer.from_pretrained(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(export)
    assert model.get_input_embeddings().num_embeddings == base_vocab + 2


def test_validate_flags_buckets_longer_than_the_model_context(workdir, tiny_model_dir):
    result = CliRunner().invoke(app, ["validate", str(workdir / "domaintune.yaml"), *_overrides(tiny_model_dir),
                                      "mix.buckets=[128,4096]", "train.batch_tokens=4096"])
    assert result.exit_code == 2 and "exceeds the model's context" in " ".join(result.output.split())


def test_validate_flags_new_tokens_without_trainable_embeddings(workdir, tiny_model_dir):
    result = CliRunner().invoke(app, ["validate", str(workdir / "domaintune.yaml"), *_overrides(tiny_model_dir),
                                      "model.new_tokens=[Harborview]"])
    assert result.exit_code == 2 and "train.train_embeddings" in result.output


def test_three_stream_cpt_example_runs(workdir, tiny_model_dir, tmp_path):
    """The production-shaped 3:6:1 example runs end to end (scaled down to the tiny model)."""
    example = REPO / "examples" / "cpt-3stream" / "domaintune.yaml"
    cfg_dir = tmp_path / "cpt-3stream"
    cfg_dir.mkdir()
    shutil.copy(example, cfg_dir / "domaintune.yaml")
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart" / "data").symlink_to(workdir / "data")
    _invoke("run", str(cfg_dir / "domaintune.yaml"), f"model.base={tiny_model_dir}", "model.dtype=float32",
            "train.precision=fp32", "mix.tokens=8k", "mix.buckets=[64,128,256]", "mix.heldout_tokens=1k",
            "train.batch_tokens=512", "train.max_steps=3", "train.eval_every=2", "eval.max_tokens=2k",
            "eval.window=128", "eval.stride=64", "runtime.threads=1")
    mix = json.loads((cfg_dir / "runs" / "cpt-3stream" / "mix" / "mix.json").read_text())
    shares = {k: round(v["share"], 2) for k, v in mix["per_stream"].items()}
    assert shares == {"english": 0.3, "chinese": 0.6, "domain": 0.1}
