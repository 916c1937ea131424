import pytest

from domaintune.training.throughput import device_peak_flops, mfu, peak_flops


def test_peak_lookup_prefers_the_most_specific_name():
    assert peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989e12)
    assert peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak_flops("Some Future GPU") is None


def test_mfu_formula_and_cpu_has_none():
    assert mfu(1_000_000_000, 10_000, 989e12) == pytest.approx(6e13 / 989e12)
    assert mfu(10, 10, None) is None
    import torch

    assert device_peak_flops(torch.device("cpu")) is None
