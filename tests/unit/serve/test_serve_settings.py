"""The serve: section, the bind/TLS rules (with real TLS handshakes), and how `serve CFG` finds its model."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess

import httpx
import pytest
from pydantic import ValidationError

from domaintune.config.serve import ServeConfig, TLSConfig, is_loopback
from domaintune.errors import ConfigError, ModelError
from domaintune.serve.command import load_with_settings, run_model, validate_settings, with_flags
from domaintune.serve.server import check_bind, ssl_context


def test_defaults_bind_loopback_and_every_field_is_documented():
    s = ServeConfig()
    assert s.host == "127.0.0.1" and s.tls is None and not s.allow_insecure_public
    for model in (ServeConfig, TLSConfig):
        assert all(f.description for f in model.model_fields.values()), model


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("10.0.0.5", False), ("example.com", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_a_public_host_needs_tls_or_an_explicit_opt_out(tmp_path):
    with pytest.raises(ValidationError, match="allow_insecure_public"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", allow_insecure_public=True).host == "0.0.0.0"
    assert ServeConfig(host="0.0.0.0", tls={"certfile": "c.pem", "keyfile": "k.pem"}).tls.min_version == "1.2"
    bypass = ServeConfig().model_copy(update={"host": "0.0.0.0"})  # model_copy skips validators
    with pytest.raises(ConfigError, match="serve.tls"):
        check_bind(bypass)
    with pytest.raises(ConfigError, match="allow_insecure_public"):
        with_flags(ServeConfig(), host="0.0.0.0", port=None)


def test_unknown_keys_and_bad_values_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate_settings({"max_runing": 4, "port": -1}, tmp_path, "cfg.yaml")
    text = str(err.value)
    assert "serve.max_runing: unknown key" in text and "serve.port" in text


def test_tls_paths_resolve_against_the_config_folder_and_missing_files_are_reported(tmp_path):
    s = validate_settings({"tls": {"certfile": "certs/c.pem", "keyfile": "/abs/k.pem"}}, tmp_path, "cfg")
    assert s.tls.certfile == str(tmp_path / "certs" / "c.pem") and s.tls.keyfile == "/abs/k.pem"
    assert s.problems() == [f"serve.tls.certfile: file not found: {tmp_path / 'certs' / 'c.pem'}",
                            "serve.tls.keyfile: file not found: /abs/k.pem"]
    with pytest.raises(ConfigError, match="cannot load certificate"):
        ssl_context(s.tls)


# --------------------------------------------------------------------------- real TLS
@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def _client_context(cert_path, max_version=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert_path))
    if max_version:
        ctx.maximum_version = max_version
    return ctx


@pytest.mark.slow
def test_https_with_the_configured_certificate_prefers_tls13_and_enforces_the_minimum(cert, start_server, loaded):
    certfile, keyfile = cert
    server = start_server(loaded, tls={"certfile": str(certfile), "keyfile": str(keyfile)})
    assert server.url.startswith("https://")
    assert httpx.get(server.url + "/health", verify=_client_context(certfile)).json() == {"status": "ok"}
    host, port = server.url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port))) as raw, \
            _client_context(certfile).wrap_socket(raw, server_hostname=host) as tls:
        assert tls.version() == "TLSv1.3"
    tls12 = _client_context(certfile, ssl.TLSVersion.TLSv1_2)
    assert httpx.get(server.url + "/health", verify=tls12).status_code == 200  # 1.2 is the default minimum
    strict = start_server(loaded, tls={"certfile": str(certfile), "keyfile": str(keyfile), "min_version": "1.3"})
    with pytest.raises(httpx.ConnectError):
        httpx.get(strict.url + "/health", verify=tls12)
    with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)):  # no plain HTTP on the TLS port
        httpx.get(server.url.replace("https://", "http://") + "/health", timeout=5)


# --------------------------------------------------------------------------- serve CFG
def _run_with_export(tmp_path, model_dir, serve_section: str = "") -> tuple:
    cfg_path = tmp_path / "domaintune.yaml"
    cfg_path.write_text(f"name: demo\nruns_dir: runs\nmodel:\n  base: {model_dir}\n{serve_section}", encoding="utf-8")
    export = tmp_path / "runs" / "demo" / "export"
    export.mkdir(parents=True)
    (export / "manifest.json").write_text(json.dumps({"outputs": {"model": "model"}}), encoding="utf-8")
    return cfg_path, export / "model"


def test_serve_cfg_reads_the_serve_section_and_serves_the_exported_model(tmp_path, varied_model_dir):
    cfg_path, exported = _run_with_export(tmp_path, varied_model_dir, "serve:\n  port: 9100\n  max_running: 2\n")
    cfg, settings = load_with_settings(cfg_path, ["serve.max_waiting=3", "seed=4"])
    assert (settings.port, settings.max_running, settings.max_waiting, cfg.seed) == (9100, 2, 3, 4)
    model_dir, base = run_model(cfg)
    assert model_dir == exported and base.base == str(varied_model_dir)


def test_serve_cfg_without_a_model_says_what_to_run(tmp_path, varied_model_dir):
    cfg_path = tmp_path / "domaintune.yaml"
    cfg_path.write_text(f"name: empty\nmodel:\n  base: {varied_model_dir}\n", encoding="utf-8")
    cfg, _ = load_with_settings(cfg_path, [])
    with pytest.raises(ModelError, match="domaintune run CONFIG"):
        run_model(cfg)
    cfg_path.write_text(f"name: x\nmodel:\n  base: {varied_model_dir}\nserve:\n  hots: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="serve.hots: unknown key"):
        load_with_settings(cfg_path, [])
