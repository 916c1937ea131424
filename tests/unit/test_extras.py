"""Optional packages: a missing extra is one clear error naming the feature and the pip command,
at every lazy-import site; a broken install keeps its own traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from domaintune.errors import DomainTuneError
from domaintune.extras import MissingExtra, available, require


def test_require_returns_the_module():
    assert require("json", "none", "testing") is json


def test_a_missing_module_names_the_purpose_and_the_extra():
    with pytest.raises(MissingExtra) as err:
        require("no_such_pkg_xyz.sub", "office", "format: pdf")
    assert isinstance(err.value, DomainTuneError)
    assert str(err.value) == ("format: pdf needs the 'no_such_pkg_xyz' package, which is not installed: "
                              "pip install 'domaintune[office]'")
    assert not available("no_such_pkg_xyz.sub") and available("json")


def test_a_blocked_module_counts_as_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "json", None)
    assert not available("json")
    with pytest.raises(MissingExtra, match=r"domaintune\[zh\]"):
        require("json", "zh", "data.normalize.chinese=t2s")


def test_an_import_error_inside_an_installed_package_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "half_installed_pkg.py").write_text("import its_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="its_missing_dependency_xyz"):
        require("half_installed_pkg", "office", "format: pdf")


def _dpo_args():
    from domaintune.align.dpo import DPOSettings, dpo_args

    dpo_args(DPOSettings(0.1, 0.0, 1, None, 1e-4, 1, 1, 64, None, 0, True), "out", {}, False)


def _reward_args():
    from domaintune.align.reward import RewardSettings, reward_args

    reward_args(RewardSettings(1, None, 1e-4, 1, 64, 0, True), "out", {})


def _opencc():
    from domaintune.governance import normalize as rules

    rules._opencc.cache_clear()  # an earlier test may have built the converter
    try:
        rules._opencc("t2s")
    finally:
        rules._opencc.cache_clear()


def _pdf(path: Path):
    from domaintune.data.office import read_pdf

    list(read_pdf(path, None))


def _docx(path: Path):
    from domaintune.data.office import read_docx

    list(read_docx(path, None))


def _html():
    from domaintune.data.html import html_to_text

    html_to_text("<p>hi</p>")


def _main_text():
    from domaintune.data import html

    html._extractor.cache_clear()  # an earlier test may have built the extractor
    try:
        html.main_text("<html><body><p>hi</p></body></html>")
    finally:
        html._extractor.cache_clear()


def _gguf(path: Path):
    from domaintune.models import import_gguf

    import_gguf(path, path.parent / "out")


def _tensorboard(path: Path):
    from domaintune.trackers import TensorBoardTracker

    TensorBoardTracker(path.parent / "tb")


SITES = [  # (module to hide, call, extra named in the error, purpose named in the error)
    ("trl", lambda p: _dpo_args(), "align", "the align stage (DPO)"),
    ("trl", lambda p: _reward_args(), "align", "the align stage (reward model)"),
    ("opencc", lambda p: _opencc(), "zh", "data.normalize.chinese=t2s"),
    ("pypdf", _pdf, "office", "format: pdf"),
    ("docx", _docx, "office", "format: docx"),
    ("lxml", lambda p: _html(), "office", "format: html"),
    ("trafilatura", lambda p: _main_text(), "office", "format: html with html: main"),
    ("gguf", _gguf, "gguf", "domaintune models import-gguf"),
    ("tensorboard", _tensorboard, "tensorboard", "train.logging.report_to: [tensorboard]"),
]


@pytest.mark.parametrize(("module", "call", "extra", "purpose"), SITES, ids=[f"{s[0]}-{s[2]}" for s in SITES])
def test_every_lazy_import_site_names_its_extra(module, call, extra, purpose, monkeypatch, tmp_path):
    # Resolve the call's own imports first, then hide the optional package as if not installed.
    call_file = tmp_path / "input.bin"
    call_file.write_bytes(b"not a real file")
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra) as err:
        call(call_file)
    assert purpose in str(err.value) and f"pip install 'domaintune[{extra}]'" in str(err.value)


def test_a_missing_tracker_backend_is_reported_with_its_extra(monkeypatch, tmp_path):
    from domaintune.trackers import missing_packages

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert missing_packages(["tensorboard"]) == [
        "train.logging.report_to: 'tensorboard' needs the tensorboard package: pip install 'domaintune[tensorboard]' "
        "(or remove 'tensorboard' from train.logging.report_to)"]


def test_validate_names_the_align_extra_when_trl_is_missing(monkeypatch, tmp_path):
    from domaintune import checks
    from domaintune.config import load_config

    (tmp_path / "pairs.jsonl").write_text("")
    (tmp_path / "cfg.yaml").write_text("name: t\nmodel: {base: org/model}\nalign: {data: {domain: [pairs.jsonl]}}\n")
    cfg = load_config(tmp_path / "cfg.yaml")
    assert not any("trl" in p for p in checks.check_align(cfg))  # installed here
    monkeypatch.setitem(sys.modules, "trl", None)
    assert checks.check_align(cfg) == [
        "align: the align stage trains with trl, which is not installed: pip install 'domaintune[align]'"]
