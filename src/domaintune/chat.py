"""`domaintune chat`: talk to a model folder with its own chat template."""

from __future__ import annotations

from pathlib import Path

from domaintune.console import console


def load_chat_model(model_dir: Path, device: str):
    """A merged or adapter-only export, a stage's model folder or an imported GGUF folder, with the
    tokenizer and chat template saved with it (an adapter is loaded onto the base it records)."""
    from domaintune.models import load_trained, resolve_device

    trained = load_trained(Path(model_dir), device=resolve_device(device))
    return trained.model.eval(), trained.tokenizer, trained.meta


def chat_session(model_dir: Path, prompt: str | None, system: str | None, max_new_tokens: int,
                 temperature: float, device: str) -> None:
    from domaintune.generation import stream_reply

    model, tokenizer, meta = load_chat_model(Path(model_dir), device)
    history = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        history.append({"role": "user", "content": prompt})
        for piece in stream_reply(model, tokenizer, history, max_new_tokens, temperature):
            console.print(piece, end="", markup=False)
        console.print()
        return
    console.print(f"chatting with {model_dir} ({meta.describe()}) — empty line or Ctrl-D to quit, "
                  f"/reset to clear history", markup=False)
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
