"""Peak RSS of the data stage's corpus-wide merge at several corpus sizes: does it grow with the corpus?

    python bench/merge_memory.py --mb 50 200 800 --json bench/merge_memory.json

Corpora are `data_pipeline.py`'s (same generator, same config as its "ours" variant: full governance
defaults). Per size, the full stage runs once to build the shards (`--build-workers` processes; the
engine's worker count does not change the shards), then each re-run is its own process that reuses the
shards, so what it adds on top of the (skipped) shard phase is the merge and the outputs. A thread samples
VmRSS every 5 ms; the table gives RSS when the merge starts, the highest RSS in each phase after it, the
process peak (`ru_maxrss`), and SQLite's own allocation high-water mark (`sqlite3_memory_highwater`).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from data_pipeline import build_corpus  # noqa: E402

# The merge's own steps, then the outputs the stage writes from its index.
MERGE_PHASES = ("load_index", "run_corpus_steps", "near_duplicates", "split_records")
PHASES = (*MERGE_PHASES, "rejects+lineage", "splits", "report")


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap() -> dict | None:
    """glibc's heap: bytes in use, free but held (fragmentation), and in mmapped chunks."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Mallinfo2
    except (OSError, AttributeError):
        return None
    m = libc.mallinfo2()
    return {"in_use_mb": round(m.uordblks / 2**20, 1), "free_held_mb": round(m.fordblks / 2**20, 1),
            "mmapped_mb": round(m.hblkhd / 2**20, 1)}


def _vmrss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Sampler(threading.Thread):
    """The highest VmRSS since the last `mark`, per named phase."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.phase, self.peaks, self.starts, self._done = None, {}, {}, threading.Event()

    def mark(self, phase: str | None) -> None:
        rss = _vmrss_mb()
        if phase is not None:
            self.starts[phase] = rss
            self.peaks[phase] = rss
        self.phase = phase

    def run(self) -> None:
        while not self._done.wait(0.005):
            if self.phase is not None:
                self.peaks[self.phase] = max(self.peaks[self.phase], _vmrss_mb())

    def stop(self) -> None:
        self._done.set()
        self.join()


def _sqlite_lib():
    """The libsqlite3 that Python's sqlite3 module uses (already loaded: CDLL finds the same copy)."""
    import _sqlite3

    for line in Path("/proc/self/maps").read_text().splitlines():
        if "libsqlite3" in line:
            return ctypes.CDLL(line.split()[-1])
    name = ctypes.util.find_library("sqlite3") if _sqlite3 else None
    return ctypes.CDLL(name) if name else None


def _config(corpus: Path, work: Path, workers: int):
    import yaml

    from domaintune.config import load_config

    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "domaintune.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "bench", "runs_dir": str(work / "runs"), "model": {"base": "some/id"},
        "mix": {"mixture": {"web": 1}, "tokens": 1000},
        "data": {"sources": [{"path": str(corpus / "*.jsonl"), "stream": "web", "id_field": "id"}],
                 "engine": {"workers": workers}, "near_dedup": {"threshold": 0.8, "num_perm": 112},
                 "pii": {"enabled": True}}}))
    return load_config(cfg_path)


def _child(corpus: Path, work: Path, workers: int, cache_kib: int | None) -> dict:
    import gc

    import domaintune.data.merge as merge_mod
    import domaintune.data.stage as stage
    from domaintune.artifacts import RunDir

    cfg = _config(corpus, work, workers)
    if cache_kib is not None:  # to compare budgets: merge_index.CACHE_KIB is read when the index opens
        import domaintune.data.merge_index as merge_index

        merge_index.CACHE_KIB = cache_kib
    sampler = Sampler()

    def marked(phase: str, fn):
        def wrapped(*args, **kwargs):
            sampler.mark(phase)
            return fn(*args, **kwargs)
        return wrapped

    for name in MERGE_PHASES:
        setattr(merge_mod, name, marked(name, getattr(merge_mod, name)))
    stage.write_lineage = marked("rejects+lineage", stage.write_lineage)  # rejects are written just before
    stage._write_splits = marked("splits", stage._write_splits)
    stage._report = marked("report", stage._report)
    lib = _sqlite_lib()
    sampler.start()
    t0 = time.perf_counter()
    stage.run(cfg, RunDir(cfg.run_path))
    wall = time.perf_counter() - t0
    sampler.mark(None)
    sampler.stop()
    end, heap = _vmrss_mb(), _heap()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hands free heap pages back: what stays is in use
    trimmed = _vmrss_mb()
    highwater = None
    if lib is not None:
        lib.sqlite3_memory_highwater.restype = ctypes.c_int64
        highwater = lib.sqlite3_memory_highwater(0) / 2**20
    stats = json.loads((cfg.run_path / "data" / "stats.json").read_text())
    return {"wall_s": round(wall, 1), "docs": stats["total"]["records"], "kept": stats["total"]["kept"],
            "rss_at_merge_mb": round(sampler.starts["load_index"]), "rss_end_mb": round(end),
            "rss_end_trimmed_mb": round(trimmed), "heap_end": heap,
            "phase_peak_mb": {p: round(sampler.peaks[p]) for p in PHASES},
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "sqlite_highwater_mb": None if highwater is None else round(highwater, 1)}


def _spawn(corpus: Path, work: Path, workers: int, cache_kib: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(corpus), "--work", str(work), "--workers", str(workers),
           *([] if cache_kib is None else ["--cache-kib", str(cache_kib)])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--repeats", type=int, default=2, help="merge-only re-runs per size")
    ap.add_argument("--build-workers", type=int, default=1)
    ap.add_argument("--cache", default=str(ROOT / "bench" / ".cache" / "data_pipeline"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache-kib", type=int, default=None,
                    help="the merge index's SQLite cache budget for the re-runs (default: merge_index.CACHE_KIB)")
    ap.add_argument("--skip-build", action="store_true", help="the shards exist: only the merge-only re-runs")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_child(Path(args.child), Path(args.work), args.workers, args.cache_kib)))
        return
    cache = Path(args.cache)
    results = {}
    for mb in args.mb:
        corpus, work = cache / f"corpus-{mb}mb", cache / f"merge-{mb}mb"
        truth = build_corpus(corpus, mb)
        build = None
        if not args.skip_build:
            t0 = time.perf_counter()
            build = _spawn(corpus, work, args.build_workers)  # builds the shards, or reuses them if present
            print(f"{mb} MB: {truth['docs']:,} docs; full stage {time.perf_counter() - t0:.0f}s "
                  f"(peak RSS {build['peak_rss_mb']} MB)", flush=True)
        reruns = [_spawn(corpus, work, 1, args.cache_kib) for _ in range(args.repeats)]
        for r in reruns:
            print(f"  {mb} MB merge-only: {r['wall_s']}s, RSS at merge {r['rss_at_merge_mb']} MB, phases "
                  f"{r['phase_peak_mb']}, peak {r['peak_rss_mb']} MB, SQLite high-water "
                  f"{r['sqlite_highwater_mb']} MB; at the end {r['rss_end_mb']} MB, {r['rss_end_trimmed_mb']} MB "
                  f"after malloc_trim, heap {r['heap_end']}", flush=True)
        results[mb] = {"docs": truth["docs"], "build": build, "reruns": reruns}
    print(f"\n{'corpus':>8}{'docs':>10}{'RSS at merge':>14}" + "".join(f"{p[:15]:>17}" for p in PHASES)
          + f"{'peak RSS':>10}{'SQLite hw':>11}{'wall s':>8}")
    for mb, res in results.items():
        best = min(res["reruns"], key=lambda r: r["peak_rss_mb"])  # the least disturbed re-run
        print(f"{mb:>5} MB{res['docs']:>10,}{best['rss_at_merge_mb']:>14}"
              + "".join(f"{best['phase_peak_mb'][p]:>17}" for p in PHASES)
              + f"{best['peak_rss_mb']:>10}{best['sqlite_highwater_mb']:>11}{best['wall_s']:>8}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
