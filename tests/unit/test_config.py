from pathlib import Path

import pytest

from domaintune.config import apply_overrides, load_config
from domaintune.errors import ConfigError

BASE = """
name: t
model: {base: org/model}
data:
  sources: [{path: docs, stream: domain}]
mix: {mixture: {domain: 1}, tokens: 20k}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_and_count_parsing(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.mix.tokens == 20_000
    assert cfg.train.method == "lora" and cfg.data.split.train == 0.8
    # relative paths resolve against the config file's folder, not the cwd
    assert Path(cfg.data.sources[0].path) == (tmp_path / "docs").resolve()
    assert cfg.run_path == (tmp_path / "runs" / "t").resolve()


def test_unknown_keys_are_all_reported_with_suggestions(tmp_path):
    text = BASE.replace("tokens: 20k}", "tokens: 20k, seqlen: 9}") + "train: {lr: 0.1, batchsize: 2}\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    problems = err.value.problems
    assert "mix.seqlen: unknown key (did you mean 'seq_len'?)" in problems
    assert "train.batchsize: unknown key (did you mean 'batch.batch_size'?)" in problems


def test_nested_list_paths_and_wrong_types(tmp_path):
    text = BASE.replace("stream: domain}", "stream: domain, txt_field: body}") + "train: {lr: fast}\n"
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    msg = str(err.value)
    assert "data.sources.0.txt_field: unknown key (did you mean 'text_field'?)" in msg
    assert "train.lr:" in msg and "'fast'" in msg


def test_overrides_apply_before_validation(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.lr=1e-3", "mix.tokens=2M", "train.adapter.r=4"])
    assert cfg.train.optim.lr == 1e-3 and cfg.mix.tokens == 2_000_000 and cfg.train.adapter.r == 4
    with pytest.raises(ConfigError, match="train.lrr: unknown key"):
        load_config(write(tmp_path, BASE), ["train.lrr=1"])
    with pytest.raises(ConfigError, match="not key.path=value"):
        apply_overrides({}, ["novalue"])


def test_mixture_must_name_existing_streams(tmp_path):
    with pytest.raises(ConfigError, match="no data source has stream 'domian'.*did you mean 'domain'"):
        load_config(write(tmp_path, BASE.replace("{domain: 1}", "{domian: 1}")))


def test_split_ratios_must_sum_to_one(tmp_path):
    text = BASE.replace("stream: domain}]", "stream: domain}]\n  split: {train: 0.9, val: 0.1, test: 0.1}")
    with pytest.raises(ConfigError, match="must sum to 1.0"):
        load_config(write(tmp_path, text))


def test_yaml_syntax_error_names_line(tmp_path):
    with pytest.raises(ConfigError, match="line 2"):
        load_config(write(tmp_path, "name: t\nmodel: a: b\n"))


def test_mix_without_data_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: t\nmodel: {base: org/m}\nmix: {mixture: {s: 1}, tokens: 1000}\n")
    with pytest.raises(ConfigError, match="mix.*need a data section"):
        load_config(p)
