"""Teachers: the OpenAI-compatible client against a real loopback server (chat, completions,
429/500 retries, timeouts, 4xx refused), and MAGPIE's pre-query prefix derived from the template."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from domaintune.errors import ConfigError, ModelError
from domaintune.synth.journal import Unit
from domaintune.synth.teachers import EndpointTeacher, LocalTeacher

SAMPLING = SimpleNamespace(temperature=0.0, top_p=1.0, max_new_tokens=8)
SMOL_TEMPLATE = (  # SmolLM2's shape: a default system turn when the messages bring none
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3_TEMPLATE = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                   "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}")


class _Handler(BaseHTTPRequestHandler):
    script: list[int] = []
    seen: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, body))
        status = type(self).script.pop(0) if type(self).script else 200
        if status == 200 and self.path.endswith("/chat/completions"):
            out = {"choices": [{"message": {"content": " chat:" + body["messages"][-1]["content"]}}],
                   "usage": {"completion_tokens": 3}}
        elif status == 200:
            out = {"choices": [{"text": "raw:" + body["prompt"]}], "usage": {"completion_tokens": 2}}
        else:
            out = {"error": {"message": "busy"}}
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.script, _Handler.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_endpoint_chat_and_completions_with_retries(server):
    _Handler.script = [429, 500]  # two failures, then success
    t = EndpointTeacher(server, "demo", max_retries=3, api_key="sk-test")
    out = t.generate([Unit("a", [{"role": "user", "content": "hi"}]), Unit("b", "<|im_start|>user\n", raw=True)],
                     7, SAMPLING)
    assert out == [{"text": "chat:hi", "new_tokens": 3}, {"text": "raw:<|im_start|>user", "new_tokens": 2}]
    paths = [p for p, _ in _Handler.seen]
    assert paths == ["/v1/chat/completions"] * 3 + ["/v1/completions"]
    assert _Handler.seen[0][1]["max_tokens"] == 8 and _Handler.seen[-1][1]["seed"] == 8


def test_endpoint_gives_up_with_a_clear_error_and_does_not_retry_4xx(server):
    _Handler.script = [500] * 5
    with pytest.raises(ModelError, match="failed after 2 attempts.*HTTP 500"):
        EndpointTeacher(server, "demo", max_retries=1).generate([Unit("a", [{"role": "user", "content": "x"}])],
                                                                 0, SAMPLING)
    _Handler.script, _Handler.seen = [400], []
    with pytest.raises(ModelError, match="refused the request.*HTTP 400"):
        EndpointTeacher(server, "demo").generate([Unit("a", [{"role": "user", "content": "x"}])], 0, SAMPLING)
    assert len(_Handler.seen) == 1


def test_endpoint_timeout_is_retried_then_reported():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)  # accepts the connection, never answers
    try:
        t = EndpointTeacher(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", "demo", timeout_s=0.2, max_retries=1)
        with pytest.raises(ModelError, match="ReadTimeout"):
            t.generate([Unit("a", [{"role": "user", "content": "x"}])], 0, SAMPLING)
    finally:
        sock.close()


def test_magpie_is_refused_on_a_chat_only_endpoint(server):
    with pytest.raises(ConfigError, match="chat-only"):
        EndpointTeacher(server, "demo", completions=False).generate([Unit("a", "prefix", raw=True)], 0, SAMPLING)
    with pytest.raises(ConfigError, match="applies the chat template on the server"):
        EndpointTeacher(server, "demo").pre_query_prefix(None)


def _teacher(template: str | None):
    from fixtures.tiny_model import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = template
    return LocalTeacher.__new__(LocalTeacher), tok


@pytest.mark.parametrize(("template", "system", "expected"), [
    (SMOL_TEMPLATE, None, "<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n<|im_start|>user\n"),
    (SMOL_TEMPLATE, "You answer questions about Harborview Bank.",
     "<|im_start|>system\nYou answer questions about Harborview Bank.<|im_end|>\n<|im_start|>user\n"),
    (LLAMA3_TEMPLATE, None, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"),
])
def test_pre_query_prefix_comes_from_the_chat_template(template, system, expected):
    teacher, tok = _teacher(template)
    teacher.tokenizer = tok
    assert teacher.pre_query_prefix(system) == expected


def test_pre_query_prefix_needs_a_chat_template():
    teacher, tok = _teacher(None)
    teacher.tokenizer = tok
    with pytest.raises(ConfigError, match="no chat template"):
        teacher.pre_query_prefix(None)


# --------------------------------------------------------------------------- local batched generation
@pytest.mark.parametrize(("temperature", "top_p"), [(0.8, 0.95), (1.0, 0.5), (0.7, 0.999)])
def test_nucleus_sampler_keeps_exactly_what_transformers_top_p_keeps(temperature, top_p):
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    from domaintune.synth.teachers import NucleusSampler

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 3000, generator=g) * 4
    scores[2] = torch.randn(3000, generator=g) * 0.01  # nearly flat: the nucleus is wider than the candidates
    ref = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
    ours = NucleusSampler(temperature, top_p, candidates=64)(None, scores.clone())
    assert torch.equal(torch.isinf(ref), torch.isinf(ours))
    kept = ~torch.isinf(ref)
    assert torch.allclose(ref[kept], ours[kept]) and int(kept[2].sum()) > 64


def _units(tok) -> list[Unit]:
    # different lengths, one shared instruction prefix (as doc_qa's prompts have)
    chunks = ["Wire fees are 35 dollars.", "A Standard account costs 5 a month and pays 0.5% on savings above 1000.",
              "Cards", "Premier customers pay no fee for domestic wires and get free cheques."]
    return [Unit(f"u{i}", [{"role": "user", "content": f"Read the text and ask one question.\n\nText:\n{c}"}])
            for i, c in enumerate(chunks)]


def _doc_units() -> list[Unit]:
    """doc_qa's shape: each chunk's question and answer prompts start with the chunk (their context)."""
    chunks = ["Wire fees are 35 dollars.", "A Standard account costs 5 a month and pays 0.5% on savings above 1000.",
              "Cards", "Premier customers pay no fee for domestic wires and get free cheques."]
    units = []
    for i, c in enumerate(chunks):
        for j, tail in enumerate(["Ask one question.", "Answer: what is the fee?"]):
            content = f"Text:\n{c}\n\n{tail}"
            units.append(Unit(f"u{i}-{j}", [{"role": "user", "content": content}], context=f"Text:\n{c}"))
    return units


def _lively(teacher) -> LocalTeacher:
    """Larger random weights: the tiny model's own initialisation repeats one token whatever the
    prompt, which would hide a wrong KV cache; with these its greedy output depends on the prompt."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in teacher.model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 2 * p.shape[-1] ** -0.5)
    return teacher


def _greedy_alone(teacher, unit: Unit, max_new: int) -> list[int]:
    """`model.generate` on one prompt (stop tokens from the generation config), new tokens before the stop."""
    import torch

    tok, stops = teacher.tokenizer, teacher._stop_ids()
    ids = tok(teacher.render(unit), add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = teacher.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=max_new, do_sample=False, eos_token_id=sorted(stops),
                                     pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
    new = out[0, len(ids):].tolist()
    return new[: min([new.index(s) for s in stops if s in new] + [len(new)])]


def _stop_token_ending_rows_at_different_steps(teacher, units: list[Unit]) -> int:
    """A token of the greedy outputs that, as the stop token, ends rows at several different steps."""
    outs = [_greedy_alone(teacher, u, 12) for u in units]
    for token in sorted({t for row in outs for t in row}):
        if len({row.index(token) if token in row else len(row) for row in outs}) > 2:
            return token
    raise AssertionError("no token of the outputs ends rows at different steps")


@pytest.mark.parametrize("batch_size", [16, 3, 1])
@pytest.mark.parametrize("doc_shaped", [False, True])
def test_local_teacher_batch_equals_one_prompt_at_a_time_generate(tiny_model_dir, batch_size, doc_shaped):
    """Greedy: the batched path (per-row prefill in segments, shared header and contexts computed
    once, rows leaving as they stop and their slots refilled in place) gives what `model.generate`
    gives each prompt alone."""
    teacher = _lively(LocalTeacher.load(str(tiny_model_dir), threads=1, batch_size=batch_size))
    units = _doc_units() if doc_shaped else _units(teacher.tokenizer)
    greedy = SimpleNamespace(temperature=0.0, top_p=1.0, max_new_tokens=12)
    teacher.model.generation_config.eos_token_id = _stop_token_ending_rows_at_different_steps(teacher, units)
    assert len({len(teacher._plan(u)[0]) for u in units}) > 1  # rows of different lengths: padding in the cache
    expected = [_greedy_alone(teacher, u, 12) for u in units]
    assert len({len(e) for e in expected}) > 2 and len({tuple(e) for e in expected}) == len(units)
    got = teacher.generate(units, 0, greedy)
    tok = teacher.tokenizer
    assert got == [{"text": tok.decode(e, skip_special_tokens=True).strip(), "new_tokens": len(e)} for e in expected]
    if doc_shaped:  # every answer prompt found its chunk computed by the question prompt
        assert teacher.contexts.hit_tokens >= sum(teacher._plan(u)[1][-1] for u in units[1::2])


def test_local_teacher_output_does_not_depend_on_what_the_context_cache_holds(tiny_model_dir):
    """A resumed run starts with an empty context cache: its bytes must equal those of a run whose
    cache was filled by earlier batches."""
    units = _doc_units()
    sampling = SimpleNamespace(temperature=0.8, top_p=0.95, max_new_tokens=10)
    warm = _lively(LocalTeacher.load(str(tiny_model_dir), threads=1, batch_size=3))
    warm.generate(units[::2], 5, sampling)  # the question prompts: their chunks' KV now cached
    hits = warm.contexts.hit_tokens
    second = warm.generate(units[1::2], 6, sampling)
    assert warm.contexts.hit_tokens > hits
    cold = _lively(LocalTeacher.load(str(tiny_model_dir), threads=1, batch_size=3))
    assert cold.generate(units[1::2], 6, sampling) == second


def test_context_cache_evicts_least_recently_used_past_its_budget():
    import torch

    from domaintune.synth.teachers import ContextCache

    layer = [(torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8))]  # 256 bytes
    cache = ContextCache(max_bytes=600)
    cache.put("a", layer, None)
    cache.put("b", layer, None)
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", layer, None)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.nbytes == 512
    ContextCache(max_bytes=100).put("big", layer, None)  # larger than the budget: not kept, no error


def test_local_teacher_sampling_is_reproducible_per_seed(tiny_model_dir):
    teacher = LocalTeacher.load(str(tiny_model_dir), threads=1)
    units = _units(teacher.tokenizer)
    sampling = SimpleNamespace(temperature=0.8, top_p=0.95, max_new_tokens=10)
    first = teacher.generate(units, 123, sampling)
    assert teacher.generate(units, 123, sampling) == first  # a resumed batch regenerates the same bytes
    assert teacher.generate(units, 124, sampling) != first
    assert all(r["new_tokens"] <= 10 for r in first)
