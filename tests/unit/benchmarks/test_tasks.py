"""Task definitions: YAML validation naming the key, local data loading, subjects/limit, few-shot."""

import json

import pytest

from domaintune.benchmarks.tasks import builtin_tasks, load_task, select
from domaintune.errors import ConfigError, DataError

TASK = """
name: toy
version: 2
kind: multiple_choice
data: {path: toy.jsonl}
fields: {question: q, choices: [a, b, c, d], answer: gold, subject: topic}
prompt:
  description: "About {subject}.\\n\\n"
  template: "{question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer:"
fewshot: {shots: 2, seed: 7}
"""


def _rows(n: int, subjects=("math", "law")):
    return [{"q": f"question {i}", "a": "w", "b": "x", "c": "y", "d": "z", "gold": "ABCD"[i % 4],
             "topic": subjects[i % len(subjects)]} for i in range(n)]


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy.yaml").write_text(TASK, encoding="utf-8")
    rows = _rows(12) + [{"q": "question", "a": "a", "b": "b", "c": "c", "d": "d", "gold": "answer", "topic": "x"}]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path / "toy.yaml"


def test_builtin_tasks_are_shipped():
    assert {"mmlu", "ceval", "cmmlu", "gsm8k", "financeiq"} <= set(builtin_tasks())


def test_loads_items_and_reports_dropped_rows(toy):
    task = load_task(str(toy))
    assert len(task.items) == 12 and task.spec.version == "2"
    assert task.dropped == ["toy.jsonl:13: answer 'answer' is not one of A, B, C, D"]
    assert task.items[1].gold == 1 and task.items[1].subject == "law"


def test_prompt_has_description_shots_and_question(toy):
    task = load_task(str(toy))
    item = task.items[0]
    context = task.context(item)
    assert context.startswith("About math.\n\n") and context.endswith("question 0\nA. w\nB. x\nC. y\nD. z\nAnswer:")
    assert context.count("Answer:") == 3  # two shots with their answers, then the question
    shots = task.pick_shots(item)
    assert all(s.subject == "math" and s.id != item.id for s in shots)
    assert f"Answer: {'ABCD'[shots[0].gold]}\n\n" in context


def test_few_shot_selection_is_deterministic_and_seeded(toy):
    a, b = load_task(str(toy)), load_task(str(toy))
    assert [[s.id for s in a.pick_shots(i)] for i in a.items] == [[s.id for s in b.pick_shots(i)] for i in b.items]
    b.spec.fewshot.seed = 8
    assert [[s.id for s in a.pick_shots(i)] for i in a.items] != [[s.id for s in b.pick_shots(i)] for i in b.items]
    assert load_task(str(toy), shots=0).context(a.items[0]).count("Answer:") == 1


def test_subjects_and_balanced_limit(toy):
    task = load_task(str(toy), subjects=["law"], limit=3)
    assert [i.subject for i in task.items] == ["law"] * 3
    items = load_task(str(toy)).items
    assert [i.subject for i in select(items, None, 4)] == ["math", "law", "math", "law"]
    with pytest.raises(ConfigError, match="subject 'lawz' not in the task data \\(did you mean 'law'\\?\\)"):
        load_task(str(toy), subjects=["lawz"])


@pytest.mark.parametrize("bad, expected", [
    ("promt:", "promt: unknown key (did you mean 'prompt'?)"),
    ("kind: multiple_choice", None),
])
def test_yaml_errors_name_the_key(tmp_path, bad, expected):
    text = TASK.replace("prompt:", bad, 1) if bad == "promt:" else TASK.replace("kind: multiple_choice", "kind: mc")
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_task(str(tmp_path / "bad.yaml"))
    message = str(err.value)
    assert str(tmp_path / "bad.yaml") in message
    assert (expected in message) if expected else ("kind:" in message and "multiple_choice" in message)


def test_nested_unknown_key_and_missing_choices(tmp_path):
    text = TASK.replace("fields: {question: q, choices: [a, b, c, d],", "fields: {question: q, choises: [a],")
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_task(str(tmp_path / "bad.yaml"))
    assert "fields.choises: unknown key (did you mean 'choices'?)" in str(err.value)


def test_missing_field_names_file_line_and_fix(toy):
    (toy.parent / "toy.jsonl").write_text(json.dumps({"question": "q"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"/toy.jsonl:1: no field 'a' \(row has question\); map it in the task "
                                        r"YAML under `fields`"):
        load_task(str(toy))


def test_builtin_without_data_path_asks_for_local_copy():
    with pytest.raises(ConfigError, match="no data path"):
        load_task("ceval")
    with pytest.raises(ConfigError, match="unknown task 'mmluu' \\(did you mean 'mmlu'\\?\\)"):
        load_task("mmluu")


def test_csv_folder_with_subject_from_filename(tmp_path):
    folder = tmp_path / "dev"
    folder.mkdir()
    for subject in ("law", "art"):
        (folder / f"{subject}_dev.csv").write_text("id,question,A,B,C,D,answer,explanation\n"
                                                    "0,\"问题, 一\",甲,乙,丙,丁,C,因为\n", encoding="utf-8")
    task = load_task("ceval", data=str(folder))
    assert [(i.subject, i.question, i.gold) for i in task.items] == [("art", "问题, 一", 2), ("law", "问题, 一", 2)]
    assert task.context(task.items[0]).endswith("问题, 一\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：")
