"""The `serve.console:` section: the web console that `domaintune serve` shows at /ui.

Who may log in is decided by the same keys and roles as the API (`hooks.auth`); `users` adds
people who log in with a name and password instead, stored only as argon2 hashes
(`domaintune hash-password` prints one).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from domaintune.config.base import FilePath, Section

ROLES = ("admin", "user", "engineer", "auditor", "reviewer")  # serve/permissions.py ROLES


class ConsoleUser(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="Login name.")
    password_hash: str = Field(description="argon2id hash of the password (`domaintune hash-password`); "
                                           "never the password itself.")
    role: Literal["admin", "user", "engineer", "auditor", "reviewer"] = Field(
        "user", description="Role of the user (serve/permissions.py): what the console and API let them do.")
    groups: list[str] = Field(default_factory=list, description="ACL groups for knowledge-base documents.")

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: str) -> str:
        if not value.startswith("$argon2"):
            raise ValueError("password_hash must be an argon2 hash ('$argon2id$...'): run "
                             "`domaintune hash-password` and paste its output; never write the password here")
        return value


class ConsoleConfig(Section):
    """The web console at /ui: chat, run dashboard and admin pages."""

    enabled: bool = Field(True, description="Serve the web console at /ui (false: no /ui routes at all).")
    runs_dir: FilePath | None = Field(None, description="Folder of runs the dashboard lists; default: the run "
                                                        "config's runs_dir (none with `serve --model DIR`).")
    users: list[ConsoleUser] = Field(default_factory=list, description="People who log in with a password "
                                                                       "(argon2 hashes) instead of an API key.")
    session_ttl_s: int = Field(28800, ge=60, description="Seconds a console login lasts (the cookie and the "
                                                         "server-side session).")
    max_sessions: int = Field(10000, ge=1, description="Console logins kept in memory; the oldest is dropped "
                                                       "beyond it.")
    language: Literal["en", "zh"] = Field("en", description="Default UI language (each user can switch).")
    max_tokens: int = Field(512, ge=1, description="max_tokens of a chat answer asked from the console.")
