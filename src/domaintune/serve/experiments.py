"""A/B experiments: deterministic assignment of a user to an arm, per-request records, feedback and
the per-arm report (`app.state.experiments`; `domaintune ab report`).

Assignment hashes (experiment name, unit id) with SHA-256 into [0, 1) and walks the arms' cumulative
weights, so a user keeps their arm across requests, restarts and replicas, and arms of different
experiments are independent. An arm sets the request's template and/or model version; the arm goes
into the audit record (`variant`, '<experiment>:<arm>') and the response's `variant` field.
"""

from __future__ import annotations

import bisect
import hashlib
import math

from domaintune.config.serve_experiments import ExperimentConfig, ExperimentsConfig, VariantConfig
from domaintune.errors import ConfigError
from domaintune.serve import experiment_stats as stats
from domaintune.serve.errors import ApiError, invalid
from domaintune.serve.experiment_store import ExperimentStore
from domaintune.serve.hooks import Auditor, AuditRecord, Principal, Prompt

POSITIVE = 0.5  # a score at or above this counts as positive feedback (thumbs up = 1, down = 0)


def bucket(experiment: str, unit: str) -> float:
    digest = hashlib.sha256(f"{experiment}\x00{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Experiment:
    def __init__(self, cfg: ExperimentConfig, model: str):
        self.cfg, self.name, self.model = cfg, cfg.name, cfg.model or model
        total = sum(v.weight for v in cfg.variants)
        self._edges, acc = [], 0.0
        for v in cfg.variants:
            acc += v.weight / total
            self._edges.append(acc)

    def variant_for(self, unit: str) -> VariantConfig:
        index = bisect.bisect_right(self._edges, bucket(self.name, unit))
        return self.cfg.variants[min(index, len(self._edges) - 1)]  # guards float rounding at the top edge

    def unit_of(self, principal: Principal, request_user: str | None) -> str:
        """Who is hashed: the key's user, else the request's `user` field, else the key (or the principal)."""
        key = principal.key_id or principal.id
        if self.cfg.unit == "key":
            return f"key:{key}"
        user = principal.user or request_user
        return f"user:{user}" if user else f"key:{key}"


class Experiments:
    def __init__(self, cfg: ExperimentsConfig, store: ExperimentStore, model: str, templates=None,
                 versions: list[str] = ()):
        self.store = store
        self.all = {e.name: Experiment(e, model) for e in cfg.active}
        for exp in self.all.values():
            if exp.model != model and exp.model not in versions:
                raise ConfigError([f"serve.experiments: experiment '{exp.name}' splits requests for model "
                                   f"'{exp.model}', which is neither the served name '{model}' nor a version"])
            for arm in exp.cfg.variants:
                if arm.template is not None and (templates is None or templates.find(arm.template) is None):
                    raise ConfigError([f"serve.experiments: experiment '{exp.name}' variant '{arm.name}': unknown "
                                       f"template '{arm.template}' (GET /v1/templates lists them)"])
                if arm.model is not None and arm.model not in versions:
                    raise ConfigError([f"serve.experiments: experiment '{exp.name}' variant '{arm.name}': model "
                                       f"version '{arm.model}' is not in serve.models.versions"])

    def names(self) -> list[str]:
        return sorted(self.all)

    def get(self, name: str) -> Experiment:
        if name not in self.all:
            from domaintune.registry import suggest

            raise ApiError(404, f"no experiment '{name}'{suggest(name, self.names())}; have {self.names()}",
                           code="experiment_not_found")
        return self.all[name]

    def assign(self, principal: Principal, prompt: Prompt, model: str, request_user: str | None
               ) -> tuple[str, str | None]:
        """(model id to serve, variant label or None). A request that pins a template is not enrolled."""
        if prompt.template is not None:
            return model, None
        for exp in self.all.values():
            if exp.cfg.enabled and exp.model == model:
                arm = exp.variant_for(exp.unit_of(principal, request_user))
                if arm.template is not None:
                    prompt.template = arm.template
                return arm.model or model, f"{exp.name}:{arm.name}"
        return model, None

    def record(self, record: AuditRecord) -> None:
        if record.variant:
            experiment, _, arm = record.variant.partition(":")
            self.store.add_request(record.request_id, experiment, arm, record.principal, record.status,
                                   record.latency_ms, record.prompt_tokens, record.completion_tokens)

    def feedback(self, principal: Principal, body: dict) -> dict:
        request_id, score = parse_feedback(body)
        owner = self.store.owner(request_id)
        if owner is None or owner != principal.id:  # another principal's request behaves as unknown
            raise ApiError(404, f"no request '{request_id}' of yours in an experiment (feedback is taken for "
                                f"requests that were assigned a variant)", code="request_not_found",
                           param="request_id")
        self.store.add_feedback(request_id, score)
        return {"request_id": request_id, "score": score, "status": "recorded"}

    def report(self, name: str, task: dict[str, dict] | None = None) -> dict:
        exp = self.get(name)
        return build_report(exp, self.store.rows(name), task)


class AuditTee:
    """An Auditor that also files experiment requests into the store, then passes the record on."""

    def __init__(self, inner: Auditor, experiments: Experiments):
        self.inner, self.experiments = inner, experiments

    def record(self, record: AuditRecord) -> None:
        try:
            self.experiments.record(record)
        finally:
            self.inner.record(record)


def parse_feedback(body) -> tuple[str, float]:
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object {\"request_id\", \"score\" | \"thumbs\"}", None)
    unknown = set(body) - {"request_id", "score", "thumbs"}
    if unknown:
        raise invalid(f"unrecognized feedback argument: {sorted(unknown)[0]}", sorted(unknown)[0],
                      code="unknown_parameter")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
        raise invalid("request_id must be the response id (e.g. 'chatcmpl-…') or its request id", "request_id")
    request_id = request_id.removeprefix("chatcmpl-").removeprefix("cmpl-")
    if ("score" in body) == ("thumbs" in body):
        raise invalid("give exactly one of score (0..1) or thumbs ('up' | 'down')", "score")
    if "thumbs" in body:
        if body["thumbs"] not in ("up", "down"):
            raise invalid("thumbs must be 'up' or 'down'", "thumbs")
        return request_id, 1.0 if body["thumbs"] == "up" else 0.0
    score = body["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) \
            or not 0 <= score <= 1:
        raise invalid("score must be a number from 0 to 1", "score")
    return request_id, float(score)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _arm_stats(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == 200]
    latencies = [r["latency_ms"] for r in ok]
    scores = [r["score"] for r in rows if r["score"] is not None]
    positive = sum(s >= POSITIVE for s in scores)
    return {"n": len(rows), "ok": len(ok), "errors": len(rows) - len(ok),
            "latency_ms": {"p50": stats.percentile(latencies, 50), "p95": stats.percentile(latencies, 95)},
            "tokens": {"prompt_mean": _mean([r["prompt_tokens"] for r in ok]),
                       "completion_mean": _mean([r["completion_tokens"] for r in ok])},
            "feedback": {**stats.rate_summary(positive, len(scores)), "mean_score": _mean(scores)}}


def build_report(exp: Experiment, rows: list[dict], task: dict[str, dict] | None = None) -> dict:
    """Per arm: n, latency p50/p95, tokens, feedback rate with a Wilson interval and, when `task` holds
    {arm: rate_summary(correct, items)}, task accuracy; each arm's verdict is against the first arm."""
    arms = [v.name for v in exp.cfg.variants]
    out = {name: _arm_stats([r for r in rows if r["variant"] == name]) for name in arms}
    control = arms[0]
    for name in arms:
        arm = out[name]
        if task is not None:
            arm["task"] = dict(task[name])
        if name == control:
            arm["verdict"] = "control"
            continue
        arm["feedback"].update(stats.compare(arm["feedback"], out[control]["feedback"]))
        arm["verdict"] = arm["feedback"]["verdict"]
        if task is not None:
            arm["task"].update(stats.compare(task[name], task[control]))
    return {"experiment": exp.name, "control": control, "model": exp.model,
            "weights": {v.name: v.weight for v in exp.cfg.variants}, "variants": out,
            "summary": _summary(out, control, task is not None)}


def _summary(out: dict, control: str, with_task: bool) -> str:
    parts = []
    for name, arm in out.items():
        if name == control:
            continue
        line = f"{name} vs {control}: feedback {arm['verdict']}"
        if with_task:
            line += f", task accuracy {arm['task']['verdict']}"
        parts.append(line)
    return "; ".join(parts)
