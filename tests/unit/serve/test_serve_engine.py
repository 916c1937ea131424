"""The CPU continuous-batching engine, driven directly (no HTTP)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from domaintune.serve.engine.base import GenRequest, QueueFull
from domaintune.serve.engine.hf import HFEngine, SchedulerLimits

TEXTS = ["The bank charges a fee", "Savings accounts earn interest monthly; term", "def main", "海港银行的跨境汇款",
         "A", "中国人民银行 发布 新年 讲话 经济", "term deposits pay", "fee of 15 dollars for international wire. The"]


def _prompts(tokenizer):
    return [tokenizer(t).input_ids for t in TEXTS]


def _sequential(model, tokenizer, prompt, n):
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None,
                         top_k=None)
    return out[0, len(prompt):].tolist()


async def _collect(engine, request, delay=0.0):
    await asyncio.sleep(delay)
    text, last = "", None
    async for event in engine.submit(request):
        text, last = text + event.text, event
    return text, last


def _engine(loaded, fused=True, **limits):
    """fused: decodes and prompt chunks in one ragged forward (the default for models on sdpa); False: the
    padded prefill + decode forwards kept for models that take no custom attention function."""
    model, tokenizer = loaded
    engine = HFEngine(model, tokenizer, "tiny", SchedulerLimits(**limits))
    assert engine.fused, "the tiny Llama runs on sdpa: the engine should fuse its steps"
    engine.fused = fused
    engine._eos = set()  # random weights may pick EOS early; these tests compare fixed-length outputs
    return engine


async def _run_all(engine, requests, stagger=0.005):
    """stagger 0: every request is queued before the engine starts, so they are admitted at once."""
    if stagger == 0.0:
        streams = [engine.submit(r) for r in requests]
        engine.start()
        try:
            return await asyncio.gather(*[_drain(s) for s in streams])
        finally:
            engine.stop()
    engine.start()
    try:
        return await asyncio.gather(*[_collect(engine, r, stagger * i) for i, r in enumerate(requests)])
    finally:
        engine.stop()


async def _drain(stream):
    text, last = "", None
    async for event in stream:
        text, last = text + event.text, event
    return text, last


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("stagger", [0.005, 0.0])  # joining a running batch one by one; all prefilled together
def test_greedy_outputs_of_8_concurrent_requests_equal_sequential_generate(loaded, stagger, fused):
    model, tokenizer = loaded
    n = 32
    reference = [tokenizer.decode(_sequential(model, tokenizer, p, n), skip_special_tokens=True)
                 for p in _prompts(tokenizer)]
    engine = _engine(loaded, fused=fused, max_running=8)
    requests = [GenRequest(f"r{i}", p, max_tokens=n, temperature=0.0) for i, p in enumerate(_prompts(tokenizer))]
    results = asyncio.run(_run_all(engine, requests, stagger))
    assert engine.stats().peak_running > 1, "the requests never shared a decode batch"
    if stagger == 0.0:
        assert engine.stats().peak_prefill > 1, "the prompts were never prefilled together"
    for (text, last), expected in zip(results, reference):
        assert text == expected
        assert (last.finish_reason, last.completion_tokens) == ("length", n)
    assert len(set(reference)) == len(reference)  # the model really continues each prompt differently


def test_a_finished_rows_slot_goes_to_the_next_prompt_in_place_and_tokens_stay_equal(loaded, monkeypatch):
    """3 slots, 8 requests of different lengths: a row that finishes while prompts wait is left as a masked
    hole and the next prefilled prompt is written into it (DecodeBatch.replace) instead of the cache being
    copied to drop the row and again to append the new one; every answer still equals sequential generate."""
    from domaintune.decode_batch import DecodeBatch

    model, tokenizer = loaded
    lengths = [5, 23, 9, 17, 4, 12, 20, 7]
    prompts = _prompts(tokenizer)
    reference = [tokenizer.decode(_sequential(model, tokenizer, p, n), skip_special_tokens=True)
                 for p, n in zip(prompts, lengths, strict=True)]
    replaced = []
    original = DecodeBatch.replace
    monkeypatch.setattr(DecodeBatch, "replace", lambda self, row, *a: (replaced.append(row), original(self, row, *a)))
    engine = _engine(loaded, max_running=3)
    requests = [GenRequest(f"r{i}", p, max_tokens=n, temperature=0.0)
                for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))]
    results = asyncio.run(_run_all(engine, requests, stagger=0.0))
    assert [text for text, _ in results] == reference
    assert [last.completion_tokens for _, last in results] == lengths
    assert len(replaced) >= 3, "no finished row's slot was reused in place"
    assert engine.stats().running == 0 and len(engine._batch) == 0  # holes are dropped once nothing waits


@pytest.mark.parametrize("cap", [1, 0])
def test_prompts_arriving_together_start_one_per_step_while_others_decode(loaded, cap):
    """serve.prefill_prompts_per_step: 4 prompts that arrive together while a row decodes start in 4
    consecutive steps (cap 1), or all in one step (cap 0); the answers are the same either way."""
    model, tokenizer = loaded
    prompts = _prompts(tokenizer)
    reference = [tokenizer.decode(_sequential(model, tokenizer, p, 8), skip_special_tokens=True)
                 for p in prompts[1:5]]
    engine = _engine(loaded, max_running=8, prefill_prompts_per_step=cap)

    async def scenario():
        engine.start()
        try:
            events = aiter(engine.submit(GenRequest("long", prompts[0], max_tokens=40, temperature=0.0)))
            await anext(events)  # the long row is decoding now
            together = [engine.submit(GenRequest(f"t{i}", p, max_tokens=8, temperature=0.0))
                        for i, p in enumerate(prompts[1:5])]
            results = await asyncio.gather(*[_drain(s) for s in together])
            async for _ in events:
                pass
            return results
        finally:
            engine.stop()

    results = asyncio.run(scenario())
    assert [text for text, _ in results] == reference
    assert engine.stats().peak_prefill == (1 if cap == 1 else 4)


def test_a_seeded_sampled_request_draws_the_same_tokens_alone_and_in_a_batch(loaded):
    _, tokenizer = loaded
    prompts = _prompts(tokenizer)
    sampled = GenRequest("s", prompts[0], max_tokens=24, temperature=0.9, top_p=0.9, seed=1234)
    alone = asyncio.run(_run_all(_engine(loaded), [sampled]))[0][0]
    others = [GenRequest(f"o{i}", p, max_tokens=24, temperature=1.0) for i, p in enumerate(prompts[1:5])]
    batched = asyncio.run(_run_all(_engine(loaded), [*others, sampled]))[-1][0]
    assert alone == batched
    reseeded = GenRequest("t", prompts[0], max_tokens=24, temperature=0.9, top_p=0.9, seed=99)
    assert asyncio.run(_run_all(_engine(loaded), [reseeded]))[0][0] != alone


@pytest.mark.parametrize("fused", [True, False])
def test_chunked_prefill_gives_the_same_tokens_as_one_prefill(loaded, fused):
    model, tokenizer = loaded
    long_prompt = tokenizer(" ".join(TEXTS * 2)).input_ids
    assert len(long_prompt) > 40
    request = GenRequest("long", long_prompt, max_tokens=16, temperature=0.0)
    whole = asyncio.run(_run_all(_engine(loaded, fused=fused, prefill_chunk_tokens=4096), [request]))[0][0]
    chunked = asyncio.run(_run_all(_engine(loaded, fused=fused, prefill_chunk_tokens=16), [request]))[0][0]
    alone = tokenizer.decode(_sequential(model, tokenizer, long_prompt, 16), skip_special_tokens=True)
    assert chunked == whole == alone


def test_a_long_prompt_is_prefilled_in_chunks_while_the_running_rows_keep_decoding(loaded):
    """Fused steps: a 16-token budget splits the long prompt over several steps, each also decoding the rows
    already running, and every answer still equals sequential generate."""
    model, tokenizer = loaded
    long_prompt = tokenizer(" ".join(TEXTS * 2)).input_ids
    short = _prompts(tokenizer)[:3]
    n = 16
    reference = [tokenizer.decode(_sequential(model, tokenizer, p, n), skip_special_tokens=True)
                 for p in [*short, long_prompt]]
    forwards = {}
    for fused in (True, False):
        engine = _engine(loaded, fused=fused, prefill_chunk_tokens=16)
        requests = [GenRequest(f"s{i}", p, n, temperature=0.0) for i, p in enumerate(short)]
        requests.append(GenRequest("long", long_prompt, n, temperature=0.0))
        calls: list[int] = []
        hook = model.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        try:
            results = asyncio.run(_run_all(engine, requests, stagger=0.0))
        finally:
            hook.remove()
        assert [text for text, _ in results] == reference
        forwards[fused] = len(calls)
    # fused, the long prompt's chunks ride along with the short rows' decode steps instead of adding forwards
    assert forwards[True] < forwards[False]


def test_installing_the_ragged_attention_leaves_other_forwards_of_the_model_unchanged(loaded):
    model, tokenizer = loaded
    prompt = _prompts(tokenizer)[1]
    _engine(loaded)  # installs it (idempotent)
    ids = torch.tensor([prompt, prompt[::-1]])
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a padded row: transformers builds its own mask, the ragged function falls back to sdpa
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).logits
        impl = model.config._attn_implementation
        model.set_attn_implementation("sdpa")
        try:
            before = model(input_ids=ids, attention_mask=mask).logits
        finally:
            model.set_attn_implementation(impl)
    assert torch.equal(after, before)


def test_stop_string_ends_the_sequence_with_stop_and_excludes_the_stop_text(loaded):
    _, tokenizer = loaded
    prompt = _prompts(tokenizer)[0]
    full, _ = asyncio.run(_run_all(_engine(loaded), [GenRequest("a", prompt, max_tokens=32, temperature=0.0)]))[0]
    stop = full[5:8]
    assert stop.strip() and full.find(stop) == 5
    text, last = asyncio.run(_run_all(_engine(loaded), [GenRequest("b", prompt, max_tokens=32, temperature=0.0,
                                                                  stop=[stop])]))[0]
    assert (text, last.finish_reason) == (full[:5], "stop")
    assert last.completion_tokens < 32


def test_eos_finishes_with_stop(loaded):
    model, tokenizer = loaded
    engine = HFEngine(model, tokenizer, "tiny", SchedulerLimits())
    first = _sequential(model, tokenizer, _prompts(tokenizer)[2], 1)[0]
    engine._eos = {first}  # make the model's first greedy token the end-of-sequence token
    text, last = asyncio.run(_run_all(engine, [GenRequest("e", _prompts(tokenizer)[2], 10, temperature=0.0)]))[0]
    assert (text, last.finish_reason, last.completion_tokens) == ("", "stop", 1)


def test_a_full_queue_refuses_at_once_and_a_cancelled_request_frees_its_place(loaded):
    _, tokenizer = loaded
    engine = _engine(loaded, max_running=1, max_waiting=1)  # not started: nothing leaves the queue

    async def scenario():
        first = engine.submit(GenRequest("1", _prompts(tokenizer)[0], 4))
        engine.submit(GenRequest("2", _prompts(tokenizer)[1], 4))
        with pytest.raises(QueueFull):
            engine.submit(GenRequest("3", _prompts(tokenizer)[2], 4))
        first.cancel()
        engine._drop_cancelled()
        engine.submit(GenRequest("4", _prompts(tokenizer)[3], 4))  # room again

    asyncio.run(scenario())


def test_a_model_error_fails_the_running_sequences_and_the_engine_keeps_serving(loaded):
    model, tokenizer = loaded
    calls = {"n": 0}

    class FlakyModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.config = model, model.config

        def forward(self, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("simulated kernel failure")
            return self.inner(**kwargs)

    from domaintune.serve.engine.base import EngineFailed

    engine = HFEngine(FlakyModel(), tokenizer, "tiny", SchedulerLimits())

    async def scenario():
        engine.start()
        try:
            with pytest.raises(EngineFailed, match="simulated kernel failure"):
                await _collect(engine, GenRequest("x", _prompts(tokenizer)[0], 8, temperature=0.0))
            return await _collect(engine, GenRequest("y", _prompts(tokenizer)[0], 8, temperature=0.0))
        finally:
            engine.stop()

    _, last = asyncio.run(scenario())
    assert last.finish_reason in ("stop", "length") and engine.stats().running == 0


def test_models_with_sliding_window_caches_are_refused_not_served_wrongly(loaded):
    from transformers import MistralConfig, MistralForCausalLM

    from domaintune.errors import ModelError

    config = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, sliding_window=8)
    with pytest.raises(ModelError, match="serve.engine: vllm"):
        HFEngine(MistralForCausalLM(config), loaded[1], "m", SchedulerLimits())


@pytest.mark.parametrize("fused", [True, False])
def test_a_prompt_starting_like_a_recent_one_reuses_its_kv_and_gives_the_same_tokens(loaded, fused):
    model, tokenizer = loaded
    shared = tokenizer(" ".join(TEXTS[:4])).input_ids  # a "system turn" every prompt starts with
    assert len(shared) >= 16
    prompts = [shared + tokenizer(t).input_ids for t in TEXTS[4:]]
    n = 16
    reference = [tokenizer.decode(_sequential(model, tokenizer, p, n), skip_special_tokens=True) for p in prompts]
    engine = _engine(loaded, fused=fused, max_running=8, prefix_cache_bytes=64 << 20)

    async def scenario():
        engine.start()
        try:
            first = [await _collect(engine, GenRequest("p0", prompts[0], n, temperature=0.0))]
            rest = await asyncio.gather(*[_collect(engine, GenRequest(f"p{i}", p, n, temperature=0.0), 0.005 * i)
                                          for i, p in enumerate(prompts[1:], 1)])
            hits_before = engine.stats().prefix_hit_tokens
            other = await _collect(engine, GenRequest("t", prompts[1], n, temperature=0.0, tenant="other"))
            return first + rest, hits_before, other
        finally:
            engine.stop()

    results, hits, (other_text, _) = asyncio.run(scenario())
    assert [text for text, _ in results] == reference
    assert hits >= len(shared) * (len(prompts) - 1), "the later prompts did not reuse the shared prefix"
    # a tenant never reuses another tenant's KV (no timing side channel), and still gets the same answer
    assert engine.stats().prefix_hit_tokens == hits
    assert other_text == reference[1]
    assert engine.stats().prefix_lookup_tokens == sum(map(len, prompts)) + len(prompts[1])


def test_the_prefix_cache_evicts_least_recently_used_prompts_within_its_byte_budget():
    from domaintune.serve.engine.prefix_cache import PrefixCache

    def kv(n):  # one layer, one row: [1, kv_heads=2, n, head_dim=4] float32 -> 64 bytes a token (k + v)
        return [(torch.zeros(1, 2, n, 4), torch.zeros(1, 2, n, 4))]

    cache = PrefixCache(max_bytes=64 * 50, min_tokens=4)
    a, b, c = list(range(20)), list(range(100, 120)), list(range(200, 220))
    cache.store("t", a, kv(20))
    cache.store("t", b, kv(20))
    assert cache.lookup("t", a + [7])[0] == 20   # a is now the most recently used
    cache.store("t", c, kv(20))                  # 60 tokens > 50: b, the least recently used, goes
    assert cache.lookup("t", b + [7]) == (0, None)
    assert cache.lookup("t", a[:10] + [999])[0] == 10 and cache.nbytes == 64 * 40
    assert cache.lookup("t", a)[0] == 19        # never the whole prompt: its last token must run
    assert cache.lookup("u", a + [7]) == (0, None)
    assert cache.lookup("t", a[:3] + [5, 5]) == (0, None)  # shorter than min_tokens


@pytest.mark.parametrize("fused", [True, False])
def test_prompts_with_cached_prefixes_arriving_together_are_prefilled_in_one_forward_with_the_same_tokens(loaded,
                                                                                                          fused):
    model, tokenizer = loaded
    shared = tokenizer(" ".join(TEXTS[:4])).input_ids
    # rests of different lengths: the shorter rows recompute part of their cached prefix instead of holding holes
    prompts = [shared + tokenizer(t).input_ids for t in ["A", *TEXTS[4:]]]
    n = 12
    reference = [tokenizer.decode(_sequential(model, tokenizer, p, n), skip_special_tokens=True) for p in prompts]
    engine = _engine(loaded, fused=fused, max_running=8, prefix_cache_bytes=64 << 20)
    warm = asyncio.run(_run_all(engine, [GenRequest("w", prompts[0], n, temperature=0.0)]))
    assert warm[0][0] == reference[0]
    requests = [GenRequest(f"g{i}", p, n, temperature=0.0) for i, p in enumerate(prompts[1:], 1)]
    results = asyncio.run(_run_all(engine, requests, stagger=0.0))  # queued first: admitted in one iteration
    assert engine.stats().peak_prefill == len(requests)
    assert engine.stats().prefix_hit_tokens >= len(shared) * len(requests)
    assert [text for text, _ in results] == reference[1:]
