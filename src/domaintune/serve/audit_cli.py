"""`domaintune audit verify|export` and `domaintune users erase` over the files a run's `serve:` names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from domaintune.errors import ConfigError, DomainTuneError

audit_app = typer.Typer(no_args_is_help=True, help="Verify or export the hash-chained audit log.")
users_app = typer.Typer(no_args_is_help=True, help="GDPR-style erasure of a user's data.")

ConfigArg = typer.Argument(None, help="The run's domaintune.yaml (its serve.audit and serve.encryption).")
DbOpt = typer.Option(None, "--db", help="An audit SQLite file, instead of the config's serve.audit.db.")
KeyringOpt = typer.Option(None, "--keyring", help="With --db: the keyring file (KEY_ID BASE64 lines).")
KeyringEnvOpt = typer.Option(None, "--keyring-env", help="With --db: the NAME of an env var holding the keyring.")


def _settings(config: Path | None):
    from domaintune.serve.command import load_with_settings

    if config is None:
        raise ConfigError(["give the run's config file, or --db with --keyring / --keyring-env"])
    return load_with_settings(config, [])[1]


def _auditor(config: Path | None, db: Path | None, keyring: Path | None, keyring_env: str | None):
    from domaintune.config.serve_records import EncryptionConfig
    from domaintune.serve.store.audit import ChainAuditor
    from domaintune.serve.store.crypto import Keyring, Vault

    if db is not None:
        if keyring is None and keyring_env is None:
            raise ConfigError(["--db needs the keyring too: --keyring FILE or --keyring-env NAME"])
        enc = EncryptionConfig(keyring_file=str(keyring) if keyring else None, keyring_env=keyring_env)
        if not Path(db).is_file():
            raise ConfigError([f"--db: file not found: {db}"])
        return ChainAuditor(db, Keyring.load(enc)), None
    settings = _settings(config)
    if not Path(settings.audit.db).is_file():
        raise ConfigError([f"serve.audit.db: file not found: {settings.audit.db} (has the server run with "
                           "serve.audit.enabled: true?)"])
    ring = Keyring.load(settings.encryption)
    vault = Vault(ring, settings.encryption.user_keys_db)
    return ChainAuditor(settings.audit.db, ring, vault, settings.audit.content), vault


def _fail(err: DomainTuneError) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@audit_app.command("verify")
def verify(config: Path | None = ConfigArg, db: Path | None = DbOpt, keyring: Path | None = KeyringOpt,
           keyring_env: str | None = KeyringEnvOpt) -> None:
    """Recompute the chain; exit 1 naming the first bad record."""
    try:
        auditor, _ = _auditor(config, db, keyring, keyring_env)
    except DomainTuneError as err:
        _fail(err)
    result = auditor.verify()
    if result["ok"]:
        typer.echo(f"ok: {result['records']} records, chain head {result['head']}")
        return
    typer.echo(f"BROKEN at record {result['first_bad']}: {result['reason']} ({result['records']} records verify "
               "before it)", err=True)
    raise typer.Exit(1)


@audit_app.command("export")
def export(config: Path | None = ConfigArg, db: Path | None = DbOpt, keyring: Path | None = KeyringOpt,
           keyring_env: str | None = KeyringEnvOpt,
           out: Path | None = typer.Option(None, "-o", "--out", help="JSONL file to write (default: stdout)."),
           with_content: bool = typer.Option(False, "--with-content",
                                             help="Decrypt prompts and answers (needs the config, not --db).")) -> None:
    """Write every record as JSONL for a SIEM (seq, kid, prev_mac, mac and the metadata)."""
    try:
        auditor, vault = _auditor(config, db, keyring, keyring_env)
        if with_content and vault is None:
            raise ConfigError(["--with-content needs the run's config (the user data keys live in "
                               "serve.encryption.user_keys_db)"])
    except DomainTuneError as err:
        _fail(err)
    if out is None:
        n = auditor.export(sys.stdout, with_content)
    else:
        with out.open("w", encoding="utf-8") as fh:
            n = auditor.export(fh, with_content)
        typer.echo(f"wrote {n} records to {out}", err=True)


@users_app.command("erase")
def erase(user: str = typer.Argument(..., help="The user (a key's `user`, else the principal id)."),
          config: Path = typer.Argument(..., help="The run's domaintune.yaml.")) -> None:
    """Delete USER's sessions and cached answers and destroy their data key (audit content becomes unreadable)."""
    from domaintune.serve.store.records import Records

    try:
        records = Records(_settings(config))
        if records.vault is None:
            raise ConfigError(["serve: audit, sessions and cache are all off: this server stores no user data"])
        done = records.erase(user, by="cli")
        records.close()
    except DomainTuneError as err:
        _fail(err)
    typer.echo(json.dumps(done))
