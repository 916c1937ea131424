"""`domaintune chat`: talk to a model folder with its own chat template."""

from __future__ import annotations

from pathlib import Path

from domaintune.console import console
from domaintune.errors import ModelError


def load_chat_model(model_dir: Path, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from domaintune.models import resolve_device

    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir} is not a model folder (no config.json); export one with "
                         f"`domaintune export CONFIG` or import one with `domaintune models import-gguf`")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    return model.to(resolve_device(device)).eval(), tokenizer


def chat_session(model_dir: Path, prompt: str | None, system: str | None, max_new_tokens: int,
                 temperature: float, device: str) -> None:
    from domaintune.generation import stream_reply

    model, tokenizer = load_chat_model(Path(model_dir), device)
    history = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        history.append({"role": "user", "content": prompt})
        for piece in stream_reply(model, tokenizer, history, max_new_tokens, temperature):
            console.print(piece, end="", markup=False)
        console.print()
        return
    console.print(f"chatting with {model_dir} — empty line or Ctrl-D to quit, /reset to clear history")
    while True:
        try:
            user = console.input("[bold]you>[/] ")
        except (EOFError, KeyboardInterrupt):
            break
        if not user.strip():
            break
        if user.strip() == "/reset":
            history = history[:1] if system else []
            continue
        history.append({"role": "user", "content": user})
        console.print("[bold green]model>[/] ", end="")
        reply = ""
        for piece in stream_reply(model, tokenizer, history, max_new_tokens, temperature):
            reply += piece
            console.print(piece, end="", markup=False)
        console.print()
        history.append({"role": "assistant", "content": reply.strip()})
