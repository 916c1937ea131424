"""The cluster executors for real: the data stage on a local Ray cluster (started here, on loopback)
and through Slurm job scripts (rendered by datatrove, submitted to a stand-in sbatch, then run the
way Slurm runs them: one process per array task id) gives byte-identical outputs to the local executor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest

from domaintune.artifacts import RunDir
from domaintune.data import run
from domaintune.errors import DataError

OUTPUTS = ("streams.json", "rejects.jsonl", "lineage.jsonl", "s/train.jsonl", "s/val.jsonl", "s/test.jsonl")
SBATCH = """#!/bin/sh
# stands in for Slurm's sbatch: keep the script it was given, answer like sbatch does
n=$(ls "$SBATCH_DIR" | wc -l)
cp "$(eval echo \\${$#})" "$SBATCH_DIR/job$n.slurm"
echo "Submitted batch job $((100 + n))"
"""
SCONTROL = """#!/bin/sh
# stands in for `scontrol show hostnames NODELIST` (a one-node list expands to itself)
echo "$3"
"""


def corpus(tmp_path, write_jsonl):
    for f in range(3):  # three files: three shards, so the executors really split the work
        rows = [{"id": f"f{f}-{i}", "text": f"file {f} document {i}: interest on savings accounts is paid "
                 f"monthly, and the rate for term deposits depends on the term {i % 7}."} for i in range(12)]
        rows.append({"id": f"f{f}-copy", "text": rows[0]["text"]})  # a cross-row duplicate
        write_jsonl(tmp_path / "raw" / f"part{f}.jsonl", rows)


def outputs(run_dir) -> dict[str, bytes]:
    return {name: (run_dir / "data" / name).read_bytes() for name in OUTPUTS}


@contextmanager
def time_limit(seconds: int):
    def expire(*_):
        raise TimeoutError(f"took more than {seconds}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_slurm_job_scripts_render_and_their_shards_match_local(tmp_path, write_jsonl, make_config, monkeypatch):
    corpus(tmp_path, write_jsonl)
    sources = [{"path": "raw", "stream": "s", "id_field": "id"}]
    run(make_config(sources), RunDir(tmp_path / "local"))
    bin_dir, jobs = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir(), jobs.mkdir()
    for name, script in (("sbatch", SBATCH), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_DIR", str(jobs))
    cfg = make_config(sources, engine={"executor": "slurm", "slurm_partition": "cpu", "slurm_time": "01:30:00",
                                       "cpus_per_task": 2, "mem_per_cpu_gb": 3})
    with pytest.raises(DataError, match="not finished.*re-run the data stage when they end"):
        run(cfg, RunDir(tmp_path / "slurm"))  # submitted, not run yet

    script = (jobs / "job0.slurm").read_text()
    for directive in ("#SBATCH --partition=cpu", "#SBATCH --time=01:30:00", "#SBATCH --cpus-per-task=2",
                      "#SBATCH --mem-per-cpu=3G", "#SBATCH --array=0-2", "#SBATCH --job-name=domaintune-data"):
        assert directive in script, directive
    pickled = script.split("launch_pickled_pipeline ")[1].split()[0]
    assert pickled.endswith("executor.pik") and os.path.isfile(pickled)

    for task in range(3):  # what Slurm does with the array job: one process per task id
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "RUN_OFFSET": "0", "SLURM_NODELIST": "node1",
               "SLURM_NODEID": "0"}
        done = subprocess.run([sys.executable, "-m", "datatrove.tools.launch_pickled_pipeline", pickled], env=env,
                       check=False, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    run(cfg, RunDir(tmp_path / "slurm"))  # the finished shards are picked up
    assert outputs(tmp_path / "slurm") == outputs(tmp_path / "local")


@pytest.mark.slow
def test_ray_executor_on_a_local_cluster_matches_local(tmp_path, write_jsonl, make_config):
    ray = pytest.importorskip("ray")
    corpus(tmp_path, write_jsonl)
    sources = [{"path": "raw", "stream": "s", "id_field": "id"}]
    run(make_config(sources), RunDir(tmp_path / "local"))
    with time_limit(420):
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=80 << 20,
                 log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        try:
            cfg = make_config(sources, engine={"executor": "ray", "workers": 2, "mem_per_cpu_gb": 0.5})
            run(cfg, RunDir(tmp_path / "ray"))
            assert ray.is_initialized()  # the stage used the cluster started here, not one of its own
        finally:
            ray.shutdown()
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
