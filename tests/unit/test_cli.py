"""The CLI's error handling: our own errors, a full disk or an unwritable runs_dir print one line
naming the path and the fix (exit code != 0); any other exception keeps its traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import yaml

from domaintune import pipeline
from domaintune.errors import StorageError, storage_error
from fixtures.cli import invoke

CHECKPOINT = "/data/runs/bank/train/checkpoints/step-3/model.safetensors"


def _config(tmp_path: Path, tiny_model_dir: Path, runs_dir: Path, mix: bool = False) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "a.txt").write_text("The bank charges a fee of 15 dollars for wire transfers.\n")
    raw = {"name": "t", "runs_dir": str(runs_dir), "model": {"base": str(tiny_model_dir)},
           "data": {"sources": [{"path": "docs", "stream": "domain"}]}}
    if mix:
        raw["mix"] = {"mixture": {"domain": 1}, "tokens": 1000}
    path = tmp_path / "domaintune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line_error(result) -> str:
    out = " ".join(result.output.split())  # rich wraps long lines
    assert "error:" in out and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    return out


def _raising(exc: BaseException):
    def run_pipeline(*args, **kwargs):
        raise exc
    return run_pipeline


def test_a_full_disk_is_one_line_naming_the_path_and_the_fix(tmp_path, tiny_model_dir, monkeypatch):
    cfg = _config(tmp_path, tiny_model_dir, tmp_path / "runs")
    monkeypatch.setattr(pipeline, "run_pipeline",
                        _raising(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), CHECKPOINT)))
    out = _one_line_error(invoke("run", str(cfg), code=StorageError.exit_code))
    assert "no space left" in out and CHECKPOINT in out and "runs_dir" in out


def test_a_full_disk_wrapped_by_a_library_is_still_recognised(tmp_path, tiny_model_dir, monkeypatch):
    cfg = _config(tmp_path, tiny_model_dir, tmp_path / "runs")
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), CHECKPOINT)
        except OSError as low:
            raise RuntimeError("file write failed") from low
    except RuntimeError as wrapped:
        monkeypatch.setattr(pipeline, "run_pipeline", _raising(wrapped))
    out = _one_line_error(invoke("run", str(cfg), code=StorageError.exit_code))
    assert "no space left" in out and CHECKPOINT in out


def test_an_unwritable_runs_dir_is_one_line(tmp_path, tiny_model_dir):
    runs_dir = Path("/sys/domaintune-test-runs")  # not creatable, even by root
    try:
        runs_dir.mkdir()
        runs_dir.rmdir()
        pytest.skip("/sys is writable here")
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            pytest.skip(f"/sys gives {exc!r} here")
    cfg = _config(tmp_path, tiny_model_dir, runs_dir)
    out = _one_line_error(invoke("run", str(cfg), "--stages", "data", code=StorageError.exit_code))
    assert str(runs_dir) in out and "set runs_dir to a folder you can write" in out


@pytest.mark.parametrize("exc", [RuntimeError("a bug in a stage"), OSError(errno.EIO, "Input/output error", "/x")],
                         ids=["bug", "unknown-oserror"])
def test_other_exceptions_keep_their_traceback(tmp_path, tiny_model_dir, monkeypatch, exc):
    cfg = _config(tmp_path, tiny_model_dir, tmp_path / "runs")
    monkeypatch.setattr(pipeline, "run_pipeline", _raising(exc))
    result = invoke("run", str(cfg), code=1)
    assert result.exception is exc  # not swallowed: the CLI re-raises it, so Python prints its traceback


def test_a_corrupt_upstream_manifest_says_corrupt_not_unfinished(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, tmp_path / "runs", mix=True)
    manifest = tmp_path / "runs" / "t" / "data" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"stage": "data", "fingerpr')  # cut short
    out = _one_line_error(invoke("run", str(cfg), "--stages", "mix", code=2))
    assert "corrupt" in out and "--stages data" in out and "has not finished" not in out
    assert str(manifest) in "".join(out.split())  # rich may break a long path anywhere


def test_storage_error_ignores_other_errors():
    assert storage_error(ValueError("x")) is None
    assert storage_error(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
    err = storage_error(PermissionError(errno.EACCES, "Permission denied", "/srv/runs"))
    assert isinstance(err, StorageError) and "/srv/runs" in str(err) and "permission denied" in str(err)


def test_the_cli_keeps_library_warnings_but_not_their_progress_bars(tmp_path, tiny_model_dir):
    import logging

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_warning()
    invoke("validate", str(_config(tmp_path, tiny_model_dir, tmp_path / "runs")))
    # "Some weights ... were not initialized" is a transformers warning: it must still be shown
    assert transformers.utils.logging.get_verbosity() <= logging.WARNING
    assert not transformers.utils.logging.is_progress_bar_enabled()
    assert not datasets.utils.logging.is_progress_bar_enabled()
