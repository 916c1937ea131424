import torch

from domaintune.align.confidence import KEEP, REVERSED, UNCERTAIN, filter_pairs, margin_intervals


def test_interval_brackets_the_mean_and_narrows_with_agreement():
    samples = torch.tensor([[1.0, 1.1, 0.9, 1.0], [2.0, -2.0, 1.0, -1.0]])
    low, high = margin_intervals(samples, 0.9)
    assert low[0] > 0.85 and high[0] < 1.15
    assert low[1] < 0 < high[1]


def test_filter_drops_ambiguous_and_reversed_pairs_of_a_constructed_set():
    gen = torch.Generator().manual_seed(0)
    clear = 2.0 + 0.3 * torch.randn(20, 8, generator=gen)        # confidently right
    ambiguous = 0.0 + 1.0 * torch.randn(10, 8, generator=gen)     # noise around 0
    identical = torch.zeros(5, 8)                                  # chosen == rejected
    reversed_ = -2.0 + 0.3 * torch.randn(3, 8, generator=gen)     # confidently wrong
    result = filter_pairs(torch.cat([clear, ambiguous, identical, reversed_]), level=0.95)
    assert result.decisions[:20] == [KEEP] * 20
    assert result.decisions[30:35] == [UNCERTAIN] * 5
    assert result.decisions[35:] == [REVERSED] * 3
    assert result.decisions[20:30].count(UNCERTAIN) >= 9
    before, after = result.accuracy_before_after()
    assert after == 1.0 and before < 0.8
    assert sum(result.counts.values()) == 38


def test_reversed_pairs_can_be_kept():
    result = filter_pairs(torch.full((2, 4), -3.0) + torch.tensor([0.0, 0.1, -0.1, 0.0]), 0.9, drop_reversed=False)
    assert result.decisions == [KEEP, KEEP]
