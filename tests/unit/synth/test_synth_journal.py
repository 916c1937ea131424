"""Exactly-once generation: a run SIGKILLed half way resumes with zero duplicate and zero missing
units, and its final output is byte-identical to an uninterrupted run (deterministic fake teacher
in a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from domaintune.synth.journal import Journal, Unit, run_phase, unit_id

UNITS, BATCH = 40, 4
SCRIPT = r'''
import hashlib, json, sys, time
from pathlib import Path
import pytest

from domaintune.synth.journal import Journal, Unit, run_phase, unit_id

root = Path(sys.argv[1])
units = [Unit(unit_id("doc_qa", f"doc{i // 2}", "tpl", "fake", {"temperature": 0.8}, i % 2), f"prompt {i}",
              payload={"i": i}) for i in range(UNITS)]

def fake_teacher(batch, seed):  # deterministic in (prompt, batch seed), slow enough to be killed mid-run
    time.sleep(0.15)
    return [{"text": hashlib.sha256(f"{u.prompt}|{seed}".encode()).hexdigest()[:12], "new_tokens": 3}
            for u in batch]

rows = run_phase(units, Journal(root / "journal"), fake_teacher, BATCH)
(root / "out.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
'''.replace("UNITS", str(UNITS)).replace("BATCH", str(BATCH))


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[3] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(root: Path) -> None:
    subprocess.run([sys.executable, "-c", SCRIPT, str(root)], check=True, env=_env(), timeout=60)


def _journal_ids(root: Path) -> list[str]:
    return [json.loads(line)["id"] for part in sorted((root / "journal").glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_half_way_then_resume_is_exactly_once_and_byte_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(whole)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(killed)], env=_env())
    deadline = time.monotonic() + 60
    while len(list((killed / "journal").glob("part-*.jsonl"))) < UNITS // BATCH // 2:
        assert time.monotonic() < deadline and proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "out.jsonl").exists()
    done_before = len(_journal_ids(killed))
    assert 0 < done_before < UNITS
    _run(killed)
    ids = _journal_ids(killed)
    expected = {json.loads(line)["id"] for line in (whole / "out.jsonl").read_text().splitlines()}
    assert len(ids) == len(set(ids)) == UNITS  # zero duplicates
    assert set(ids) == expected  # zero missing
    assert (killed / "out.jsonl").read_bytes() == (whole / "out.jsonl").read_bytes()


def test_unit_ids_change_with_what_decides_the_output():
    base = unit_id("doc_qa", "doc1", "t1", "teacher", {"temperature": 0.8}, 0)
    assert base == unit_id("doc_qa", "doc1", "t1", "teacher", {"temperature": 0.8}, 0)
    others = [unit_id("evol", "doc1", "t1", "teacher", {"temperature": 0.8}, 0),
              unit_id("doc_qa", "doc2", "t1", "teacher", {"temperature": 0.8}, 0),
              unit_id("doc_qa", "doc1", "t2", "teacher", {"temperature": 0.8}, 0),
              unit_id("doc_qa", "doc1", "t1", "other", {"temperature": 0.8}, 0),
              unit_id("doc_qa", "doc1", "t1", "teacher", {"temperature": 0.7}, 0),
              unit_id("doc_qa", "doc1", "t1", "teacher", {"temperature": 0.8}, 1)]
    assert len({base, *others}) == 7


def test_a_torn_partial_batch_is_regenerated_and_resumed_batches_are_not(tmp_path):
    units = [Unit(f"u{i}", f"p{i}") for i in range(6)]
    calls: list[list[str]] = []

    def teacher(batch, seed):
        calls.append([u.id for u in batch])
        return [{"text": u.prompt.upper()} for u in batch]

    run_phase(units[:4], Journal(tmp_path), teacher, 2)
    (tmp_path / "part-torn.jsonl.partial").write_text('{"id": "u4", "te')  # killed mid-write
    calls.clear()
    rows = run_phase(units, Journal(tmp_path), teacher, 2)
    assert calls == [["u4", "u5"]]
    assert [r["text"] for r in rows] == ["P0", "P1", "P2", "P3", "P4", "P5"]
    assert not list(tmp_path.glob("*.partial"))


def test_two_phases_sharing_a_folder_never_overwrite_each_other(tmp_path):
    def teacher(batch, seed):
        return [{"text": u.prompt} for u in batch]

    run_phase([Unit("a", "A"), Unit("b", "B")], Journal(tmp_path), teacher, 2)
    run_phase([Unit("c", "C"), Unit("d", "D")], Journal(tmp_path), teacher, 2)
    assert set(Journal(tmp_path).done) == {"a", "b", "c", "d"}
