"""`domaintune validate` checks every benchmark task entry (eval.tasks and train.auto_eval.tasks)."""


def test_validate_reports_every_broken_task_entry(tmp_path):
    from domaintune.checks import check_tasks
    from domaintune.config import AutoEvalConfig, Config, EvalTaskConfig

    cfg = Config.model_validate({
        "name": "t", "model": {"base": "x/y"}, "data": {"sources": [{"path": "d", "stream": "domain"}]},
        "mix": {"mixture": {"domain": 1}, "tokens": 1000},
        "eval": {"tasks": [{"task": "mmluu"}, {"task": "ceval"}]},
        "train": {"auto_eval": AutoEvalConfig(every=1, tasks=[EvalTaskConfig(task=str(tmp_path / "no.yaml"))])}})
    problems = check_tasks(cfg)
    assert len(problems) == 3
    assert problems[0].startswith("eval.tasks[0] (mmluu): ") and "did you mean 'mmlu'" in problems[0]
    assert problems[1].startswith("eval.tasks[1] (ceval): ") and "no data path" in problems[1]
    assert problems[2].startswith("train.auto_eval.tasks[0]") and "task file not found" in problems[2]
