"""Model FLOPs utilization (MFU): achieved 6·N·tokens/s over the device's peak.

6·N per token is the standard dense-transformer estimate (forward 2N + backward 4N); with a
frozen base (LoRA) the real cost is closer to 4N, so MFU is an upper-bound-style figure there.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

TABLE = Path(__file__).with_name("gpu_peak_tflops.yaml")


@cache
def _table() -> dict[str, float]:
    return {str(k): float(v) for k, v in yaml.safe_load(TABLE.read_text()).items()}


def peak_flops(device_name: str) -> float | None:
    """Peak FLOP/s for a GPU name, or None when it is unknown (MFU is then not reported)."""
    name = device_name.lower()
    for key in sorted(_table(), key=len, reverse=True):
        if key.lower() in name:
            return _table()[key] * 1e12
    return None


def device_peak_flops(device) -> float | None:
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None  # CPU peaks vary too much by SKU and thread count to be meaningful
    return peak_flops(torch.cuda.get_device_name(device))


def mfu(n_params: int, tokens_per_s_per_device: float, peak: float | None) -> float | None:
    return 6 * n_params * tokens_per_s_per_device / peak if peak else None
