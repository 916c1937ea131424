"""Preference pairs: read, validate and convert to trl's conversational format.

Accepted rows (JSONL, one object per line):

* ``{"prompt": "...", "chosen": "...", "rejected": "..."}`` (optional ``"system"``): one user
  turn and two candidate answers.
* ``{"prompt": [messages], "chosen": [messages], "rejected": [messages]}``: explicit prompt turns
  and the assistant turn(s) of each answer.
* ``{"chosen": [messages], "rejected": [messages]}``: two whole conversations that share every
  turn except the final assistant answer(s); the shared prefix becomes the prompt.

Every pair becomes ``{"prompt": [...], "chosen": [...], "rejected": [...]}`` message lists, on
which trl applies the tokenizer's own chat template. Malformed rows are not dropped silently:
each goes to the quarantine with its file, line and the reason.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domaintune.artifacts import atomic_write_text
from domaintune.errors import DataError

ROLES = ("system", "user", "assistant")


class PairError(ValueError):
    """Why one row cannot be used (the message goes to the quarantine)."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    source: str = ""
    line: int = 0

    def as_trl(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}

    def as_text(self) -> dict[str, str]:
        """Plain strings, for a tokenizer without a chat template."""
        def join(msgs):
            return "\n".join(m["content"] for m in msgs)

        return {"prompt": join(self.prompt) + "\n", "chosen": join(self.chosen), "rejected": join(self.rejected)}


@dataclass
class Quarantined:
    source: str
    line: int
    reason: str
    row: str


@dataclass
class ReadResult:
    pairs: list[PreferencePair] = field(default_factory=list)
    rejects: list[Quarantined] = field(default_factory=list)


# --------------------------------------------------------------------------- validation
def _messages(value: Any, key: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise PairError(f"'{key}' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise PairError(f"{key}[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise PairError(f"{key}[{i}].role '{m['role']}' is not one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise PairError(f"{key}[{i}] ({m['role']}) has an empty turn")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _text(row: dict[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise PairError(f"'{key}' must be a string or a list of messages, got {type(value).__name__}")
    if not value.strip():
        raise PairError(f"'{key}' is empty")
    return value


def check_prompt_order(prompt: list[dict[str, str]]) -> None:
    """system (optional, first only), then user/assistant alternating, ending with a user turn."""
    turns = prompt[1:] if prompt[0]["role"] == "system" else prompt
    if not turns:
        raise PairError("the prompt has only a system message; it needs a user turn")
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise PairError(f"role order: prompt turn {i + 1} is '{m['role']}', expected '{expected}' "
                            f"(system first, then user/assistant alternating)")
    if turns[-1]["role"] != "user":
        raise PairError("role order: the prompt must end with a user turn")


def _check_answer(msgs: list[dict[str, str]], key: str) -> None:
    if [m["role"] for m in msgs] != ["assistant"] * len(msgs):
        raise PairError(f"'{key}' must contain only assistant turns after the prompt "
                        f"(got roles {[m['role'] for m in msgs]})")


def _split_conversations(chosen, rejected):
    """Two whole conversations -> (shared prompt, chosen answer, rejected answer)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1]["role"] == "assistant":
        n -= 1  # identical final answers still belong to the answers, not the prompt
    if n == 0:
        raise PairError("'chosen' and 'rejected' conversations share no prompt (they must start with the "
                        "same turns and differ only in the final assistant answer)")
    return chosen[:n], chosen[n:], rejected[n:]


def parse_pair(row: Any) -> PreferencePair:
    """One JSON row -> a validated pair; raises PairError with the reason."""
    if not isinstance(row, dict):
        raise PairError(f"a row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        raise PairError(f"missing field(s) {', '.join(missing)} (need prompt/chosen/rejected)")
    if isinstance(row["chosen"], list) or isinstance(row["rejected"], list):
        chosen, rejected = _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
        if "prompt" in row:
            prompt = _messages(row["prompt"], "prompt")
        else:
            prompt, chosen, rejected = _split_conversations(chosen, rejected)
    else:
        if "prompt" not in row:
            raise PairError("missing field prompt (string answers need a string prompt)")
        prompt = [{"role": "user", "content": _text(row, "prompt")}]
        if isinstance(row.get("system"), str) and row["system"].strip():
            prompt.insert(0, {"role": "system", "content": row["system"]})
        chosen = [{"role": "assistant", "content": _text(row, "chosen")}]
        rejected = [{"role": "assistant", "content": _text(row, "rejected")}]
    check_prompt_order(prompt)
    _check_answer(chosen, "chosen")
    _check_answer(rejected, "rejected")
    return PreferencePair(prompt, chosen, rejected)


# --------------------------------------------------------------------------- files
def read_pairs(paths: list[str | Path]) -> ReadResult:
    """Read every JSONL file; valid pairs in order, malformed rows quarantined with their reason."""
    result = ReadResult()
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"preference file not found: {path} (check align.data paths; relative paths "
                            f"resolve against the config file's folder)")
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    pair = parse_pair(json.loads(line))
                except json.JSONDecodeError as exc:
                    result.rejects.append(Quarantined(str(path), lineno, f"invalid JSON: {exc.msg}", line.rstrip()))
                except PairError as exc:
                    result.rejects.append(Quarantined(str(path), lineno, str(exc), line.rstrip()))
                else:
                    result.pairs.append(PreferencePair(pair.prompt, pair.chosen, pair.rejected, str(path), lineno))
    return result


def write_rejects(path: Path, rejects: list[Quarantined]) -> Path:
    lines = [json.dumps({"source": r.source, "line": r.line, "reason": r.reason, "row": r.row}, ensure_ascii=False)
             for r in rejects]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return path


def check_reject_share(result: ReadResult, limit: float, what: str, rejects_path: Path) -> None:
    total = len(result.pairs) + len(result.rejects)
    if total == 0:
        raise DataError(f"{what}: no preference rows found")
    share = len(result.rejects) / total
    if share > limit:
        first = result.rejects[0]
        raise DataError(f"{what}: {len(result.rejects)} of {total} rows are malformed ({share:.0%} > "
                        f"align.data.max_reject_fraction={limit:g}); e.g. {first.source}:{first.line}: "
                        f"{first.reason}. All reasons are in {rejects_path}")
    if not result.pairs:
        raise DataError(f"{what}: no valid preference pairs (reasons in {rejects_path})")


def split_pairs(pairs: list[PreferencePair], val_fraction: float, seed: int
                ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Deterministic train/held-out split; at least one pair on each side when there are two or more."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = round(len(pairs) * val_fraction)
    if val_fraction > 0 and len(pairs) >= 2:
        n_val = min(max(n_val, 1), len(pairs) - 1)
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [pairs[i] for i in train], [pairs[i] for i in val]


def to_dataset_rows(pairs: list[PreferencePair], conversational: bool) -> list[dict[str, Any]]:
    return [p.as_trl() if conversational else p.as_text() for p in pairs]
