"""API keys against the real server on loopback with the official openai client: valid, revoked, expired,
malformed, huge, injection-shaped and non-ASCII keys; scopes; no key material in any log."""

from __future__ import annotations

import logging
import os
import socket
import stat
import time

import httpx
import openai
import pytest
from access_helpers import bearer, governed

from domaintune.errors import ConfigError
from domaintune.serve.security.keys import KeyStore, read_server_secret

MESSAGES = [{"role": "user", "content": "What is the wire transfer fee?"}]


@pytest.fixture
def keyed(start_server, loaded, tmp_path):
    server = start_server(loaded, max_tokens_cap=4, **governed(tmp_path, rules=None))
    server.tmp = tmp_path
    return server


def _client(server, token):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0, timeout=60)


def test_store_keeps_only_an_hmac_and_a_0600_secret(tmp_path):
    secret_file = tmp_path / "s" / "server.secret"
    store = KeyStore.open(tmp_path / "keys.db", secret_file)
    key_id, token = store.create("ci", "user")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert token.startswith(f"dt-{key_id}.")
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))
    assert token.split(".")[1].encode() not in on_disk and key_id.encode() in on_disk
    assert "token" not in str(KeyStore(tmp_path / "keys.db", None).list())


def test_secret_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "server.secret"
    path.write_text("x" * 64)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_server_secret(path)


def test_create_rejects_unknown_roles_and_scopes(tmp_path):
    store = KeyStore.open(tmp_path / "k.db", tmp_path / "s")
    with pytest.raises(ValueError, match="unknown role 'root'"):
        store.create("x", "root")
    with pytest.raises(ValueError, match="unknown scope"):
        store.create("x", "user", scopes={"buckets": ["a"]})


def test_valid_key_works_and_revocation_is_seen_on_the_next_request(keyed):
    key_id, token = keyed.app.state.keys.create("app", "user")
    client = _client(keyed, token)
    assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2).choices
    # revoke from another handle on the same file, as `domaintune keys revoke` does from its own process
    KeyStore(keyed.app.state.keys._db.execute("PRAGMA database_list").fetchone()[2], None).revoke(key_id)
    started = time.monotonic()
    with pytest.raises(openai.AuthenticationError) as err:
        client.models.list()
    assert time.monotonic() - started < 2 and "revoked" in str(err.value)


def test_expired_key_and_a_case_changed_key_are_401(keyed):
    _, expired = keyed.app.state.keys.create("old", "user", expires_at=time.time() - 1)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        _client(keyed, expired).models.list()
    _, token = keyed.app.state.keys.create("app", "user")
    prefix, secret = token.split(".")
    with pytest.raises(openai.AuthenticationError):  # TGI compared keys case-insensitively
        _client(keyed, f"{prefix}.{secret.swapcase()}").models.list()


BAD_HEADERS = [b"", b"Bearer", b"Bearer ", b"Basic dXNlcjpwYXNz", b"Bearer dt-", b"Bearer sk-123",
               b"Bearer dt-000000000000." + b"A" * 43, b"Bearer ' OR '1'='1' --", b"Bearer dt-abc'; DROP TABLE keys;--",
               b'Bearer {"$ne": null}', b"Bearer " + b"A" * 4000, b"Bearer " + b"x" * 12000,
               "Bearer dt-ключ.секрет".encode(), b"Bearer \xff\xfe\xfd", b"Bearer dt-1\t2"]


def raw_status(url: str, header: bytes) -> tuple[int, bytes]:
    """GET /v1/models with one raw Authorization header (httpx refuses to send the odd ones)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: " + header +
                     b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_malformed_huge_injection_and_non_ascii_keys_are_401(keyed):
    for value in BAD_HEADERS:
        status, data = raw_status(keyed.url, value)
        assert status == 401, (value[:40], data[:300])
        assert b"authentication_error" in data and b"www-authenticate: bearer" in data.lower()


def test_two_authorization_headers_and_a_mangled_real_key_are_401(keyed):
    _, token = keyed.app.state.keys.create("app", "user")
    two = [(b"authorization", f"Bearer {token}".encode())] * 2
    assert httpx.get(keyed.url + "/v1/models", headers=two).status_code == 401
    for mangled in (token + "x", token[:-1], token.replace("dt-", "DT-"), token + " x", token + "\x00"):
        status, _ = raw_status(keyed.url, b"Bearer " + mangled.encode())
        assert status in (400, 401), mangled  # h11 itself answers 400 to a NUL byte
    assert httpx.get(keyed.url + "/v1/models", headers=bearer(token)).status_code == 200


def test_model_scope_narrows_the_key(keyed):
    _, token = keyed.app.state.keys.create("narrow", "user", scopes={"models": ["other-model"]})
    client = _client(keyed, token)
    assert client.models.list().data == []
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    assert err.value.code == "model_not_allowed"


def test_no_key_material_in_any_log(keyed, capfd):
    seen: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            seen.append(self.format(record))

    root = logging.getLogger()
    handler, level = Grab(level=logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        key_id, token = keyed.app.state.keys.create("app", "user")
        client = _client(keyed, token)
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
        keyed.app.state.keys.revoke(key_id)
        for value in (token, token + "x", "dt-" + "f" * 12 + "." + token.split(".")[1]):
            httpx.get(keyed.url + "/v1/models", headers=bearer(value))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    out, err = capfd.readouterr()
    secret = token.split(".")[1]
    text = "\n".join(seen) + out + err
    assert seen and secret not in text and token not in text
