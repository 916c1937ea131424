"""Pin a hub-id base model to the commit it resolves to at run time.

`model.base: org/name` without a commit revision means "whatever `main` is today": the weights can
change while the config stays the same. The resolved commit sha is recorded in every manifest, is
part of the stages' fingerprints (a moved `main` re-runs the stages that read the model), and is
the revision the weights are then loaded at. Resolving needs the network: offline, the commit the
local cache would load is used; failing both, the sha is recorded as null with the reason, and
the run goes on as before (never fails for lack of a network).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

COMMIT = re.compile(r"^[0-9a-f]{40}$")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class HubRevision:
    repo_id: str
    requested: str | None  # model.revision as configured (None: the hub's default branch)
    sha: str | None  # the commit it resolved to; None when it could not be resolved
    source: str  # "pinned" (the config names a commit), "hub", "cache" (offline), "unresolved"
    reason: str | None = None  # why the sha came from the cache or is missing

    def to_dict(self) -> dict:
        return asdict(self)


def is_hub_id(base: str) -> bool:
    """A base that names a hub repository (org/name), not a local file or folder."""
    return not Path(base).exists() and REPO_ID.match(base) is not None


@lru_cache(maxsize=64)
def resolve(repo_id: str, revision: str | None) -> HubRevision:
    """The commit `revision` (default branch if None) of `repo_id` points at now; once per process."""
    if revision and COMMIT.match(revision):
        return HubRevision(repo_id, revision, revision, "pinned")
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(repo_id, revision=revision, timeout=TIMEOUT_S).sha
    except Exception as exc:  # offline, unknown or gated repo, hub error: recorded, never fatal
        reason = f"{type(exc).__name__}: {exc}"[:300]
        cached = _cached_commit(repo_id, revision)
        if cached:
            return HubRevision(repo_id, revision, cached, "cache",
                               f"hub not reachable ({reason}); the commit the local cache holds for "
                               f"'{revision or 'main'}'")
        return HubRevision(repo_id, revision, None, "unresolved", reason)
    if not sha:
        return HubRevision(repo_id, revision, None, "unresolved", "the hub reported no commit sha")
    return HubRevision(repo_id, revision, sha, "hub")


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a branch/tag points at in the local hub cache (what an offline load would use)."""
    try:
        from huggingface_hub import constants

        ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
        sha = ref.read_text(encoding="utf-8").strip()
    except (OSError, ImportError):
        return None
    return sha if COMMIT.match(sha) else None
