"""Keyring parsing, rotation, fail-closed opens and per-user crypto-shredding."""

from __future__ import annotations

import base64

import pytest
from store_helpers import write_keyring

from domaintune.config.serve import ServeConfig
from domaintune.config.serve_records import EncryptionConfig
from domaintune.errors import ConfigError
from domaintune.serve.store.crypto import Keyring, KeyUnavailable, Vault, parse_keyring


def test_keyring_entries_are_checked_with_the_entry_and_the_fix():
    good = base64.b64encode(b"x" * 32).decode()
    with pytest.raises(ConfigError, match="entry 1 .'k1'.: the key has 16 bytes, AES-256 needs 32"):
        parse_keyring("k1 " + base64.b64encode(b"x" * 16).decode(), "keyring")
    with pytest.raises(ConfigError, match="entry 2 .'k2'.: the key is not base64"):
        parse_keyring(f"k1 {good}\nk2 not*base64", "keyring")
    with pytest.raises(ConfigError, match="appears twice"):
        parse_keyring(f"k1 {good}; k1 {good}", "keyring")
    with pytest.raises(ConfigError, match="holds no key"):
        parse_keyring("# only a comment\n", "keyring")
    assert list(parse_keyring(f"# rotated\nold {good}\nnew {good}", "k")) == ["old", "new"]


def test_missing_key_file_or_env_fails_closed(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="file not found.*refusing to start"):
        Keyring.load(EncryptionConfig(keyring_file=str(tmp_path / "nope")))
    monkeypatch.delenv("DT_TEST_KEYRING", raising=False)
    with pytest.raises(ConfigError, match="DT_TEST_KEYRING is not set"):
        Keyring.load(EncryptionConfig(keyring_env="DT_TEST_KEYRING"))
    monkeypatch.setenv("DT_TEST_KEYRING", "k9 " + base64.b64encode(b"y" * 32).decode())
    assert Keyring.load(EncryptionConfig(keyring_env="DT_TEST_KEYRING")).active == "k9"
    with pytest.raises(ValueError, match="never the key itself"):
        EncryptionConfig(keyring_env="k1 c2VjcmV0")


def test_validate_reports_the_missing_keyring_before_anything_starts(tmp_path):
    on = {"audit": {"enabled": True, "db": str(tmp_path / "a.sqlite")}}
    assert ServeConfig(**on).problems() == [
        "serve.encryption: audit need a keyring (the audit chain's HMAC key and the encryption keys come from it): "
        "set serve.encryption.keyring_file or serve.encryption.keyring_env"]
    missing = ServeConfig(**on, encryption={"keyring_file": str(tmp_path / "ring")}).problems()
    assert missing == [f"serve.encryption.keyring_file: file not found: {tmp_path / 'ring'}"]
    write_keyring(tmp_path / "ring", "k1")
    assert ServeConfig(**on, encryption={"keyring_file": str(tmp_path / "ring")}).problems() == []


def test_rotation_keeps_old_data_readable_and_a_wrong_key_fails_closed(tmp_path):
    ring1 = Keyring(parse_keyring(write_keyring(tmp_path / "r1", "k1").read_text(), "r1"))
    old = ring1.seal(b"secret", b"aad")
    rotated = Keyring({**ring1.keys, "k2": b"z" * 32})
    assert rotated.active == "k2" and rotated.open(old, b"aad") == b"secret"
    assert rotated.open(rotated.seal(b"new", b"a"), b"a") == b"new"
    with pytest.raises(KeyUnavailable, match="'k1' is not in the keyring"):
        Keyring({"k2": b"z" * 32}).open(old, b"aad")
    with pytest.raises(KeyUnavailable, match="'k1' does not open this data"):
        Keyring({"k1": b"w" * 32}).open(old, b"aad")
    with pytest.raises(KeyUnavailable):
        ring1.open(old, b"other row")  # AAD binds a blob to its place


def test_destroying_a_user_key_shreds_only_that_users_data(tmp_path):
    ring = Keyring({"k1": b"k" * 32})
    vault = Vault(ring, tmp_path / "keys.sqlite")
    alice, bob = vault.seal("alice", b"a-text", b"row1"), vault.seal("bob", b"b-text", b"row1")
    assert vault.open("alice", alice, b"row1") == b"a-text"
    with pytest.raises(KeyUnavailable):
        vault.open("bob", alice, b"row1")  # one user's blob does not open under another's key
    assert vault.destroy("alice") is True and vault.destroy("alice") is False
    with pytest.raises(KeyUnavailable, match="'alice' is destroyed"):
        vault.open("alice", alice, b"row1")
    assert Vault(ring, tmp_path / "keys.sqlite").open("bob", bob, b"row1") == b"b-text"  # persisted, wrapped
    again = vault.seal("alice", b"later", b"row2")  # a returning user gets a fresh key, which opens no old data
    assert vault.open("alice", again, b"row2") == b"later"
    with pytest.raises(KeyUnavailable):
        vault.open("alice", alice, b"row1")
    raw = (tmp_path / "keys.sqlite").read_bytes() + (tmp_path / "keys.sqlite-wal").read_bytes()
    assert b"k" * 32 not in raw
