"""An Ollama Modelfile for an exported GGUF: FROM, TEMPLATE, SYSTEM, stop tokens, num_ctx.

The TEMPLATE is chosen by the family of the model's own chat template (ChatML, Llama-3, Gemma;
modelfile_families.yaml) and checked by rendering fixed conversations through it (gotemplate.py,
Ollama's semantics: SYSTEM goes first when a conversation has none) and through
`apply_chat_template`: the texts must be equal, or the export fails. A BOS token the Jinja template
writes itself is left to the runtime (the GGUF's tokenizer.ggml.add_bos_token), so it is not part of
the compared text.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from domaintune.errors import ModelError
from domaintune.export import gotemplate

SENTINEL = "\u27e6user message\u27e7"
CONVERSATIONS = (
    [{"role": "user", "content": "What is the wire fee?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "海港银行的利率是多少？"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Explain term deposits.\nTwo lines."}],
)


@cache
def families() -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).with_name("modelfile_families.yaml")).read_text(encoding="utf-8"))


def detect_family(chat_template: str | None) -> str:
    if not chat_template:
        raise ModelError("export.modelfile: the model has no chat template to turn into an Ollama TEMPLATE; "
                         "train with sft.template or save one with the tokenizer")
    for name, fam in families().items():
        if fam["marker"] in chat_template:
            return name
    raise ModelError(f"export.modelfile: the chat template belongs to none of the supported families "
                     f"({', '.join(families())}); set export.modelfile: false or use one of them (sft.template)")


def default_system(tokenizer, family: str) -> str | None:
    """The system prompt the Jinja template injects into a conversation that has none (SmolLM2 does)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                         add_generation_prompt=True)
    pattern = families()[family]["system"].replace("SENTINEL", re.escape(SENTINEL))
    m = re.search(pattern, text, re.S)
    return m.group(1) if m else None


def _ollama_messages(conversation: list[dict], system: str | None) -> list[dict]:
    msgs = list(conversation)
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs = [{"role": "system", "content": system}, *msgs]
    return msgs


def hf_render(tokenizer, messages: list[dict]) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and "bos_token" in (tokenizer.chat_template or "") and text.startswith(bos):
        text = text[len(bos):]
    return text


def ollama_render(template: str, messages: list[dict]) -> str:
    return gotemplate.render(template, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]})


def render_differences(tokenizer, template: str, system: str | None) -> list[dict]:
    """For each fixed conversation whose two renders differ: both texts (empty: all equal)."""
    out = []
    for conv in CONVERSATIONS:
        msgs = _ollama_messages(conv, system)
        ours, theirs = ollama_render(template, msgs), hf_render(tokenizer, msgs)
        if ours != theirs:
            out.append({"messages": msgs, "modelfile": ours, "chat_template": theirs})
    return out


def _quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise ModelError(f'export.modelfile: the {what} contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def build(gguf_name: str, tokenizer, context_length: int, system: str | None = None) -> tuple[str, dict]:
    """(Modelfile text, facts for the report) for `gguf_name` next to it."""
    family = detect_family(tokenizer.chat_template)
    fam = families()[family]
    system = system if system is not None else default_system(tokenizer, family)
    stops = list(dict.fromkeys([*fam["stop"], *([tokenizer.eos_token] if tokenizer.eos_token else [])]))
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(fam['template'], 'template')}"]
    if system:
        lines.append(f"SYSTEM {_quoted(system, 'system message')}")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines.append(f"PARAMETER num_ctx {context_length}")
    diffs = render_differences(tokenizer, fam["template"], system)
    info = {"family": family, "system": system, "stop": stops, "num_ctx": context_length,
            "render_checked": len(CONVERSATIONS), "render_equal": not diffs, "differences": diffs}
    return "\n".join(lines) + "\n", info
