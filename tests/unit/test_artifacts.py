"""domaintune.artifacts provenance and manifests: the package versions that decide a result,
domaintune's own git sha (never the HEAD of a repository it is installed into), and a corrupt
upstream manifest reported as corrupt instead of "not finished"."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from domaintune import artifacts
from domaintune.artifacts import RunDir, git_sha, package_versions
from domaintune.errors import StageError

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "commit.gpgsign=false"]


def _repo_with_commit(root: Path) -> str:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([*GIT, "init", "-q", str(root)], check=True)
    (root / "README").write_text("a user's project\n")
    subprocess.run([*GIT, "-C", str(root), "add", "README"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qm", "init"], check=True)
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_versions_record_the_packages_that_decide_a_result():
    versions = package_versions()
    for name in ("python", "torch", "transformers", "peft", "accelerate", "datasets", "trl", "datatrove",
                 "tokenizers", "safetensors"):
        assert versions.get(name), name
    assert versions["trl"] == metadata.version("trl")


def test_bitsandbytes_is_recorded_only_when_installed(monkeypatch):
    real = metadata.version

    def fake(name):
        if name == "bitsandbytes":
            if fake.installed:
                return "0.45.0"
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(artifacts.metadata, "version", fake)
    fake.installed = False
    assert "bitsandbytes" not in package_versions()
    fake.installed = True
    assert package_versions()["bitsandbytes"] == "0.45.0"


def test_git_sha_of_this_source_checkout():
    package_dir = Path(artifacts.__file__).parent
    here = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True, text=True)
    if here.returncode != 0 or not (package_dir.parent.parent / "pyproject.toml").is_file():
        pytest.skip("domaintune is not running from a git checkout here")
    assert git_sha() == here.stdout.strip()


def test_git_sha_is_not_the_head_of_a_repository_domaintune_is_installed_into(tmp_path):
    user_sha = _repo_with_commit(tmp_path / "myproject")
    installed = tmp_path / "myproject" / ".venv" / "lib" / "python3.11" / "site-packages" / "domaintune"
    installed.mkdir(parents=True)
    assert git_sha(installed) is None, f"recorded the user's HEAD {user_sha}"


def test_git_sha_is_not_the_head_of_another_project_with_a_src_layout(tmp_path):
    root = tmp_path / "other"
    _repo_with_commit(root)
    (root / "pyproject.toml").write_text('[project]\nname = "other"\n')
    (root / "src" / "domaintune").mkdir(parents=True)
    assert git_sha(root / "src" / "domaintune") is None


def test_git_sha_of_a_domaintune_checkout(tmp_path):
    root = tmp_path / "domaintune-src"
    sha = _repo_with_commit(root)
    (root / "pyproject.toml").write_text('[project]\nname = "domaintune"\n')
    (root / "src" / "domaintune").mkdir(parents=True)
    assert git_sha(root / "src" / "domaintune") == sha


# --------------------------------------------------------------------------- manifests
def test_missing_upstream_manifest_says_run_it_first(tmp_path):
    with pytest.raises(StageError, match="has not finished.*--stages train"):
        RunDir(tmp_path).require("train", by="eval")


@pytest.mark.parametrize("content", ['{"stage": "train", "outp', "[1, 2]", "\udcff"], ids=["cut", "list", "bytes"])
def test_corrupt_upstream_manifest_is_reported_as_corrupt(tmp_path, content):
    run = RunDir(tmp_path)
    path = run.stage_dir("train") / "manifest.json"
    if content == "\udcff":
        path.write_bytes(b"\xff\xfe{not utf-8")
    else:
        path.write_text(content)
    with pytest.raises(StageError) as err:
        run.require("train", by="eval")
    message = str(err.value)
    assert "corrupt" in message and str(path) in message and "--stages train" in message
    assert "has not finished" not in message
    assert run.manifest("train") is None  # and the stage itself counts as not done: re-running rewrites it
