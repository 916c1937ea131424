import torch

from domaintune.training.collate import IGNORE, collate_packed, stream_sums, token_losses


def test_collate_restarts_positions_and_masks_boundaries():
    rows = [{"input_ids": [1, 2, 3, 4, 5], "segment_lengths": [3, 2], "segment_streams": [0, 1]},
            {"input_ids": [6, 7], "segment_lengths": [2], "segment_streams": [1]}]
    b = collate_packed(rows, pad_id=0)
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert b["labels"].tolist() == [[IGNORE, 2, 3, IGNORE, 5], [IGNORE, 7, IGNORE, IGNORE, IGNORE]]
    assert b["streams"].tolist() == [[0, 0, 0, 1, 1], [1, 1, -1, -1, -1]]


def test_stream_sums_attribute_every_target_to_its_stream():
    rows = [{"input_ids": [1, 2, 3, 4, 5], "segment_lengths": [3, 2], "segment_streams": [0, 1]}]
    b = collate_packed(rows, pad_id=0)
    logits = torch.randn(1, 5, 8)
    losses = token_losses(logits, b["labels"])
    sums, counts = stream_sums(losses, b["labels"], b["streams"], 2)
    assert counts.tolist() == [2.0, 1.0]
    assert torch.isclose(sums.sum().float(), losses.sum())


def test_epoch_batches_group_by_bucket_with_flat_token_budget():
    from domaintune.training.loop import batch_padding, epoch_batches

    buckets = [128] * 10 + [512] * 4
    lengths = [100, 128, 120, 90, 127, 128, 101, 99, 119, 91] + [500, 300, 512, 310]
    batches = epoch_batches(buckets, lengths, batch_size=8, batch_tokens=512, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(14))  # each row exactly once
    for b in batches:
        kinds = {buckets[i] for i in b}
        assert len(kinds) == 1 and len(b) <= 512 // kinds.pop()
    assert batches == epoch_batches(buckets, lengths, 8, 512, seed=0, epoch=0)
    assert batches != epoch_batches(buckets, lengths, 8, 512, seed=0, epoch=1)
    # rows of similar length share a batch, so padding to the longest row wastes little
    random_order = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10], [11], [12], [13]]
    assert batch_padding(batches, lengths) < batch_padding(random_order, lengths)
