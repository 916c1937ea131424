"""Generation tasks: exact match after answer extraction (GSM8K format), chat template, real generate path."""

import json

import pytest

import domaintune.benchmarks.scoring as scoring
from domaintune.benchmarks import load_task, score_task

ROWS = [{"question": "Tom has 70 apples and buys 2. How many?", "answer": "70 + 2 = 72\n#### 72"},
        {"question": "What is 3 + 3?", "answer": "3 + 3 = 6\n#### 6"},
        {"question": "What is 1,000 + 234?", "answer": "#### 1,234"}]


@pytest.fixture
def gsm(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return str(path)


def test_exact_match_after_extracting_the_final_number(gsm, monkeypatch):
    outputs = ["so the total is 72 apples", "3 + 3 = 5", "That makes $1,234.00"]
    seen = {}

    def fake_generate(model, tokenizer, prompts, max_new_tokens, until, batch_size, progress):
        seen.update(prompts=prompts, until=until)
        return outputs

    monkeypatch.setattr(scoring, "generate_until", fake_generate)
    task = load_task("gsm8k", data=gsm, shots=1)
    result = score_task(None, None, task)
    assert result.metrics == {"exact_match": pytest.approx(2 / 3)}  # 72 == 72, 5 != 6, 1234 == 1,234
    assert result.kind == "generation" and result.version == "1" and result.shots == 1
    first = seen["prompts"][0]
    assert first.endswith("Question: Tom has 70 apples and buys 2. How many?\nAnswer:")
    assert first.count("Question:") == 2 and "#### " in first  # one shot with its worked answer
    assert "Question:" in seen["until"]


def test_chat_template_wraps_the_prompt(gsm, tiny_model_dir):
    from transformers import AutoTokenizer

    task = load_task("gsm8k", data=gsm, shots=0)
    task.spec.chat_template = True
    prompts = scoring.contexts(task, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert prompts[0].startswith("<|im_start|>user\nQuestion: Tom has 70 apples")
    assert prompts[0].endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_real_generation_is_greedy_batched_and_cut_at_stops(gsm, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = ["Question: What is 3 + 3?\nAnswer:", "The bank charges a fee of"]
    batched = scoring.generate_until(model, tok, prompts, 6, ["\n\n"], batch_size=2)
    alone = [scoring.generate_until(model, tok, [p], 6, ["\n\n"], batch_size=1)[0] for p in prompts]
    assert batched == alone  # left padding does not change greedy outputs
    assert tok.padding_side == "right"  # restored
    task = load_task("gsm8k", data=gsm, shots=0)
    task.spec.generation.max_new_tokens = 4
    result = score_task(model, tok, task, batch_size=2)
    assert result.n == 3 and 0.0 <= result.metrics["exact_match"] <= 1.0


def test_unknown_extractor_is_a_config_error_naming_the_key(tmp_path, gsm):
    from domaintune.benchmarks.tasks import BUILTIN_DIR
    from domaintune.errors import ConfigError

    text = (BUILTIN_DIR / "gsm8k.yaml").read_text(encoding="utf-8").replace("extract: last_number",
                                                                             "extract: last_numbr")
    (tmp_path / "g.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="did you mean 'last_number'"):
        load_task(str(tmp_path / "g.yaml"), data=gsm)
