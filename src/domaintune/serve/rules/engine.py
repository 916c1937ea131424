"""Rules from the YAML file, matched against the request before the model and the answer after it.

Order of precedence on a match: refuse and answer end the check (first one wins, in file order);
instruct adds a system instruction; review flags the answer (hold: withheld until a reviewer
decides; deliver: sent and flagged). Streaming answers are buffered only when an output rule or
a hold could change them."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from domaintune.config.serve_access import Rule, RulesConfig, load_classifier, load_rules
from domaintune.serve.engine.base import Event
from domaintune.serve.hooks import AuditRecord, Principal, Prompt
from domaintune.serve.rules.review import ReviewQueue
from domaintune.serve.rules.screen import Screen

REFUSAL = "content_filter"  # the OpenAI finish_reason for an answer the service did not let through


@dataclass
class Matcher:
    rule: Rule

    def __post_init__(self):
        from domaintune.governance.pii import PiiFinder, builtin_detectors

        r = self.rule
        self.regexes = [re.compile(x, re.IGNORECASE) for x in r.regex]
        self.keywords = [k.lower() for k in r.keywords]
        self.pii = PiiFinder(builtin_detectors(r.pii, key=f"rules.{r.name}.pii")) if r.pii else None
        self.classifier = load_classifier(r.classifier) if r.classifier else None

    def conditions(self, text: str) -> list[bool]:
        r, low = self.rule, text.lower()
        out = []
        if self.regexes:
            out.append(any(rx.search(text) for rx in self.regexes))
        if self.keywords:
            out.append(any(k in low for k in self.keywords))
        if self.pii is not None:
            out.append(bool(self.pii.find(text)))
        if r.min_chars is not None:
            out.append(len(text) >= r.min_chars)
        if r.max_chars is not None:
            out.append(len(text) > r.max_chars)
        if self.classifier is not None:
            score = self.classifier(text)
            out.append(score >= r.threshold if not isinstance(score, bool) else score)
        return out

    def fires(self, text: str) -> bool:
        results = self.conditions(text)
        return all(results) if self.rule.match == "all" else any(results)


def input_text(prompt: Prompt) -> str:
    if prompt.messages is not None:
        return "\n".join(m["content"] for m in prompt.messages if m["role"] != "assistant")
    return prompt.text or ""


def _instruct(prompt: Prompt, instructions: list[str]) -> Prompt:
    note = "\n".join(instructions)
    if prompt.messages is None:
        return replace(prompt, text=f"{note}\n\n{prompt.text}")
    msgs = [dict(m) for m in prompt.messages]
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"] = f"{note}\n\n{msgs[0]['content']}"
    else:
        msgs.insert(0, {"role": "system", "content": note})
    return replace(prompt, messages=msgs)


class RuleEngine:
    """hooks.Rules over a rules file and a review queue."""

    def __init__(self, settings: RulesConfig, queue: ReviewQueue):
        self.settings, self.queue = settings, queue
        self.matchers = [Matcher(r) for r in load_rules(settings.file).rules]
        self.inputs = [m for m in self.matchers if m.rule.stage in ("input", "both")]
        self.outputs = [m for m in self.matchers if m.rule.stage in ("output", "both")]
        self.output_changes = any(m.rule.action != "review" or m.rule.review == "hold" for m in self.outputs)

    def screen(self, principal: Principal, prompt: Prompt, record: AuditRecord) -> Screen:
        text, instructions, flags = input_text(prompt), [], []
        for m in self.inputs:
            if not m.fires(text):
                continue
            _note(record, m.rule.name)
            if m.rule.action in ("refuse", "answer"):
                return Screen(prompt, (m.rule.message, REFUSAL if m.rule.action == "refuse" else "stop"))
            if m.rule.action == "instruct":
                instructions.append(m.rule.message)
            else:
                flags.append(m.rule)
        if instructions:
            prompt = _instruct(prompt, instructions)
        return RuledScreen(self, prompt, text, principal, flags)


def _note(record: AuditRecord, name: str) -> None:
    fired = record.detail.get("rules")
    record.detail["rules"] = f"{fired},{name}" if fired else name


class RuledScreen(Screen):
    def __init__(self, engine: RuleEngine, prompt: Prompt, text: str, principal: Principal, flags: list[Rule]):
        super().__init__(prompt)
        self.engine, self.text, self.principal, self.flags = engine, text, principal, flags
        self.buffer = engine.output_changes or any(r.review == "hold" for r in flags)

    def decide(self, text: str, record: AuditRecord) -> tuple[str, str | None, dict | None]:
        """(text to deliver, finish_reason override, review info) for one finished choice."""
        flags = list(self.flags)
        for m in self.engine.outputs:
            if not m.fires(text):
                continue
            _note(record, m.rule.name)
            if m.rule.action in ("refuse", "answer"):
                return m.rule.message, REFUSAL if m.rule.action == "refuse" else "stop", None
            flags.append(m.rule)
        if not flags:
            return text, None, None
        hold = any(r.review == "hold" for r in flags)
        p = self.principal
        item = self.engine.queue.add(record.request_id, p.key_id or p.id, [r.name for r in flags],
                                     "hold" if hold else "deliver", self.text, text, subject=p.user or p.id)
        record.detail["review_items"] = ",".join(filter(None, [record.detail.get("review_items"), item]))
        review = {"status": "held" if hold else "delivered_flagged", "item_id": item}
        return (self.engine.settings.held_message, REFUSAL, review) if hold else (text, None, review)

    async def filter(self, events, run):
        texts: dict[int, str] = {}
        finished, total = 0, len(run.streams)
        async for index, ev in events:
            texts[index] = texts.get(index, "") + ev.text
            if not ev.finish_reason:
                if not self.buffer:
                    yield index, ev
                continue
            finished += 1
            final, reason, review = self.decide(texts[index], run.record)
            if review is not None:
                first = run.envelope.extra.setdefault("review", dict(review))
                if total > 1:
                    first.setdefault("item_ids", []).append(review["item_id"])
            if self.buffer:
                ev = Event(final, reason or ev.finish_reason, ev.prompt_tokens, ev.completion_tokens)
            yield index, ev
