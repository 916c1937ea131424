"""Task accuracy per A/B arm for `domaintune ab report --task`: each arm's model version answers the
eval task (domaintune's own task format, benchmarks/) through the arm's prompt template and the
model's chat template, exactly as a chat request to the server would be rendered."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from domaintune.serve import experiment_stats as stats


class TemplatedTokenizer:
    """The model's tokenizer, with the arm's template applied to the messages before its chat template,
    so the benchmark scorers render prompts the way the serving path does."""

    def __init__(self, tokenizer, template):
        object.__setattr__(self, "_tok", tokenizer)
        object.__setattr__(self, "_tpl", template)

    def apply_chat_template(self, messages, **kwargs):
        if self._tpl is not None:
            messages = self._tpl.apply_messages(list(messages))
        return self._tok.apply_chat_template(messages, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __setattr__(self, name, value):  # padding_side etc. must reach the real tokenizer
        setattr(self._tok, name, value)


def correct_count(model, tokenizer, template, task) -> int:
    from domaintune.benchmarks.scoring import score_task

    chat_task = dataclasses.replace(task, spec=task.spec.model_copy(update={"chat_template": True}))
    result = score_task(model, TemplatedTokenizer(tokenizer, template), chat_task)
    metric = "exact_match" if task.spec.kind == "generation" else "acc"
    return round(result.metrics[metric] * len(task.items))


def arm_accuracy(experiment, settings, templates, run_model_dir: Path, task, base=None) -> dict[str, dict]:
    """{arm: rate_summary(correct, items)}; each distinct model folder is loaded once."""
    from domaintune.serve.loading import load_for_serving

    folders = {v.id: Path(v.path) for v in settings.models.versions}
    fallback = settings.templates.routes.get("/v1/chat/completions") or settings.templates.default
    loaded: dict[Path, tuple] = {}
    out = {}
    for arm in experiment.cfg.variants:
        folder = folders[arm.model] if arm.model else Path(run_model_dir)
        if folder not in loaded:
            loaded[folder] = load_for_serving(folder, base=base)
        ref = arm.template or fallback
        template = templates.find(ref) if ref else None
        model, tokenizer = loaded[folder]
        out[arm.name] = stats.rate_summary(correct_count(model, tokenizer, template, task), len(task.items))
    return out
