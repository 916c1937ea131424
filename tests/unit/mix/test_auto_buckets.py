"""`mix.buckets: auto`: the row length comes from the segment-length histogram, is validated,
and is reported in mix.json."""

import json
import random

import pytest
import yaml

from domaintune.artifacts import RunDir
from domaintune.config import load_config
from domaintune.mix.buckets import _Len, candidates, choose_buckets
from domaintune.packing import pack, unfilled_fraction
from domaintune.pipeline import StageSpec, run_stage

TEXT = ("the bank charges a fee for wire transfers and savings accounts earn interest monthly while term deposits "
        "pay at maturity customers open loans with rates that change every quarter by market moves branch staff "
        "review each application within five days")
WORDS = TEXT.split()


def test_a_narrow_profile_gets_a_row_that_fits_it():
    # every segment 250 tokens: one per 256-token row is the least empty any length gets (2.3 %)
    auto = choose_buckets([250] * 200, max_len=2048, seed=0)
    assert auto.buckets == [256]
    assert auto.unfilled[256] == pytest.approx(6 / 256)


def test_uniform_200_300_gets_the_least_empty_short_row():
    # 200-300 token documents leave up to 200 tokens per row that no document fits: no row length
    # reaches 2 % here, so auto takes the least empty one: no emptier than the fixed bucket lists
    lengths = [random.Random(i).randint(200, 300) for i in range(400)]
    auto = choose_buckets(lengths, max_len=4096, seed=0)
    (row,) = auto.buckets
    assert 300 <= row <= 1024
    assert auto.unfilled[row] == min(auto.unfilled.values())
    segments = [_Len(range(n)) for n in lengths]
    for fixed in ([1024], [128, 256, 512, 1024]):
        assert auto.unfilled[row] <= unfilled_fraction(pack(segments, fixed, 0))


def test_choice_never_exceeds_seq_len_and_fits_the_longest_segment():
    lengths = [1000, 30, 40, 500]
    auto = choose_buckets(lengths, max_len=1024, seed=0)
    assert 1000 <= auto.buckets[0] <= 1024
    assert candidates(1000, 1024) == [1024]
    with pytest.raises(ValueError, match="exceeds mix.seq_len"):
        choose_buckets([2000], max_len=1024, seed=0)


def _config(tmp_path, model_dir, buckets):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    rng = random.Random(0)
    with (raw_dir / "docs.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(120):  # narrow profile: 40-48 words each
            fh.write(json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 48)))
                                 + f" {i}."}) + "\n")
    raw = {"name": "t", "runs_dir": "runs", "seed": 0, "model": {"base": str(model_dir)},
           "data": {"sources": [{"path": "raw/docs.jsonl", "stream": "domain", "id_field": "id"}],
                    "near_dedup": {"enabled": False}, "max_reject_fraction": 1.0},
           "mix": {"mixture": {"domain": 1}, "tokens": 3000, "seq_len": 1024, "buckets": buckets,
                   "heldout_tokens": 0}}
    path = tmp_path / "domaintune.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_config(path)


@pytest.mark.slow
def test_mix_stage_reports_the_auto_choice(tmp_path, tiny_model_dir):
    cfg = _config(tmp_path, tiny_model_dir, "auto")
    run_dir = RunDir(cfg.run_path)
    assert run_stage(StageSpec("data", "domaintune.data", ("data", "seed")), cfg, run_dir).status == "ran"
    assert run_stage(StageSpec("mix", "domaintune.mix", ("mix", "seed"), ("data",)), cfg, run_dir).status == "ran"
    info = json.loads((run_dir.stage_dir("mix") / "mix.json").read_text())
    (row,) = info["buckets"]
    assert info["auto_buckets"]["chosen"] == [row] and row < 1024  # narrow documents: not the 1,024 cap
    assert info["unfilled_fraction"] == pytest.approx(info["auto_buckets"]["simulated_unfilled"][str(row)], abs=0.02)


@pytest.mark.parametrize("bad", [[], [64, 32], "sometimes"])
def test_bad_buckets_are_rejected_with_the_fix(tmp_path, tiny_model_dir, bad):
    with pytest.raises(Exception, match="buckets"):
        _config(tmp_path, tiny_model_dir, bad)
