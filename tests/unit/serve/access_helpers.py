"""Governed servers for the access tests: keys, limits, rules and review configured on a tmp folder."""

from __future__ import annotations

import base64
import os
from pathlib import Path

RULES = """
rules:
  - name: no-weapons
    keywords: [explosive]
    action: refuse
    message: I cannot help with that.
  - name: opening-hours
    regex: ['opening\\s+hours']
    action: answer
    message: We are open 9:00-17:00.
  - name: be-formal
    keywords: [fee]
    action: instruct
    message: Answer formally.
  - name: pii-out
    stage: output
    pii: [EMAIL]
    action: review
    review: deliver
  - name: hold-loans
    keywords: [loan]
    action: review
    review: hold
"""


def governed(tmp_path: Path, rules: str | None = RULES, **extra) -> dict:
    """serve settings with every access backend this branch has: auth, limits, rules + review."""
    settings = {"auth": {"db": str(tmp_path / "keys.db"), "secret_file": str(tmp_path / "server.secret")}}
    if rules is not None:  # the review queue seals its text: it needs the keyring
        (tmp_path / "rules.yaml").write_text(rules, encoding="utf-8")
        settings["rules"] = {"file": str(tmp_path / "rules.yaml"), "review_db": str(tmp_path / "review.db")}
        settings["encryption"] = {"keyring_file": str(write_keyring(tmp_path / "keyring")),
                                  "user_keys_db": str(tmp_path / "user-keys.sqlite")}
    settings.update(extra)
    return settings


def write_keyring(path: Path, kid: str = "k1") -> Path:
    path.write_text(f"{kid} {base64.b64encode(os.urandom(32)).decode()}\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
