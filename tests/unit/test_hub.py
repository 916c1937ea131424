"""A hub-id base is pinned to the commit it resolves to at run time (a monkeypatched HfApi stands
in for the hub): recorded in the manifest, part of the fingerprint (a moved `main` re-runs the
stage), used to load the weights; offline it falls back to the local cache or records null with
the reason and never fails; local folders are unaffected."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import huggingface_hub
import pytest

from domaintune import hub, models
from domaintune.artifacts import RunDir, StageResult
from domaintune.config import ModelConfig, load_config
from domaintune.pipeline import StageSpec, run_pipeline

SHA_A, SHA_B = "a" * 40, "b" * 40


class FakeHub:
    """HfApi stand-in: `sha` is what `main` points at; `error` makes the hub unreachable."""

    calls: list[tuple] = []
    sha: str | None = SHA_A
    error: Exception | None = None

    def model_info(self, repo_id, revision=None, timeout=None):
        FakeHub.calls.append((repo_id, revision))
        if FakeHub.error is not None:
            raise FakeHub.error
        return SimpleNamespace(sha=FakeHub.sha)


@pytest.fixture(autouse=True)
def fake_hub(monkeypatch, tmp_path):
    FakeHub.calls, FakeHub.sha, FakeHub.error = [], SHA_A, None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    hub.resolve.cache_clear()
    yield FakeHub
    hub.resolve.cache_clear()


def test_a_hub_id_is_resolved_recorded_fingerprinted_and_loaded_at_its_commit():
    cfg = ModelConfig(base="org/model")
    assert models.revision_record(cfg) == {"repo_id": "org/model", "requested": None, "sha": SHA_A,
                                           "source": "hub", "reason": None}
    assert models.model_inputs(cfg) == [f"hf://org/model@{SHA_A}"]
    assert models._common_kwargs(cfg)["revision"] == SHA_A
    assert FakeHub.calls == [("org/model", None)]  # once per process


def test_a_branch_revision_is_resolved_too():
    assert models.hub_revision(ModelConfig(base="org/model", revision="v2")).sha == SHA_A
    assert FakeHub.calls == [("org/model", "v2")]


def test_a_commit_revision_needs_no_network():
    FakeHub.error = RuntimeError("must not be called")
    pinned = models.hub_revision(ModelConfig(base="org/model", revision=SHA_B))
    assert (pinned.sha, pinned.source) == (SHA_B, "pinned") and FakeHub.calls == []


def test_offline_records_null_with_the_reason_and_does_not_fail():
    FakeHub.error = ConnectionError("Name or service not known")
    cfg = ModelConfig(base="org/model", revision="main")
    record = models.revision_record(cfg)
    assert record["sha"] is None and record["source"] == "unresolved"
    assert "ConnectionError" in record["reason"] and "Name or service not known" in record["reason"]
    assert models.model_inputs(cfg) == []  # fingerprinted by name, as before
    assert models._common_kwargs(cfg)["revision"] == "main"


def test_offline_uses_the_commit_the_local_cache_would_load(tmp_path):
    FakeHub.error = ConnectionError("offline")
    ref = tmp_path / "hf-cache" / "models--org--model" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text(SHA_B)
    pinned = models.hub_revision(ModelConfig(base="org/model"))
    assert (pinned.sha, pinned.source) == (SHA_B, "cache") and "offline" in pinned.reason


def test_local_folders_are_unaffected(tiny_model_dir, tmp_path):
    FakeHub.error = RuntimeError("must not be called")
    cfg = ModelConfig(base=str(tiny_model_dir))
    assert models.hub_revision(cfg) is None and models.revision_record(cfg) is None
    assert models.model_inputs(cfg) == [str(tiny_model_dir)]
    assert models.hub_revision(ModelConfig(base=str(tmp_path / "missing-folder"))) is None  # not a hub id
    assert FakeHub.calls == []


def _model_stage():
    mod = types.ModuleType("fake_model_stage")
    mod.inputs = lambda cfg: models.model_inputs(cfg.model)
    mod.run = lambda cfg, run_dir: StageResult(summary="ok")
    sys.modules[mod.__name__] = mod
    return [StageSpec("train", mod.__name__, ("train", "model"))]


def test_the_manifest_records_the_commit_and_a_moved_main_reruns_the_stage(tmp_path):
    (tmp_path / "docs").mkdir()
    path = tmp_path / "cfg.yaml"
    path.write_text("name: t\nmodel: {base: org/model}\ndata: {sources: [{path: docs, stream: s}]}\n"
                    "mix: {mixture: {s: 1}, tokens: 1000}\n")
    cfg, specs = load_config(path), _model_stage()
    assert [o.status for o in run_pipeline(cfg, specs)] == ["ran"]
    manifest = RunDir(cfg.run_path).manifest("train")
    assert manifest["base_revision"]["sha"] == SHA_A and f"hf://org/model@{SHA_A}" in manifest["inputs"]
    hub.resolve.cache_clear()  # a later run: same commit, nothing to do
    assert [o.status for o in run_pipeline(cfg, specs)] == ["skipped"]
    FakeHub.sha = SHA_B  # the hub's main moved
    hub.resolve.cache_clear()
    assert [o.status for o in run_pipeline(cfg, specs)] == ["ran"]
    assert RunDir(cfg.run_path).manifest("train")["base_revision"]["sha"] == SHA_B
