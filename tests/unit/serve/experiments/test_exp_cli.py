"""`domaintune serve-models list|promote|rollback`, `domaintune ab report` (with an eval task) and the
checks `domaintune validate` runs on the sections."""

from __future__ import annotations

import json
import shutil

import pytest
from exp_helpers import build_version_dir

from domaintune.config.serve import ServeConfig
from fixtures.cli import invoke


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A run whose exported model is v1, with v2 registered and an experiment splitting between them."""
    root = tmp_path_factory.mktemp("exp-cli")
    v1, v2 = build_version_dir(root / "v1", seed=0), build_version_dir(root / "v2", seed=1)
    export = root / "runs" / "demo" / "export"
    shutil.copytree(v1, export / "model")
    (export / "manifest.json").write_text(json.dumps({"outputs": {"model": "model"}}), encoding="utf-8")
    (root / "task.jsonl").write_text("".join(json.dumps({"question": f"What is {i} plus 1?", "answer": str(i + 1)})
                                             + "\n" for i in range(3)), encoding="utf-8")
    (root / "sum.yaml").write_text(
        "name: sum\nversion: 1\nkind: generation\ndata:\n  path: task.jsonl\nprompt:\n  template: '{question}'\n"
        "generation:\n  max_new_tokens: 3\n  extract: last_number\n  gold_extract: last_number\n", encoding="utf-8")
    (root / "domaintune.yaml").write_text(f"""\
name: demo
runs_dir: runs
model:
  base: {v1}
serve:
  experiments:
    store: ab.db
    active:
      - name: tone
        variants:
          - {{name: A, weight: 1, template: summarize}}
          - {{name: B, weight: 1, template: classify, model: tiny-v2}}
  models:
    versions:
      - {{id: tiny-v2, path: {v2}, description: new tune}}
""", encoding="utf-8")
    return root


def test_promote_list_rollback_are_one_audited_command_each(project, caplog):
    cfg = str(project / "domaintune.yaml")
    with caplog.at_level("INFO", logger="domaintune.serve.audit"):
        out = invoke("serve-models", "promote", cfg, "tiny-v2", "--actor", "ops-alice").output
    assert "'demo' now serves tiny-v2" in out
    audit = [json.loads(r.getMessage()) for r in caplog.records if r.name == "domaintune.serve.audit"]
    assert audit[-1]["route"] == "cli:serve-models promote" and audit[-1]["principal"] == "ops-alice"
    listed = invoke("serve-models", "list", cfg).output
    assert "'demo' -> tiny-v2" in listed and "promote -> tiny-v2" in listed and "ops-alice" in listed
    assert "already points" in invoke("serve-models", "promote", cfg, "tiny-v2", code=2).output
    assert "not registered" in invoke("serve-models", "promote", cfg, "tiny-v9", code=2).output
    assert "now serves the run’s own model" in invoke("serve-models", "rollback", cfg).output
    assert "nothing to roll back" in invoke("serve-models", "rollback", cfg, code=2).output


def test_promote_and_rollback_go_into_the_servers_audit_chain(project, tmp_path):
    from domaintune.serve.store.audit import ChainAuditor
    from domaintune.serve.store.crypto import Keyring, parse_keyring

    ring = tmp_path / "ring"
    ring.write_text("k1 " + "A" * 43 + "=\n")
    ring.chmod(0o600)
    chain = ["serve.audit.enabled=true", f"serve.audit.db={tmp_path / 'audit.sqlite'}",
             f"serve.encryption.keyring_file={ring}", f"serve.experiments.store={tmp_path / 'ab.db'}"]
    cfg = str(project / "domaintune.yaml")
    invoke("serve-models", "promote", cfg, "tiny-v2", *chain, "--actor", "ops-bob")
    invoke("serve-models", "rollback", cfg, *chain, "--actor", "ops-bob")
    auditor = ChainAuditor(tmp_path / "audit.sqlite", Keyring(parse_keyring(ring.read_text(), "ring")))
    rows = list(reversed(auditor.query()))
    assert [(r["route"], r["principal"], r["detail"]["version"]) for r in rows] == [
        ("cli:serve-models promote", "ops-bob", "tiny-v2"), ("cli:serve-models rollback", "ops-bob", "")]
    assert auditor.verify()["ok"]


def test_ab_report_prints_arms_and_scores_an_eval_task_per_arm(project):
    from domaintune.serve.experiment_store import ExperimentStore

    store = ExperimentStore(project / "ab.db")
    for i, (arm, score) in enumerate([("A", 1.0), ("A", 0.0), ("B", 1.0)]):
        store.add_request(f"r{i}", "tone", arm, "local", 200, 50.0 + i, 10, 5)
        store.add_feedback(f"r{i}", score)
    store.close()
    out_json = project / "report.json"
    out = invoke("ab", "report", str(project / "domaintune.yaml"), "tone", "--task", str(project / "sum.yaml"),
                 "--json", str(out_json)).output
    assert "experiment tone (control: A)" in out and "B vs A: feedback inconclusive" in out
    report = json.loads(out_json.read_text(encoding="utf-8"))
    a, b = report["variants"]["A"], report["variants"]["B"]
    assert (a["n"], a["feedback"]["successes"], b["n"]) == (2, 1, 1)
    assert a["task"]["n"] == b["task"]["n"] == 3 and b["task"]["verdict"] in ("better", "worse", "inconclusive")
    assert "no experiment 'tonee'" in invoke("ab", "report", str(project / "domaintune.yaml"), "tonee",
                                             code=2).output


def test_ab_report_before_any_traffic_says_so(project):
    out = invoke("ab", "report", str(project / "domaintune.yaml"), "tone", "serve.experiments.store=none.db",
                 code=2).output
    assert "does not exist yet" in " ".join(out.split())  # rich wraps long lines at the terminal's width


def test_validate_names_unregistered_arm_models_and_missing_folders(tmp_path):
    settings = ServeConfig.model_validate({
        "experiments": {"active": [{"name": "e", "variants": [{"name": "A", "weight": 1, "template": "summarize"},
                                                              {"name": "B", "weight": 1, "model": "ghost"}]}]},
        "models": {"versions": [{"id": "v2", "path": str(tmp_path / "missing")}]},
        "templates": {"dirs": [str(tmp_path / "nope")]}})
    problems = settings.problems()
    assert any("variants[1].model: 'ghost' is not a registered version" in p for p in problems)
    assert any("models.versions[0].path: folder not found" in p for p in problems)
    assert any("templates.dirs[0]: folder not found" in p for p in problems)


@pytest.mark.parametrize(("section", "message"), [
    ({"experiments": {"active": [{"name": "e", "variants": [{"name": "A", "weight": 1, "template": "x"}]}]}},
     "at least 2"),
    ({"experiments": {"active": [{"name": "e", "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1,
                                                                                          "template": "x"}]}]}},
     "give a template, a model version, or both"),
    ({"experiments": {"active": [{"name": "e", "variants": [{"name": "A", "weight": 0, "template": "x"},
                                                            {"name": "B", "weight": 1, "template": "x"}]}]}},
     "greater than 0"),
    ({"templates": {"routes": {"/v1/feedback": "summarize"}}}, "not a generation route"),
])
def test_bad_sections_are_refused_with_the_reason(section, message):
    with pytest.raises(ValueError, match=message):
        ServeConfig.model_validate(section)


def test_serve_builds_one_engine_per_registered_version(project):
    from domaintune.serve.experiments_setup import build_versions
    from domaintune.serve.server import build_engine

    settings = ServeConfig.model_validate({"models": {"versions": [{"id": "tiny-v2", "path": str(project / "v2"),
                                                                     "description": "new tune"}]}})
    versions = build_versions(settings, build_engine)
    assert list(versions) == ["tiny-v2"] and versions["tiny-v2"].engine.model_name == "tiny-v2"
    assert versions["tiny-v2"].description == "new tune"
