"""The running decode batch: one left-padded KV cache for all active sequences.

A core library, not part of a stage: the serve engine and the synth stage's local teacher both batch with it.

Sequences join (after their own prefill) and leave between decode steps. Joining pads the
shorter side on the left and stacks the caches on the batch dimension; leaving selects the
remaining rows and drops columns that are padding in every row. Each row's attention mask marks
its real columns, and each row gets its own position ids, so a row computes what it would alone.

A row may be vacated (`vacate`): it stays in the cache as a hole, masked out and computed but ignored,
until `replace` puts a newly prefilled sequence in its place: a finished sequence's slot goes to the next
one without copying the whole cache twice (once to drop the row, once to add the new one).

The batch's cache layers keep spare columns (`_GrowingLayer`): a decode step writes its one new column in
place, where transformers' DynamicLayer concatenates, i.e. copies the whole cache of every layer each step
(about an eighth of a batch-8 decode step of SmolLM2-135M on this CPU).
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
        """Rows in the cache, holes included (what a decode step computes)."""
        return len(self.seqs)

    def live(self) -> int:
        return sum(s is not None for s in self.seqs)

    def holes(self) -> list[int]:
        return [i for i, s in enumerate(self.seqs) if s is None]

    def vacate(self, row: int) -> None:
        """Leave `row` in place as a hole: masked out (it attends only to its own next column) until `replace`
        fills it or `keep` drops it."""
        self.seqs[row] = None
        self.mask[row] = 0

    def add(self, seqs: list, cache, mask) -> None:
        """Append sequences whose prompts are prefilled in `cache` (rows in `seqs` order), `mask` [rows, columns]
        marking their real tokens (a prefill that ran several prompts together is left-padded too)."""
        self.extend([(seqs, cache, mask)])

    def extend(self, groups: list) -> None:
        """`add` for several (seqs, cache, mask) groups at once: the batch's cache is rebuilt (copied) once."""
        import torch

        groups = [g for g in groups if g[0]]
        if not groups:
            return
        if self.seqs:
            groups = [(self.seqs, self.cache, self.mask), *groups]
        width = max(mask.shape[1] for _, _, mask in groups)
        caches = [cache.layers for _, cache, _ in groups]
        pad = _left_pad if len(groups) > 1 else (lambda t, _: t)
        layers = [(torch.cat([pad(layers[i].keys, width) for layers in caches]),
                   torch.cat([pad(layers[i].values, width) for layers in caches]))
                  for i in range(len(caches[0]))]
        self.cache = _cache_from(layers)
        self.mask = torch.cat([pad(mask.unsqueeze(-1), width).squeeze(-1) for _, _, mask in groups])
        self.seqs = [seq for seqs, _, _ in groups for seq in seqs]

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
        first = self._first_real_column()
        self.mask = self.mask[:, first:]
        layers = [(layer.keys[index, :, first:], layer.values[index, :, first:]) for layer in self.cache.layers]
        self.cache = _cache_from(layers)

    def replace(self, row: int, seq, cache, mask) -> None:
        """Put `seq` in the place of the (finished) sequence of `row`, in place: its prefilled KV
        (`cache`, one row; `mask` [1, columns]) right-aligned in that row, the other rows untouched.
        Continuous batching without copying the whole cache at every join; a prompt longer than the
        batch's columns widens them first (a copy)."""
        width = mask.shape[1]
        if width > self.mask.shape[1]:
            self._reshape(slice(None), width - self.mask.shape[1])
        start = self.mask.shape[1] - width
        for layer, new in zip(self.cache.layers, cache.layers, strict=True):
            layer.keys[row, :, start:] = new.keys[0]
            layer.values[row, :, start:] = new.values[0]
        self.mask[row] = 0  # the old sequence's columns stay in the buffer, masked out
        self.mask[row, start:] = mask[0]
        self.seqs[row] = seq

    def trim(self, min_columns: int) -> None:
        """Drop the leading columns that are padding in every row once there are `min_columns` of them
        (rows refilled by `replace` leave such columns behind; dropping them is a copy, so not every step)."""
        first = self._first_real_column() if self.seqs else 0
        if first >= min_columns:
            self._reshape(slice(first, None), 0)

    def _first_real_column(self) -> int:
        return int(self.mask.any(dim=0).nonzero()[0].item())  # columns before this are padding everywhere

    def _reshape(self, columns: slice, pad: int) -> None:
        """Keep `columns` of every row, then add `pad` padding columns on the left."""
        self.mask = _left_pad(self.mask[:, columns].unsqueeze(-1), self.mask[:, columns].shape[1] + pad).squeeze(-1)
        width = self.mask.shape[1]
        self.cache = _cache_from([(_left_pad(layer.keys[:, :, columns], width),
                                   _left_pad(layer.values[:, :, columns], width)) for layer in self.cache.layers])

    def step_inputs(self):
        """input_ids, position_ids and attention mask for one decode step of every row."""
        import torch

        ids = torch.tensor([[s.pending if s is not None else 0] for s in self.seqs], dtype=torch.long)
        positions = torch.tensor([[s.length if s is not None else 0] for s in self.seqs], dtype=torch.long)
        mask = torch.cat([self.mask, torch.ones(len(self.seqs), 1, dtype=torch.long)], dim=1)
        return ids, positions, mask


_SPARE_COLUMNS = 32  # columns added at a time when a layer's buffer is full


def _growing_layer_class():
    from transformers.cache_utils import DynamicLayer

    class _GrowingLayer(DynamicLayer):
        """A DynamicLayer whose keys/values are views of buffers with spare columns, written in place."""

        def update(self, key_states, value_states, *args, **kwargs):

            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._used = 0
                self._kbuf = self._vbuf = None
            used, add = self._used, key_states.shape[-2]
            if self._kbuf is None or used + add > self._kbuf.shape[-2]:
                shape = (*key_states.shape[:2], used + add + _SPARE_COLUMNS, key_states.shape[-1])
                kbuf, vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
                if used:
                    kbuf[:, :, :used], vbuf[:, :, :used] = self.keys, self.values
                self._kbuf, self._vbuf = kbuf, vbuf
            self._kbuf[:, :, used:used + add] = key_states
            self._vbuf[:, :, used:used + add] = value_states
            self._used = used + add
            self.keys, self.values = self._kbuf[:, :, :self._used], self._vbuf[:, :, :self._used]
            return self.keys, self.values

    return _GrowingLayer


_LAYER_CLASS = None


class SequenceKV:
    """One sequence's KV while its prompt is prefilled over one or more steps: growing layers, empty or
    holding a cached prefix [(keys, values)] per layer."""

    def __init__(self, num_layers: int, prefix: list | None = None):
        cache = _cache_from(prefix) if prefix else None
        self.layers = cache.layers if cache is not None else [_layer_class()() for _ in range(num_layers)]


def _layer_class():
    global _LAYER_CLASS
    _LAYER_CLASS = _LAYER_CLASS or _growing_layer_class()
    return _LAYER_CLASS


def _cache_from(layers):
    """A DynamicCache holding these (keys, values) per layer, in growing layers."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layers = []
    for keys, values in layers:
        layer = _layer_class()()
        layer.update(keys, values)
        cache.layers.append(layer)
    return cache
