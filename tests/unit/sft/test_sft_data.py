import torch

from domaintune.sft.data import Example, pack_examples, row_bucket, split_rows, to_dataset
from domaintune.training.collate import IGNORE, collate_packed, packed_rows, row_targets


def _examples():
    return [Example(list(range(10, 10 + n)), [0] * (n // 2) + [1] * (n - n // 2), i % 2)
            for i, n in enumerate([9, 5, 7, 3, 6])]


def test_best_fit_packing_keeps_every_example_whole_within_max_len():
    rows = pack_examples(_examples(), 12, packed=True, seed=0)
    assert all(sum(len(e.ids) for e in r) <= 12 for r in rows)
    assert sorted(len(e.ids) for r in rows for e in r) == [3, 5, 6, 7, 9]
    assert len(rows) == 3  # 30 tokens in rows of 12: 9+3, 7+5, 6
    assert [[e] for e in _examples()] == pack_examples(_examples(), 12, packed=False, seed=0)


def test_collated_labels_are_the_assistant_tokens_only():
    ds = to_dataset(pack_examples(_examples(), 12, packed=True, seed=0), 12)
    rows = packed_rows(ds, list(range(len(ds))))
    batch = collate_packed(rows, pad_id=0)
    for b, row in enumerate(rows):
        n = len(row["input_ids"])
        mask = torch.tensor(row["loss_mask"])
        labelled = batch["labels"][b, :n] != IGNORE
        assert not labelled[mask == 0].any()
        starts = torch.tensor([0] + row["segment_lengths"][:-1]).cumsum(0)
        assert not labelled[starts].any()  # a segment's first token is never a target
        assert int(labelled.sum()) == row_targets(row)


def test_cpt_rows_without_a_mask_keep_their_targets():
    row = {"input_ids": [1, 2, 3, 4, 5], "segment_lengths": [3, 2], "segment_streams": [0, 0]}
    assert row_targets(row) == 3
    assert int((collate_packed([row], 0)["labels"] != IGNORE).sum()) == 3


def test_validation_split_is_seeded_and_never_empty_when_asked():
    assert split_rows(20, 0.1, 0, "en") == split_rows(20, 0.1, 0, "en")
    assert len(split_rows(5, 0.05, 0, "en")) == 1 and split_rows(5, 0.0, 0, "en") == set()


def test_unpacked_rows_get_small_buckets_so_a_token_budget_holds_many():
    assert [row_bucket(n, 256, packed=False) for n in (5, 17, 64, 65, 300)] == [16, 32, 64, 128, 256]
    assert row_bucket(5, 256, packed=True) == 256
    ds = to_dataset(pack_examples(_examples(), 12, packed=False, seed=0), 12, packed=False)
    assert list(ds["bucket"]) == [row_bucket(n, 12, False) for n in ds["length"]]
