"""A project moved or cloned to another folder keeps its fingerprints: inputs are named relative to
the config file's folder and hashed by content (bug: absolute paths re-ran every stage)."""

import shutil

from domaintune.artifacts import RunDir
from domaintune.cli import STAGES
from domaintune.config import load_config
from domaintune.pipeline import fingerprint_details
from domaintune.registry import import_target

CONFIG = """name: moved
model: {base: model}
data:
  sources: [{path: docs, stream: domain}]
  rules_file: rules.yaml
  pii: {enabled: true, dictionaries: {NAME: names.txt}}
mix: {mixture: {domain: 1}, tokens: 2k}
eval: {tasks: [{task: mmlu, data: mmlu.jsonl}]}
"""


def _project(root):
    root.mkdir(parents=True)
    (root / "domaintune.yaml").write_text(CONFIG, encoding="utf-8")
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("Harborview Bank charges a fee for wires.\n" * 5, encoding="utf-8")
    (root / "rules.yaml").write_text("glossary: [Harborview]\n", encoding="utf-8")
    (root / "names.txt").write_text("Alice\n", encoding="utf-8")
    (root / "mmlu.jsonl").write_text('{"question": "q"}\n', encoding="utf-8")
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    return root / "domaintune.yaml"


def _fingerprints(config_path):
    cfg = load_config(config_path)
    out = {}
    for spec in STAGES:
        if spec.name in ("data", "mix", "eval", "export"):
            module = import_target(spec.target)
            out[spec.name] = fingerprint_details(spec, cfg, RunDir(cfg.run_path), module, enabled=set())
    return out


def test_copied_project_has_the_same_fingerprints(tmp_path):
    first = _project(tmp_path / "a" / "project")
    clone = tmp_path / "elsewhere" / "deeper" / "project"
    shutil.copytree(first.parent, clone, copy_function=shutil.copy)  # new mtimes, same content
    before, after = _fingerprints(first), _fingerprints(clone / "domaintune.yaml")
    assert before == after
    assert "docs/a.txt" in before["data"]["inputs"] and "model" in before["mix"]["inputs"]
    (clone / "docs" / "a.txt").write_text("changed\n", encoding="utf-8")
    assert _fingerprints(clone / "domaintune.yaml")["data"] != before["data"]
