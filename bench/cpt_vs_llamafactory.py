"""Continual pre-training side by side: LLaMA-Factory 0.9.5 `stage: pt` vs domaintune `mix` + `train`.

Same model (LF gets a copy with the two metadata fixes transformers 4.57.1 needs, checked by
identical token ids and logits), the same cleaned splits (a data stage's output), the same token
budget, LoRA r16 alpha 32 dropout 0.05 on all linear layers, lr 1e-3 cosine, warm-up 5 %, fp32,
the same threads. Each side runs alone in its own process, the sides alternate, `--repeats` times.
LF runs in its own venv (bench/peers/build_llamafactory_venv.sh builds it when it is missing).

    python bench/cpt_vs_llamafactory.py --model examples/quickstart/models/smollm2-135m-instruct \\
        --data examples/quickstart/runs/quickstart/data [--config examples/quickstart/domaintune.yaml] \\
        [--tokens 8192] [--repeats 1] [--threads 2] [--json out.json]

Token shares: ours samples streams by tokens (the mixture of `--config`). LF's `interleave_probs`
are per *document*, so each stream's token weight is divided by its mean document length (our
tokenizer, train split) and renormalized; LF's realized token shares are then measured by replaying
`datasets.interleave_datasets(probabilities, seed, "first_exhausted")` (what LF's
`interleave_under` calls) over the same files in LF's venv and counting tokens.

Printed per side: tokens/s and step time (LF: HF Trainer's `train_runtime`; ours: the loop's own
step timer, both excluding model load), peak RSS of the training process, realized token share per
stream, and held-out perplexity per stream on the test split after training, per document (each
document alone) and over concatenated 1,024-token windows (crossing document boundaries), both
scored by the same code on the same base model with each side's adapter.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_LF_VENV = HERE / ".cache" / "lf-venv"
LF_ROW = 1023  # LF subtracts 1 from cutoff_len when packing

RSS_WRAPPER = ("import resource, subprocess, sys\n"
               "rc = subprocess.run(sys.argv[1:]).returncode\n"
               "print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, flush=True)\n"
               "sys.exit(rc)\n")

LOGITS_PROBE = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation="sdpa").eval()
ids = tok(sys.argv[2], add_special_tokens=False)["input_ids"]
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits[0]
json.dump({"ids": ids, "logits": logits.tolist()}, open(sys.argv[3], "w"))
"""

LF_SHARES = """
import json, sys
from datasets import interleave_datasets, load_dataset
from transformers import AutoTokenizer
args = json.loads(sys.argv[1])
tok = AutoTokenizer.from_pretrained(args["model"])
parts = [load_dataset("json", data_files=f, split="train") for f in args["files"]]
mixed = interleave_datasets(parts, probabilities=args["probs"], seed=args["seed"], stopping_strategy="first_exhausted")
counts = {}
texts = {t: i for i, part in enumerate(parts) for t in part["text"]}
for text in mixed["text"]:
    s = args["streams"][texts[text]]
    counts[s] = counts.get(s, 0) + len(tok(text, add_special_tokens=False)["input_ids"]) + 1
json.dump(counts, open(args["out"], "w"))
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="the model folder (written by transformers 5)")
    p.add_argument("--data", type=Path, required=True, help="a data stage's output folder (with manifest.json)")
    p.add_argument("--config", type=Path, default=REPO / "examples/quickstart/domaintune.yaml",
                   help="the domaintune config whose mixture and data section the data folder came from")
    p.add_argument("--tokens", type=int, default=8192, help="training tokens per side")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-docs", type=int, default=12, help="test documents per stream for perplexity")
    p.add_argument("--lf-venv", type=Path, default=DEFAULT_LF_VENV)
    p.add_argument("--work", type=Path, help="keep the work folder here (default: a temporary one)")
    p.add_argument("--json", type=Path)
    p.add_argument("--eval-child", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- setup
def ensure_lf_venv(venv: Path) -> Path:
    if not (venv / "bin" / "llamafactory-cli").exists():
        subprocess.run(["bash", str(HERE / "peers" / "build_llamafactory_venv.sh"), str(venv)], check=True)
    return venv


def lf_model_copy(model: Path, out: Path) -> Path:
    """The model folder with the metadata transformers 4.57.1 reads (see the module docstring)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model, out)
    tc = json.loads((out / "tokenizer_config.json").read_text())
    if tc.get("tokenizer_class") == "TokenizersBackend":
        tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc.pop("backend", None)
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    cfg = json.loads((out / "config.json").read_text())
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in cfg:
        cfg["rope_theta"] = rope["rope_theta"]  # 4.57.1 ignores rope_parameters and silently uses 10000
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def check_logits(model: Path, copy: Path, lf_python: Path, work: Path) -> dict:
    """Token ids and logits of the copy under LF's transformers vs the original under ours."""
    text = "Harborview Bank charges $25 for a wire recall. 海港银行的跨境汇款手续费为每笔十五美元。"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    theirs, ours = work / "logits_lf.json", work / "logits_ours.json"
    subprocess.run([str(lf_python), "-c", LOGITS_PROBE, str(copy), text, str(theirs)], check=True, env=env)
    subprocess.run([sys.executable, "-c", LOGITS_PROBE, str(model), text, str(ours)], check=True)
    a, b = json.loads(theirs.read_text()), json.loads(ours.read_text())
    delta = max(abs(x - y) for ra, rb in zip(a["logits"], b["logits"]) for x, y in zip(ra, rb))
    return {"same_ids": a["ids"] == b["ids"], "max_abs_logit_diff": delta, "tokens": len(a["ids"])}


def stream_files(data: Path) -> dict[str, dict]:
    return json.loads((data / "streams.json").read_text())


def mean_doc_tokens(model: Path, data: Path, streams: list[str]) -> dict[str, float]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    out = {}
    for s in streams:
        texts = [json.loads(line)["text"] for line in (data / stream_files(data)[s]["train"]).open(encoding="utf-8")]
        out[s] = sum(len(ids) + 1 for ids in tok(texts, add_special_tokens=False)["input_ids"]) / len(texts)
    return out


def lf_probabilities(mixture: dict[str, float], mean_len: dict[str, float]) -> dict[str, float]:
    """Per-document probabilities whose expected token shares are the mixture's token shares."""
    raw = {s: w / mean_len[s] for s, w in mixture.items()}
    total = sum(raw.values())
    probs = {s: round(v / total, 4) for s, v in raw.items()}
    last = list(probs)[-1]  # written with 4 decimals: they must still sum to 1 (numpy checks)
    probs[last] = round(1 - sum(v for s, v in probs.items() if s != last), 4)
    return probs


# ----------------------------------------------------------------------------- the two sides
def timed(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run `cmd` under the RSS wrapper; (wall s, peak RSS MB of the command's process tree's largest)."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *cmd], stdout=fh, stderr=subprocess.STDOUT,
                            env=env).returncode
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if rc:
        raise SystemExit(f"command failed (rc {rc}): {' '.join(cmd)}\n--- last lines of {log}:\n{text[-3000:]}")
    peak = float(text.rsplit("PEAK_RSS_MB", 1)[1].split()[0])
    return wall, peak


def prepare_ours(args, work: Path) -> Path:
    """A config next to the quickstart's files, with the data stage's output copied in as done."""
    base = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    root = work / "ours"
    root.mkdir(parents=True, exist_ok=True)
    for entry in args.config.parent.iterdir():  # relative paths of the config keep resolving
        if entry.name not in ("runs", "domaintune.yaml") and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry.resolve())
    base |= {"name": "bench", "runs_dir": "runs"}
    base["model"] = {**base.get("model", {}), "base": str(args.model.resolve())}
    base["runtime"] = {**base.get("runtime", {}), "threads": args.threads, "device": "cpu"}
    base["mix"] = {**base["mix"], "tokens": args.tokens, "seq_len": 1024, "buckets": "auto", "heldout_tokens": 0}
    train = base.setdefault("train", {})
    train["batch"] = {"batch_tokens": 1024, "grad_accum": 1}
    train["adapter"] = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
    train["optim"] = {"lr": 1.0e-3, "warmup_ratio": 0.05, "scheduler": "cosine"}
    train["precision"] = "fp32"
    train["logging"] = {"log_every": 1000, "eval_every": None}
    cfg = root / "domaintune.yaml"
    cfg.write_text(yaml.safe_dump(base, allow_unicode=True), encoding="utf-8")
    return cfg


def run_ours(args, cfg: Path, rep: int, env: dict) -> dict:
    runs = cfg.parent / "runs" / "bench"
    if runs.exists():
        shutil.rmtree(runs)
    shutil.copytree(args.data, runs / "data", symlinks=True)
    cli = [sys.executable, "-m", "domaintune", "run", str(cfg)]
    subprocess.run([*cli, "--stages", "mix"], check=True, env=env, stdout=subprocess.DEVNULL, cwd=cfg.parent)
    wall, peak = timed([*cli, "--stages", "train"], env, cfg.parent / f"train-{rep}.log")
    mix = json.loads((runs / "mix" / "mix.json").read_text())
    m = json.loads((runs / "train" / "manifest.json").read_text())["metrics"]
    return {"tokens": m["tokens"], "steps": m["steps"], "train_s": m["train_time_s"],
            "tokens_per_s": m["tokens_per_s"], "step_s": m["train_time_s"] / m["steps"], "peak_rss_mb": peak,
            "wall_s": wall, "padding": m["batch_padding_fraction"], "buckets": mix["buckets"],
            "shares": {s: v["share"] for s, v in mix["per_stream"].items()}, "adapter": str(runs / "train" / "model")}


def prepare_lf(args, work: Path, copy: Path, streams: list[str], probs: dict[str, float]) -> Path:
    ddir = work / "lf-data"
    ddir.mkdir(parents=True, exist_ok=True)
    files = stream_files(args.data)
    info = {}
    for s in streams:
        (ddir / s).mkdir(exist_ok=True)
        link = ddir / s / "train.jsonl"
        if not link.exists():
            link.symlink_to((args.data / files[s]["train"]).resolve())
        info[s] = {"file_name": f"{s}/train.jsonl", "columns": {"prompt": "text"}}
    (ddir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    steps = max(1, math.ceil(args.tokens / LF_ROW))
    cfg = {"stage": "pt", "do_train": True, "model_name_or_path": str(copy), "finetuning_type": "lora",
           "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target": "all",
           "dataset": ",".join(streams), "dataset_dir": str(ddir), "mix_strategy": "interleave_under",
           "interleave_probs": ",".join(f"{probs[s]:.4f}" for s in streams), "cutoff_len": LF_ROW + 1,
           "packing": True, "template": "empty", "flash_attn": "sdpa", "disable_gradient_checkpointing": True,
           "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "learning_rate": 1.0e-3,
           "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "max_steps": steps, "seed": 0,
           "logging_steps": 1000, "save_strategy": "no", "report_to": "none", "preprocessing_num_workers": 1,
           "dataloader_num_workers": 0, "include_num_input_tokens_seen": True, "output_dir": str(work / "lf-out"),
           "overwrite_output_dir": True, "use_cpu": True}
    path = work / "lf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_lf(args, cfg: Path, rep: int, env: dict) -> dict:
    out = Path(yaml.safe_load(cfg.read_text())["output_dir"])
    if out.exists():
        shutil.rmtree(out)
    wall, peak = timed([str(args.lf_venv / "bin" / "llamafactory-cli"), "train", str(cfg)], env,
                       cfg.parent / f"lf-{rep}.log")
    res = json.loads((out / "all_results.json").read_text())
    steps = yaml.safe_load(cfg.read_text())["max_steps"]
    tokens = int(res.get("num_input_tokens_seen", steps * LF_ROW))
    return {"tokens": tokens, "steps": steps, "train_s": res["train_runtime"],
            "tokens_per_s": tokens / res["train_runtime"], "step_s": res["train_runtime"] / steps,
            "peak_rss_mb": peak, "wall_s": wall, "adapter": str(out)}


def lf_shares(args, copy: Path, streams: list[str], probs: dict[str, float], work: Path) -> dict[str, float]:
    files = stream_files(args.data)
    out = work / "lf-shares.json"
    spec = {"model": str(copy), "files": [str(args.data / files[s]["train"]) for s in streams], "streams": streams,
            "probs": [probs[s] for s in streams], "seed": 0, "out": str(out)}
    subprocess.run([str(args.lf_venv / "bin" / "python"), "-c", LF_SHARES, json.dumps(spec)], check=True,
                   env=os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""})
    counts = json.loads(out.read_text())
    total = sum(counts.values())
    return {s: counts.get(s, 0) / total for s in streams}


# ----------------------------------------------------------------------------- held-out perplexity
def eval_child(spec_path: Path) -> None:
    """Per-stream perplexity of each adapter on the test split: documents alone, and 1,024-token windows."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    tok = AutoTokenizer.from_pretrained(spec["model"])
    docs = {s: [tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"][:1023] + [tok.eos_token_id]
                for line in Path(f).read_text(encoding="utf-8").splitlines()[:spec["eval_docs"]]]
            for s, f in spec["files"].items()}
    result = {}
    for side, adapter in spec["adapters"].items():
        base = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation="sdpa")
        model = PeftModel.from_pretrained(base, adapter).eval()
        result[side] = {}
        for s, ds in docs.items():
            flat = [t for d in ds for t in d]
            windows = [flat[i:i + 1024] for i in range(0, len(flat), 1024)]
            result[side][s] = {"per_doc": _ppl(model, ds), "windows": _ppl(model, [w for w in windows if len(w) > 1])}
    Path(spec["out"]).write_text(json.dumps(result))


def _ppl(model, seqs: list[list[int]]) -> float:
    import torch

    total, n = 0.0, 0
    with torch.no_grad():
        for ids in seqs:
            x = torch.tensor([ids])
            logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            n += len(ids) - 1
    return math.exp(total / n)


def heldout(args, adapters: dict[str, str], streams: list[str], work: Path, env: dict) -> dict:
    files = stream_files(args.data)
    spec = work / "eval.json"
    out = work / "eval-out.json"
    spec.write_text(json.dumps({"model": str(args.model.resolve()), "threads": args.threads,
                                "eval_docs": args.eval_docs,
                                "files": {s: str(args.data / files[s]["test"]) for s in streams},
                                "adapters": adapters, "out": str(out)}))
    subprocess.run([sys.executable, __file__, "--model", str(args.model), "--data", str(args.data),
                    "--eval-child", str(spec)], check=True, env=env)
    return json.loads(out.read_text())


# ----------------------------------------------------------------------------- main
def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def print_report(r: dict) -> None:
    ours, lf = r["runs"]["domaintune"], r["runs"]["llamafactory"]
    print(f"\nCPT side by side: {r['tokens']} training tokens per side, {r['repeats']} repeat(s), fp32, "
          f"{r['threads']} threads; load {r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after")
    print(f"LF model copy: same token ids {r['logits_check']['same_ids']}, "
          f"max |dlogit| {r['logits_check']['max_abs_logit_diff']:.2e} over {r['logits_check']['tokens']} tokens")
    print(f"LF interleave_probs (per document, from token weights / mean doc tokens): {r['lf_probs']}")
    print("| side | tokens | steps | tok/s (median) | step s | peak RSS MB | " +
          " | ".join(f"share {s}" for s in r["streams"]) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---:|" * len(r["streams"]))
    for name, runs, shares in (("LLaMA-Factory 0.9.5", lf, r["lf_shares"]), ("domaintune", ours, ours[0]["shares"])):
        print(f"| {name} | {runs[0]['tokens']} | {runs[0]['steps']} | "
              f"{_median([x['tokens_per_s'] for x in runs]):.1f} | {_median([x['step_s'] for x in runs]):.2f} | "
              f"{max(x['peak_rss_mb'] for x in runs):.0f} | " +
              " | ".join(f"{shares[s]:.1%}" for s in r["streams"]) + " |")
    ratio = _median([x["tokens_per_s"] for x in ours]) / _median([x["tokens_per_s"] for x in lf])
    print(f"domaintune / LF tokens/s: {ratio:.2f}x  (ours: buckets {ours[0]['buckets']}, "
          f"padding {ours[0]['padding']:.1%}, 0 cross-document attention; LF: plain concatenation)")
    print("| held-out ppl (test split) | " + " | ".join(f"{s} per doc | {s} windows" for s in r["streams"]) + " |")
    print("|---|" + "---:|---:|" * len(r["streams"]))
    for side in ("llamafactory", "domaintune"):
        e = r["heldout"][side]
        cells = " | ".join(f"{e[s]['per_doc']:.3f} | {e[s]['windows']:.3f}" for s in r["streams"])
        print(f"| {side} | {cells} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.eval_child:
        eval_child(args.eval_child)
        return 0
    args.model, args.data = args.model.resolve(), args.data.resolve()
    ensure_lf_venv(args.lf_venv)
    work = args.work or Path(tempfile.mkdtemp(prefix="cpt-vs-lf-"))
    work.mkdir(parents=True, exist_ok=True)
    threads = str(args.threads)
    env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1",
                        "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    lf_env = env | {"PYTHONPATH": "", "DISABLE_VERSION_CHECK": "1"}
    mixture = yaml.safe_load(args.config.read_text(encoding="utf-8"))["mix"]["mixture"]
    streams = list(mixture)
    copy = lf_model_copy(args.model, work / "lf-model")
    check = check_logits(args.model, copy, args.lf_venv / "bin" / "python", work)
    if not check["same_ids"] or check["max_abs_logit_diff"] > 1e-3:
        raise SystemExit(f"the LF model copy does not match the original: {check}")
    probs = lf_probabilities(mixture, mean_doc_tokens(args.model, args.data, streams))
    ours_cfg, lf_cfg = prepare_ours(args, work), prepare_lf(args, work, copy, streams, probs)
    load_before = os.getloadavg()
    runs = {"domaintune": [], "llamafactory": []}
    for rep in range(args.repeats):  # alternate, starting side rotated per repeat
        order = ("llamafactory", "domaintune") if rep % 2 == 0 else ("domaintune", "llamafactory")
        for side in order:
            runs[side].append(run_lf(args, lf_cfg, rep, lf_env) if side == "llamafactory"
                              else run_ours(args, ours_cfg, rep, env))
    load_after = os.getloadavg()
    report = {"tokens": args.tokens, "repeats": args.repeats, "threads": args.threads, "streams": streams,
              "load_before": load_before, "load_after": load_after, "logits_check": check,
              "lf_probs": {s: round(p, 4) for s, p in probs.items()},
              "lf_shares": lf_shares(args, copy, streams, probs, work), "runs": runs,
              "heldout": heldout(args, {"llamafactory": runs["llamafactory"][-1]["adapter"],
                                        "domaintune": runs["domaintune"][-1]["adapter"]}, streams, work, env)}
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
