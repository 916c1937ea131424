"""Old key names keep working: moved before validation, each with a warning naming old -> new."""

import warnings
from pathlib import Path

import pytest

from domaintune.config import ConfigDeprecation, load_config
from domaintune.errors import ConfigError

HERE = Path(__file__).parent
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# Verbatim copies of the shipped examples from before the config was recomposed.
LEGACY = {"quickstart": HERE / "legacy_quickstart.yaml", "sft": HERE / "legacy_sft.yaml",
          "dpo": HERE / "legacy_dpo.yaml"}


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_config_validates_and_means_what_the_new_example_means(name, tmp_path):
    # both files in one folder, so their relative paths resolve alike
    (tmp_path / "old.yaml").write_text(LEGACY[name].read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "new.yaml").write_text((EXAMPLES / name / "domaintune.yaml").read_text(encoding="utf-8"),
                                       encoding="utf-8")
    with pytest.warns(ConfigDeprecation) as caught:
        old = load_config(tmp_path / "old.yaml")
    assert all(" is now " in str(w.message) for w in caught if issubclass(w.category, ConfigDeprecation))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigDeprecation)
        new = load_config(tmp_path / "new.yaml")
    assert old.model_dump() == new.model_dump()


def test_legacy_dpo_fault_tolerance_moves_to_align(tmp_path):
    with pytest.warns(ConfigDeprecation, match="train.save_every is now align.checkpoint.save_every"):
        cfg = load_config(LEGACY["dpo"])
    assert cfg.align.checkpoint.save_every == 10 and cfg.align.checkpoint.keep_last == 2
    assert cfg.align.guards.nan_policy == "skip"
    assert not cfg.train.model_fields_set  # nothing left in train: no "train without mix" warning


def test_with_mix_the_old_shared_keys_configure_train_and_align(tmp_path):
    p = tmp_path / "c.yaml"
    (tmp_path / "d").mkdir()
    p.write_text("name: t\nmodel: {base: org/m}\ndata: {sources: [{path: d, stream: domain}]}\n"
                 "mix: {mixture: {domain: 1}, tokens: 2k}\nalign: {data: {domain: [p.jsonl]}}\n"
                 "train: {save_every: 4, lr: 0.01}\n")
    with pytest.warns(ConfigDeprecation):
        cfg = load_config(p)
    assert cfg.train.checkpoint.save_every == 4 and cfg.align.checkpoint.save_every == 4
    assert cfg.train.optim.lr == 0.01


def test_old_key_in_an_override_is_moved_with_a_warning(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: t\nmodel: {base: org/m}\ntrain: {optim: {lr: 0.1}}\n")
    with pytest.warns(ConfigDeprecation, match="train.lr is now train.optim.lr"):
        cfg = load_config(p, ["train.lr=0.5", "train.max_restarts=7"])
    assert cfg.train.optim.lr == 0.5 and cfg.runtime.supervise.max_restarts == 7


def test_a_key_under_its_old_and_new_name_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: t\nmodel: {base: org/m}\ntrain: {lr: 0.1, optim: {lr: 0.2}}\n")
    with pytest.raises(ConfigError, match="train.lr and train.optim.lr are both set"):
        load_config(p)
