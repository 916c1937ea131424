"""One heartbeat writer and format for every training stage, read back per stage by RunDir."""

import os
import time

from domaintune.artifacts import RunDir
from domaintune.training.heartbeat import Heartbeat


def test_one_file_per_stage_whatever_the_phase(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    beat = Heartbeat(run_dir.heartbeat_path("sft"), "sft")
    t0 = time.time()
    beat.for_phase("lora").beat(3)
    Heartbeat(run_dir.heartbeat_path("align"), "align", main=False).beat(1)  # other ranks stay silent
    beats = run_dir.heartbeats()
    assert set(beats) == {"sft"}
    b = beats["sft"]
    assert (b["stage"], b["phase"], b["step"], b["pid"]) == ("sft", "lora", 3, os.getpid()) and b["time"] >= t0
    assert run_dir.heartbeat_path("sft") == run_dir.root / "sft" / "heartbeat.json"
