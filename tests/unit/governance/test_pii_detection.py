from __future__ import annotations

import hashlib
from datetime import date

import pytest

from domaintune.config import PiiConfig
from domaintune.errors import ConfigError
from domaintune.governance.pii import (
    PiiFinder,
    Redactor,
    builtin_detectors,
    cn_id_check_char,
    luhn_ok,
    valid_bank_card,
    valid_cn_resident_id,
)


def cn_id(first17: str) -> str:
    return first17 + cn_id_check_char(first17)


def luhn_card(prefix: str, length: int = 16) -> str:
    body = prefix.ljust(length - 1, "0")
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


VALID_ID = cn_id("11010519491231002")  # the GB 11643 example number: check char X
VALID_CARD = "4111111111111111"  # the classic Visa test number


def find(text: str, **cfg) -> list[tuple[str, str]]:
    finder = PiiFinder.from_config(PiiConfig(enabled=True, **cfg))
    return [(f.type, text[f.start:f.end]) for f in finder.find(text)]


def test_validators():
    assert VALID_ID == "11010519491231002X" and valid_cn_resident_id(VALID_ID)
    assert not valid_cn_resident_id(VALID_ID[:-1] + "1")  # wrong check character
    bad_date = "110105" + "19490231" + "002"  # 31 February
    assert not valid_cn_resident_id(cn_id(bad_date))
    future = "110105" + "20990101" + "002"
    assert not valid_cn_resident_id(cn_id(future), today=date(2026, 1, 1))
    assert luhn_ok(VALID_CARD) and valid_bank_card("4111 1111 1111 1111")
    assert not valid_bank_card("4111111111111112")  # Luhn fails
    assert not valid_bank_card(luhn_card("9111111111111"))  # no card network starts with 9


@pytest.mark.parametrize("text,expected", [
    ("write to jane.doe@example.com today", [("EMAIL", "jane.doe@example.com")]),
    ("邮箱：wang.li@corp.cn，谢谢", [("EMAIL", "wang.li@corp.cn")]),
    ("手机 13812345678 联系", [("PHONE", "13812345678")]),
    ("电话+86 138-1234-5678。", [("PHONE", "+86 138-1234-5678")]),
    ("call +44 20 7946 0958 now", [("PHONE", "+44 20 7946 0958")]),
    ("call (415) 555-0132 now", [("PHONE", "(415) 555-0132")]),
    ("办公电话010-62345678", [("PHONE", "010-62345678")]),
    (f"身份证号{VALID_ID}。", [("ID_CARD", VALID_ID)]),
    ("card 4111 1111 1111 1111 expires", [("BANK_CARD", "4111 1111 1111 1111")]),
    ("server 192.168.10.25 is down", [("IP", "192.168.10.25")]),
    ("use 2001:db8::8a2e:370:7334 here", [("IP", "2001:db8::8a2e:370:7334")]),
    ("clone https://deploy:s3cr3t@git.example.com/repo.git",
     [("URL_CREDENTIALS", "deploy:s3cr3t")]),
])
def test_each_type_is_found(text, expected):
    assert find(text) == expected


@pytest.mark.parametrize("text", [
    f"身份证号{VALID_ID[:-1]}1。",          # ID with a wrong check character
    "card 4111 1111 1111 1112 expires",      # card failing Luhn
    f"订单号{luhn_card('4000123412341', 16)}",  # Luhn-valid, but an order number
    "ISBN 9780306406157 is a book",          # 13 digits, Luhn-valid-looking, but ISBN context
    "timestamp 1700000000123 ms",            # 13-digit epoch millis (starts with 1: no network)
    "version 1.2.3.4 released",              # version number, not an IP
    "bad ip 256.1.1.1 and 999.0.0.1",
    "icon@2x.png and @username",
    "订单号13812345678已发货",                # looks like a mobile, but an order number
    "at 12:30:45 sharp",
])
def test_lookalikes_are_not_reported(text):
    assert find(text) == []


def test_id_card_claims_span_before_bank_card():
    # A valid resident ID may also pass Luhn; it is reported once, as an ID.
    assert [t for t, _ in find(f"ID {VALID_ID}")] == ["ID_CARD"]


def test_custom_patterns_dictionaries_and_allow(tmp_path):
    names = tmp_path / "customers.txt"
    names.write_text("# customers\nAlice Grant\n王丽\n\n", encoding="utf-8")
    cfg = {"custom_patterns": {"employee_id": r"EMP-\d{5}"}, "dictionaries": {"CUSTOMER": str(names)},
           "allow": ["help@bank.example"]}
    text = "EMP-12345 served alice grant and 王丽女士; write to help@bank.example or x@bank.example"
    assert find(text, **cfg) == [("EMPLOYEE_ID", "EMP-12345"), ("CUSTOMER", "alice grant"),
                                 ("CUSTOMER", "王丽"), ("EMAIL", "x@bank.example")]
    assert find("Alice Granted nothing", **cfg) == []  # whole words only for Latin entries
    assert find("no matches here", custom_patterns={"EMPTY": "x*"}) == []  # empty matches are not findings


def test_config_types_match_the_pattern_table():
    from typing import get_args

    from domaintune.config import PiiType

    assert {d.type for d in builtin_detectors()} == set(get_args(PiiType))
    with pytest.raises(ValueError, match="data.pii.types|PASSPORT|literal"):
        PiiConfig(types=["PASSPORT"])


def test_redactor_returns_text_and_findings_without_values():
    text = f"mail a.b@example.com or call 13812345678; id {VALID_ID}"
    out, findings = Redactor.from_config(PiiConfig(enabled=True)).redact(text)
    assert out == "mail <EMAIL> or call <PHONE>; id <ID_CARD>"
    assert [(f.type, text[f.start:f.end]) for f in findings] == [
        ("EMAIL", "a.b@example.com"), ("PHONE", "13812345678"), ("ID_CARD", VALID_ID)]
    hashed, _ = Redactor.from_config(PiiConfig(action="hash", salt="s1")).redact(text)
    digest = hashlib.sha256(b"s1\x00a.b@example.com").hexdigest()[:8]
    assert f"<EMAIL:{digest}>" in hashed
    # drop is the caller's decision: the redactor masks, so nothing it returns holds the values
    assert Redactor.from_config(PiiConfig(action="drop")).redact(text)[0] == out
    assert Redactor.from_config(PiiConfig()).redact("nothing personal") == ("nothing personal", [])


def test_redact_value_walks_dicts_and_lists():
    row = {"author": {"email": "x.y@example.com"}, "tags": ["call 13812345678", "mail z@example.com"], "n": 3}
    value, counts = Redactor.from_config(PiiConfig()).redact_value(row)
    assert value == {"author": {"email": "<EMAIL>"}, "tags": ["call <PHONE>", "mail <EMAIL>"], "n": 3}
    assert counts == {"EMAIL": 2, "PHONE": 1}
    assert row["author"]["email"] == "x.y@example.com"  # the input is not changed in place


def test_errors_name_the_callers_key(tmp_path):
    with pytest.raises(ConfigError, match=r"serve\.audit\.pii\.types: .*serve\.audit\.pii\.custom_patterns"):
        builtin_detectors(["PASSPORT"], key="serve.audit.pii")
    with pytest.raises(ConfigError, match=r"serve\.audit\.pii\.custom_patterns\.BAD"):
        Redactor.from_config(PiiConfig(custom_patterns={"BAD": "("}), key="serve.audit.pii")
    with pytest.raises(ConfigError, match=r"serve\.audit\.pii\.salt_file"):
        Redactor.from_config(PiiConfig(action="hash", salt_file=str(tmp_path / "none")), key="serve.audit.pii")
    with pytest.raises(ValueError, match="mask"):
        Redactor(PiiFinder([]), action="drop")
