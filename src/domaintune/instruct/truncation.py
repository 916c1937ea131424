"""What to do with a conversation longer than `sft.max_len` tokens.

Policies (never a silent cut inside the final answer):
- drop: the example is quarantined with its length;
- history: the oldest exchanges are removed (system message kept) until it fits; if the last
  exchange alone is too long, the example is quarantined;
- answer: the final answer is cut at max_len, and every such cut is counted and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domaintune.instruct.masking import Encoded, encode_conversation


@dataclass
class Fitted:
    encoded: Encoded | None  # None: the example cannot be used (see reason)
    outcome: str  # "fits" | "history_trimmed" | "answer_cut" | "dropped"
    reason: str = ""


def _without_oldest_exchange(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Drop the first user turn and everything up to the next user turn (None: only one left)."""
    head = 1 if messages[0]["role"] == "system" else 0
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if len(users) < 2:
        return None
    return messages[:head] + messages[users[1]:]


def fit(tokenizer, conv: dict[str, Any], max_len: int, policy: str) -> Fitted:
    messages, tools = conv["messages"], conv.get("tools")
    enc = encode_conversation(tokenizer, messages, tools)
    if len(enc.input_ids) <= max_len:
        return Fitted(enc, "fits")
    too_long = f"{len(enc.input_ids)} tokens > sft.max_len {max_len}"
    if policy == "history":
        while len(enc.input_ids) > max_len:
            shorter = _without_oldest_exchange(messages)
            if shorter is None:
                return Fitted(None, "dropped", f"{too_long}, and the last exchange alone is still "
                                               f"{len(enc.input_ids)} tokens (raise sft.max_len or use "
                                               f"truncation: answer)")
            messages = shorter
            enc = encode_conversation(tokenizer, messages, tools)
        return Fitted(enc, "history_trimmed")
    if policy == "answer":
        final_start = _final_answer_start(enc)
        if final_start >= max_len:
            return Fitted(None, "dropped", f"{too_long}; the prompt before the final answer alone has "
                                           f"{final_start} tokens")
        return Fitted(Encoded(enc.input_ids[:max_len], enc.loss_mask[:max_len]), "answer_cut")
    return Fitted(None, "dropped", f"{too_long} (truncation: drop; use 'history' or 'answer' to keep such rows)")


def _final_answer_start(enc: Encoded) -> int:
    """Index of the first token of the last run of assistant tokens."""
    i = len(enc.loss_mask)
    while i > 0 and not enc.loss_mask[i - 1]:
        i -= 1
    while i > 0 and enc.loss_mask[i - 1]:
        i -= 1
    return i
