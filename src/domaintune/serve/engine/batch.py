"""The running decode batch: one left-padded KV cache for all active sequences.

Sequences join (after their own prefill) and leave between decode steps. Joining pads the
shorter side on the left and stacks the caches on the batch dimension; leaving selects the
remaining rows and drops columns that are padding in every row. Each row's attention mask marks
its real columns, and each row gets its own position ids, so a row computes what it would alone.
"""

from __future__ import annotations


def _left_pad(t, width: int):
    import torch.nn.functional as F

    extra = width - t.shape[-2]
    return t if extra == 0 else F.pad(t, (0, 0, extra, 0))


class DecodeBatch:
    def __init__(self):
        self.seqs: list = []
        self.cache = None  # transformers DynamicCache, [rows, kv_heads, columns, head_dim] per layer
        self.mask = None   # [rows, columns] long: 1 where a row has a real token

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, seqs: list, cache, mask) -> None:
        """Append sequences whose prompts are prefilled in `cache` (rows in `seqs` order), `mask` [rows, columns]
        marking their real tokens (a prefill that ran several prompts together is left-padded too)."""
        import torch

        if not self.seqs:
            self.seqs, self.cache, self.mask = list(seqs), cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        layers = [(torch.cat([_left_pad(a.keys, width), _left_pad(b.keys, width)]),
                   torch.cat([_left_pad(a.values, width), _left_pad(b.values, width)]))
                  for a, b in zip(self.cache.layers, cache.layers, strict=True)]
        self.cache = _cache_from(layers)
        self.mask = torch.cat([_left_pad(self.mask.unsqueeze(-1), width).squeeze(-1),
                               _left_pad(mask.unsqueeze(-1), width).squeeze(-1)])
        self.seqs.extend(seqs)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order); free the rest."""
        import torch

        if len(rows) == len(self.seqs):
            return
        self.seqs = [self.seqs[i] for i in rows]
        if not rows:
            self.cache = self.mask = None
            return
        index = torch.tensor(rows, dtype=torch.long)
        self.mask = self.mask[index]
        first = int(self.mask.any(dim=0).nonzero()[0].item())  # columns before this are padding everywhere
        self.mask = self.mask[:, first:]
        layers = [(layer.keys[index, :, first:], layer.values[index, :, first:]) for layer in self.cache.layers]
        self.cache = _cache_from(layers)

    def step_inputs(self):
        """input_ids, position_ids and attention mask for one decode step of every row."""
        import torch

        ids = torch.tensor([[s.pending] for s in self.seqs], dtype=torch.long)
        positions = torch.tensor([[s.length] for s in self.seqs], dtype=torch.long)
        mask = torch.cat([self.mask, torch.ones(len(self.seqs), 1, dtype=torch.long)], dim=1)
        return ids, positions, mask


def _cache_from(layers):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=layers)
