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
