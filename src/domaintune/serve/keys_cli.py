"""`domaintune keys create|list|revoke`: manage the API keys of `serve.auth` (the run config) or a --db."""

from __future__ import annotations

import getpass
import re
import time
from datetime import datetime
from pathlib import Path

import typer

keys_app = typer.Typer(no_args_is_help=True, help="API keys for `domaintune serve` (docs/serve-access.md).")

CONFIG = typer.Argument(None, help="The run's domaintune.yaml (its serve.auth names the key store).")
DB = typer.Option(None, "--db", help="The key store file, instead of a config.")
SECRET = typer.Option(None, "--secret-file", help="The server secret file (with --db; needed by create).")
_DURATION = re.compile(r"(\d+)([smhd])")


def parse_expiry(value: str | None) -> float | None:
    """'30d', '12h', '90m', '45s' from now, or an ISO date/time (UTC when no zone is given)."""
    if value is None:
        return None
    m = _DURATION.fullmatch(value.strip())
    if m:
        return time.time() + int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"'{value}' is neither a duration (30d, 12h, 90m) nor an ISO date",
                                 param_hint="--expires") from None
    if when.tzinfo is None:
        from datetime import timezone

        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def open_store(config: Path | None, db: Path | None, secret_file: Path | None):
    return _open(config, db, secret_file, audited=False)[0]


def _open(config: Path | None, db: Path | None, secret_file: Path | None, audited: bool = True):
    """(key store, auditor): with a config, create and revoke are audited in its serve.audit chain (the
    chain a running server appends to); with --db there is no config, so the change is only logged."""
    from domaintune.errors import ConfigError
    from domaintune.serve.hooks import LogAuditor
    from domaintune.serve.security.keys import KeyStore, read_server_secret

    if (config is None) == (db is None):
        raise ConfigError(["give the run config (domaintune keys ... CONFIG) or --db, not both"])
    if db is not None:
        return KeyStore(db, read_server_secret(secret_file) if secret_file else None), LogAuditor()
    from domaintune.config import load_config
    from domaintune.serve.store.records import admin_auditor

    settings = load_config(config).serve
    if settings.auth is None:
        raise ConfigError([f"serve.auth: not set in {config}; add serve.auth (db, secret_file) first"])
    # before the change: a missing keyring refuses it rather than skip the audit (listing changes nothing)
    auditor = admin_auditor(settings) if audited else LogAuditor()
    return KeyStore.open(settings.auth.db, settings.auth.secret_file), auditor


def _audited(config, db, secret_file, action: str, change):
    """Run `change(store) -> detail` and append one audit record of it (route `cli:keys <action>`)."""
    from domaintune.serve.store.records import cli_record

    store, auditor = _open(config, db, secret_file)
    try:
        result, detail = change(store)
        auditor.record(cli_record(f"cli:keys {action}", f"cli:{getpass.getuser()}", **detail))
        return result
    finally:
        getattr(auditor, "close", lambda: None)()


def _run(fn):
    from domaintune.errors import DomainTuneError

    try:
        return fn()
    except DomainTuneError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(getattr(err, "exit_code", 2)) from None
    except KeyError as err:
        typer.echo(f"error: no key {err}", err=True)
        raise typer.Exit(2) from None
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@keys_app.command("create")
def create(config: Path | None = CONFIG, db: Path | None = DB, secret_file: Path | None = SECRET,
           name: str = typer.Option(..., help="What the key is for (shown in lists and audit)."),
           role: str = typer.Option("user", help="admin, user, engineer, auditor, reviewer or service."),
           expires: str | None = typer.Option(None, help="30d, 12h, 90m or an ISO date; default: never."),
           user: str | None = typer.Option(None, help="The person or service the key belongs to."),
           group: list[str] = typer.Option([], help="An ACL group (repeatable)."),
           model: list[str] = typer.Option([], help="Allow only these models (repeatable; default all)."),
           kb: list[str] = typer.Option([], help="Allow only these knowledge bases (repeatable)."),
           tool: list[str] = typer.Option([], help="Allow only these tools (repeatable)."),
           tenant: str = typer.Option("default", help="Partition for shared caches."),
           rpm: int | None = typer.Option(None, help="Requests per minute for this key."),
           tpm: int | None = typer.Option(None, help="Tokens per minute for this key."),
           tpd: int | None = typer.Option(None, help="Tokens per UTC day for this key."),
           concurrent: int | None = typer.Option(None, help="Requests in flight for this key.")) -> None:
    """Create a key and print its token ONCE (only an HMAC of it is stored)."""
    scopes = {k: v for k, v in (("models", model), ("kbs", kb), ("tools", tool)) if v}
    limits = {"requests_per_minute": rpm, "tokens_per_minute": tpm, "tokens_per_day": tpd,
              "concurrent": concurrent}

    def change(store):
        key_id, token = store.create(name, role, expires_at=parse_expiry(expires), scopes=scopes, user=user,
                                     groups=tuple(group), tenant=tenant, limits=limits)
        return (key_id, token), {"key": key_id, "name": name, "role": role, "user": user}  # never the token
    key_id, token = _run(lambda: _audited(config, db, secret_file, "create", change))
    typer.echo(f"key id: {key_id}\ntoken (shown once, store it now): {token}")


@keys_app.command("list")
def list_keys(config: Path | None = CONFIG, db: Path | None = DB, secret_file: Path | None = SECRET) -> None:
    """Keys with role, state and expiry (never a secret)."""
    now = time.time()
    for k in _run(lambda: open_store(config, db, secret_file).list()):
        state = "revoked" if k["revoked_at"] else "expired" if k["expires_at"] and k["expires_at"] <= now \
            else "active"
        expiry = datetime.fromtimestamp(k["expires_at"]).isoformat(timespec="seconds") if k["expires_at"] else "-"
        typer.echo(f"{k['key_id']}  {k['name']:<20} {k['role']:<9} {state:<8} expires {expiry}  "
                   f"user {k['user'] or '-'}  scopes {k['scopes'] or '-'}")


@keys_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key id (from `keys list`)."),
           config: Path | None = CONFIG, db: Path | None = DB, secret_file: Path | None = SECRET) -> None:
    """Revoke a key; the server refuses it from the next request on."""
    _run(lambda: _audited(config, db, secret_file, "revoke", lambda store: (store.revoke(key_id), {"key": key_id})))
    typer.echo(f"revoked {key_id}")
