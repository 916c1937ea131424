"""The sharded phase: deterministic shard plan, resume after a kill, settings that reuse shards."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from domaintune.artifacts import RunDir
from domaintune.data import run
from domaintune.data.engine import plan_shards
from domaintune.data.sources import resolve_sources

KILL_AT_SHARD_2 = textwrap.dedent("""
    import os, sys
    import multiprocess
    from domaintune.artifacts import RunDir
    from domaintune.config import load_config
    from domaintune.data import engine, stage

    original = engine.ShardWriter.run

    def dying_run(self, data=None, rank=0, world_size=1):
        if rank == 2:  # shards 0 and 1 are done; the process dies like a killed job
            for child in multiprocess.active_children():
                child.kill()
            os._exit(3)
        yield from original(self, data, rank, world_size)

    engine.ShardWriter.run = dying_run
    stage.run(load_config(sys.argv[1]), RunDir(sys.argv[2]))
""")


def _corpus(tmp_path, write_jsonl, make_docs, make_config, **data):
    for i in range(4):
        write_jsonl(tmp_path / "raw" / f"part{i}.jsonl", make_docs(10 + i, prefix=f"part{i}"))
    return make_config([{"path": "raw", "stream": "s"}], **data)


def _outputs(run_root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_root)): p.read_bytes() for p in sorted(run_root.rglob("*"))
            if p.is_file() and "shards" not in p.parts}


def _shard_dir(run_root: Path) -> Path:
    """The folder of the last run's settings (first in the recent list)."""
    root = run_root / "data" / "shards"
    return root / json.loads((root / "recent.json").read_text(encoding="utf-8"))[0]


def _shard_sets(run_root: Path) -> list[str]:
    return sorted(p.name for p in (run_root / "data" / "shards").iterdir() if p.is_dir())


def test_plan_is_balanced_and_deterministic(tmp_path, write_jsonl, make_docs, make_config):
    cfg = _corpus(tmp_path, write_jsonl, make_docs, make_config)
    sources = resolve_sources(cfg.data)
    plan = plan_shards(sources, None)
    assert len(plan) == 4 and all(len(s) == 1 for s in plan)
    two = plan_shards(sources, 2)
    assert sorted(u.file for s in two for u in s) == [0, 1, 2, 3]
    assert [len(s) for s in two] == [2, 2] and two == plan_shards(sources, 2)


@pytest.mark.slow  # starts a process and kills it
def test_killed_run_resumes_unfinished_shards_with_identical_outputs(tmp_path, write_jsonl, make_docs,
                                                                       make_config):
    cfg = _corpus(tmp_path, write_jsonl, make_docs, make_config)
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILL_AT_SHARD_2, str(tmp_path / "domaintune.yaml"), str(killed)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    shards = _shard_dir(killed)
    assert sorted(p.name for p in (shards / "logs" / "completions").iterdir()) == ["00000", "00001"]
    assert not (killed / "data" / "streams.json").exists()
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("0000[01].*")}

    run(cfg, RunDir(killed))  # the re-run: shards 2 and 3 only
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("0000[01].*")} == before
    assert sorted(p.name for p in (shards / "logs" / "completions").iterdir()) == ["00000", "00001", "00002",
                                                                                  "00003"]
    clean = tmp_path / "clean"
    run(cfg, RunDir(clean))
    assert _outputs(killed) == _outputs(clean)


def test_merge_only_settings_reuse_shards_and_step_settings_do_not(tmp_path, write_jsonl, make_docs,
                                                                     make_config):
    cfg = _corpus(tmp_path, write_jsonl, make_docs, make_config)
    root = tmp_path / "run"
    run(cfg, RunDir(root))
    first = _shard_dir(root)
    stamp = (first / "00000.kept.jsonl").stat().st_mtime_ns
    source = [{"path": "raw", "stream": "s"}]  # same files (same mtimes), other settings
    resplit = make_config(source, split={"train": 0.6, "val": 0.2, "test": 0.2}, near_dedup={"threshold": 0.9})
    run(resplit, RunDir(root))
    assert _shard_dir(root) == first and (first / "00000.kept.jsonl").stat().st_mtime_ns == stamp
    renorm = make_config(source, normalize={"whitespace": False})
    run(renorm, RunDir(root))
    assert _shard_dir(root) != first  # a step's setting changed: shards recomputed


def test_setting_a_value_back_reuses_its_shards_and_only_recent_sets_are_kept(tmp_path, write_jsonl, make_docs,
                                                                              make_config):
    _corpus(tmp_path, write_jsonl, make_docs, make_config)
    source = [{"path": "raw", "stream": "s"}]
    root = tmp_path / "run"
    run(make_config(source), RunDir(root))
    first = _shard_dir(root)
    stamp = (first / "00000.kept.jsonl").stat().st_mtime_ns
    run(make_config(source, normalize={"whitespace": False}), RunDir(root))
    run(make_config(source), RunDir(root))  # set back: the first folder is reused, not re-read
    assert _shard_dir(root) == first and (first / "00000.kept.jsonl").stat().st_mtime_ns == stamp
    assert len(_shard_sets(root)) == 2
    for min_chars in (5, 6, 7):  # three more settings: only the three most recent sets remain
        run(make_config(source, min_chars=min_chars), RunDir(root))
    assert len(_shard_sets(root)) == 3 and first.name not in _shard_sets(root)


def test_validate_names_what_cluster_executors_need(tmp_path, write_jsonl, make_docs, make_config, monkeypatch):
    from domaintune import checks

    write_jsonl(tmp_path / "d.jsonl", make_docs(3))
    cfg = make_config([{"path": "d.jsonl", "stream": "s"}], engine={"executor": "slurm"})
    monkeypatch.setattr(checks.shutil, "which", lambda name: None)
    problems = checks.check_data_engine(cfg)
    assert any("sbatch" in p for p in problems) and any("slurm_partition" in p for p in problems)
    local = make_config([{"path": "d.jsonl", "stream": "s"}])
    assert checks.check_data_engine(local) == []


@pytest.mark.slow  # starts worker processes
def test_parallel_workers_give_the_same_bytes(tmp_path, write_jsonl, make_docs, make_config):
    cfg = _corpus(tmp_path, write_jsonl, make_docs, make_config)
    run(cfg, RunDir(tmp_path / "one"))
    two = make_config([{"path": "raw", "stream": "s"}], engine={"workers": 2})
    run(two, RunDir(tmp_path / "two"))  # shards in 2 spawned processes, finishing in any order
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "two")
