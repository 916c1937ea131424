from __future__ import annotations

import hashlib
import json

import pytest

from domaintune.config import PiiConfig
from domaintune.data.pii import RedactPii
from domaintune.data.records import Record, Reject
from domaintune.errors import ConfigError
from domaintune.governance.pii import builtin_detectors, cn_id_check_char

VALID_ID = "11010519491231002" + cn_id_check_char("11010519491231002")


def rec(text: str) -> Record:
    return Record("r1", text, "s", "src", "f.jsonl", 1)


def test_mask_hash_and_drop(tmp_path):
    text = f"mail a.b@example.com or call 13812345678; id {VALID_ID}"
    masked = RedactPii(PiiConfig(enabled=True))(rec(text))
    assert masked.text == "mail <EMAIL> or call <PHONE>; id <ID_CARD>"
    assert masked.meta["pii_redacted"] == {"EMAIL": 1, "ID_CARD": 1, "PHONE": 1}
    assert masked.steps == ["pii.redact"]

    hashed = RedactPii(PiiConfig(enabled=True, action="hash", salt="s1"))(rec(text))
    digest = hashlib.sha256(b"s1\x00a.b@example.com").hexdigest()[:8]
    assert f"<EMAIL:{digest}>" in hashed.text and "<PHONE:" in hashed.text
    other_salt = RedactPii(PiiConfig(enabled=True, action="hash", salt="s2"))(rec(text))
    assert other_salt.text != hashed.text

    secret = tmp_path / "salt.txt"
    secret.write_text("s1\n", encoding="utf-8")
    assert RedactPii(PiiConfig(action="hash", salt_file=str(secret)))(rec(text)).text == hashed.text
    with pytest.raises(ConfigError, match="salt_file"):
        RedactPii(PiiConfig(action="hash", salt_file=str(tmp_path / "none.txt")))

    dropped = RedactPii(PiiConfig(enabled=True, action="drop"))(rec(text))
    assert isinstance(dropped, Reject) and dropped.reason == "pii.drop"
    assert "EMAIL: 1" in dropped.detail and "a.b@example.com" not in json.dumps(dropped.to_json())
    assert "<EMAIL>" in dropped.excerpt


def test_source_fields_in_meta_are_redacted_too():
    r = rec("a note without personal data")
    r.meta = {"author": {"email": "x.y@example.com"}, "tags": ["call 13812345678"], "n": 3}
    out = RedactPii(PiiConfig(enabled=True))(r)
    assert out.meta == {"author": {"email": "<EMAIL>"}, "tags": ["call <PHONE>"], "n": 3,
                        "pii_redacted": {"EMAIL": 1, "PHONE": 1}}
    assert out.text == "a note without personal data"


def test_no_findings_leaves_record_untouched():
    out = RedactPii(PiiConfig(enabled=True))(rec("nothing personal here"))
    assert out.text == "nothing personal here" and out.steps == [] and "pii_redacted" not in out.meta


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.pii.types"):
        builtin_detectors(["EMAIL", "PASSPORT"])
    with pytest.raises(ConfigError, match="custom_patterns.BAD"):
        RedactPii(PiiConfig(custom_patterns={"BAD": "(unclosed"}))
    with pytest.raises(ConfigError, match="dictionaries.NAMES: file not found"):
        RedactPii(PiiConfig(dictionaries={"NAMES": str(tmp_path / "missing.txt")}))
