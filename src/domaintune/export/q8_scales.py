"""Q8_0 blocks with a searched scale: a standard GGUF Q8_0 tensor, closer to the fp32 weights.

A Q8_0 block is 32 int8 values q and one fp16 scale d (value = d·q); any d is valid for every
reader. llama.cpp's reference quantizer (and `gguf.quants`) takes d = max|x|/127, which leaves the
value -128 unused and ignores that d is then rounded to fp16. Like llama.cpp's own quantizers for
other types (make_qx_quants), we try a few scales per block — max|x|/n for n in CANDIDATE_STEPS and
the least-squares refit d = Σxq/Σq² of each — quantize with each fp16 d, and keep the one with the
smallest squared error, the reference's own bytes winning ties. So weights already on a Q8_0 grid
(an untouched GGUF import) come out byte-identical, and every other block only gets closer.

With `importance` (llama.cpp's imatrix idea) the error of input column j is weighted by E[a_j²],
the mean square of that column's activation on calibration text: Σ_j E[a_j²](w_j − ŵ_j)² is the
expected squared error of the layer's output W·a under a diagonal approximation — what a block's
scale should minimize. Measured on SmolLM2-135M (bench/README.md): the weighted search halves the
KL to fp32 of the whole Q8_0 model; the unweighted one (the weights' own error, 17 % lower) barely
moves it, so the writer uses the search only with calibration statistics.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
# max|x|/n: 127 is the reference; 127.5-128 let -128 be used; above that the largest value may clip.
CANDIDATE_STEPS = (127.0, 127.5, 128.0, 128.5, 129.0, 130.0, 131.0, 132.5, 134.0)


def _round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C roundf), as ggml's quantizers do."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _with_scale(blocks: np.ndarray, weights: np.ndarray, d: np.ndarray):
    """(fp16-exact d, q, weighted squared error per block) of quantizing `blocks` with scales `d`."""
    d = d.astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d > 0, np.clip(_round(blocks / d), -128, 127), 0.0)
    err = (weights * np.square(q * d - blocks)).sum(axis=1)
    return d, q, err


def quantize_q8_0(array: np.ndarray, importance: np.ndarray | None = None) -> np.ndarray:
    """`array` (float32, last dim a multiple of 32) as Q8_0 bytes, shaped like gguf.quants.quantize's.
    `importance`: one non-negative weight per column (array.shape[-1]); None weighs all alike."""
    import gguf

    reference = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
    ref_blocks = reference.reshape(-1, 2 + BLOCK)
    blocks = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, BLOCK)
    if importance is None:
        weights = np.ones((1, BLOCK), dtype=np.float32)
    else:  # column j of every row: block (row, j // 32), position j % 32
        cols = np.asarray(importance, dtype=np.float32).reshape(-1, BLOCK)
        weights = np.broadcast_to(cols[None], (blocks.shape[0] // cols.shape[0], *cols.shape)).reshape(-1, BLOCK)
        weights = weights + 1e-6 * weights.mean()  # an unused column still counts a little (ties → reference)
    best_d = ref_blocks[:, :2].copy().view(np.float16).astype(np.float32)
    best_q = ref_blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    best_err = (weights * np.square(best_q * best_d - blocks)).sum(axis=1)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    for steps in CANDIDATE_STEPS:
        first = _with_scale(blocks, weights, amax / steps)
        wq = weights * first[1]
        qq = (wq * first[1]).sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            refit = np.where(qq > 0, (wq * blocks).sum(axis=1, keepdims=True) / qq, 0.0)
        for d, q, err in (first, _with_scale(blocks, weights, refit)):
            better = err < best_err  # strict: the reference keeps ties (byte-identical on-grid weights)
            best_d[better], best_q[better], best_err[better] = d[better], q[better], err[better]
    out = np.concatenate([best_d.astype(np.float16).view(np.uint8), best_q.astype(np.int8).view(np.uint8)], axis=1)
    return out.reshape(reference.shape)


def input_importance(model, windows: list[list[int]]) -> dict[str, np.ndarray]:
    """E[a_j²] of every nn.Linear's input columns over calibration token windows, keyed by the
    weight's name (`model.layers.0.mlp.up_proj.weight`): the `importance` of quantize_q8_0."""
    import torch

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def accumulate(_module, args):
            a = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + a.square().sum(0)
            counts[name] = counts.get(name, 0) + a.shape[0]
        return accumulate

    handles = [m.register_forward_pre_hook(hook(f"{n}.weight")) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            for window in windows:
                model(torch.tensor([window]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {name: (sums[name] / counts[name]).numpy() for name in sums}


def squared_error(array: np.ndarray, packed: np.ndarray) -> float:
    """Σ(x − dequantized)² of a Q8_0 tensor: what the search minimizes (for tests and the bench)."""
    import gguf

    back = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0).reshape(array.shape)
    return float(np.square(back.astype(np.float64) - array.astype(np.float64)).sum())
