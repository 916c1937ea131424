"""domaintune.vocab and embedding training on the tiny random Llama: adding domain tokens,
mean-of-pieces initialisation (tied and untied lm_head), the loss right after extension, and
LoRA + trained embeddings through prepare_for_training -> save_trained -> load_trained.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domaintune.config import AdapterConfig, ModelConfig
from domaintune.errors import ConfigError
from domaintune.models import (
    load_model,
    load_tokenizer,
    load_trained,
    prepare_for_training,
    save_trained,
)
from domaintune.vocab import extend_tokenizer, resize_with_mean_init

# Each splits into several pieces with the fixture tokenizer (asserted below), one is Chinese.
NEW = ["EBITDA", "haircut_ratio", "跨境汇款"]
EXISTING = "Savings"  # already one entry of the fixture's BPE vocabulary
TEXT = "The EBITDA margin fell, so the haircut_ratio rose. 跨境汇款 fees are 15 USD. Savings accounts."
LORA = AdapterConfig(r=4, alpha=8, dropout=0.0, target_modules="all-linear")


# --------------------------------------------------------------------------- fixtures / helpers
@pytest.fixture(scope="module")
def untied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The fixture's architecture with a separate lm_head matrix, saved as a normal HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(ModelConfig(base=str(tiny_model_dir)))
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out = tmp_path_factory.mktemp("untied") / "model"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(params=["tied", "untied"])
def model_cfg(request, tiny_model_dir, untied_model_dir) -> ModelConfig:
    folder = tiny_model_dir if request.param == "tied" else untied_model_dir
    return ModelConfig(base=str(folder))


def is_tied(model) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


def extended(cfg: ModelConfig):
    """(base model, original tokenizer, extended tokenizer, added tokens), mean-initialised."""
    model, base_tok, tok = load_model(cfg), load_tokenizer(cfg), load_tokenizer(cfg)
    added = extend_tokenizer(tok, NEW)
    resize_with_mean_init(model, tok, added, base_tok)
    return model, base_tok, tok, added


def lm_loss(model, tokenizer, text: str = TEXT) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        return float(model.eval()(ids, labels=ids, use_cache=False).loss)


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(ids, use_cache=False).logits.float()


# --------------------------------------------------------------------------- extend_tokenizer
def test_new_tokens_get_new_ids_and_encode_as_one_id(tiny_model_dir):
    tok = load_tokenizer(ModelConfig(base=str(tiny_model_dir)))
    old_size = len(tok)
    assert all(len(tok(t, add_special_tokens=False).input_ids) > 1 for t in NEW)
    assert EXISTING in tok.get_vocab()

    added = extend_tokenizer(tok, [NEW[0], EXISTING, *NEW[1:]])
    assert added == NEW  # the token already in the vocabulary is skipped
    ids = tok.convert_tokens_to_ids(NEW)
    assert ids == list(range(old_size, old_size + len(NEW))) and len(tok) == old_size + len(NEW)
    for token, token_id in zip(NEW, ids):
        assert tok(token, add_special_tokens=False).input_ids == [token_id]
        assert token_id in tok(TEXT).input_ids
    # regular, not special: decoding for display keeps them
    assert all(t in tok.decode(tok(TEXT).input_ids, skip_special_tokens=True) for t in NEW)
    assert extend_tokenizer(tok, NEW) == [] and len(tok) == old_size + len(NEW)  # idempotent


def test_extension_is_deterministic(tiny_model_dir):
    cfg = ModelConfig(base=str(tiny_model_dir))
    a, b = load_tokenizer(cfg), load_tokenizer(cfg)
    extend_tokenizer(a, NEW)
    extend_tokenizer(b, NEW)
    assert a.convert_tokens_to_ids(NEW) == b.convert_tokens_to_ids(NEW)
    assert a(TEXT).input_ids == b(TEXT).input_ids


@pytest.mark.parametrize(("tokens", "expected"), [
    (["EBITDA", ""], ["model.new_tokens[1]"]),
    (["  \t", "EBITDA"], ["model.new_tokens[0]"]),
    (["EBITDA", "haircut", "EBITDA"], ["model.new_tokens[2]", "repeats model.new_tokens[0]"]),
    (["", "x", "x", " "], ["model.new_tokens[0]", "model.new_tokens[2]", "model.new_tokens[3]"]),
], ids=["empty", "whitespace", "duplicate", "all-problems-at-once"])
def test_bad_new_tokens_raise_config_error_naming_the_key(tiny_model_dir, tokens, expected):
    tok = load_tokenizer(ModelConfig(base=str(tiny_model_dir)))
    size = len(tok)
    with pytest.raises(ConfigError) as err:
        extend_tokenizer(tok, tokens)
    assert all(e in str(err.value) for e in expected), str(err.value)
    assert len(err.value.problems) == len([e for e in expected if e.startswith("model.")])
    assert len(tok) == size  # nothing half-added


# --------------------------------------------------------------------------- resize_with_mean_init
def test_new_rows_are_the_mean_of_their_pieces(model_cfg):
    model, base_tok = load_model(model_cfg), load_tokenizer(model_cfg)
    untied = not is_tied(model)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()

    tok = load_tokenizer(model_cfg)
    added = extend_tokenizer(tok, NEW)
    resize_with_mean_init(model, tok, added, base_tok)

    new_in, new_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    # exactly the tokenizer's size, not padded to a multiple
    assert new_in.shape[0] == new_out.shape[0] == len(tok) == model.config.vocab_size
    assert is_tied(model) != untied  # resizing keeps the tie (or its absence)
    assert torch.equal(new_in[: len(old_in)], old_in)
    assert torch.equal(new_out[: len(old_out)], old_out)
    for token in added:
        row = tok.convert_tokens_to_ids(token)
        pieces = base_tok(token, add_special_tokens=False).input_ids
        torch.testing.assert_close(new_in[row], old_in[pieces].mean(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(new_out[row], old_out[pieces].mean(0), atol=1e-6, rtol=0)
    if untied:  # lm_head rows come from lm_head's own pieces, not from the input embedding
        assert not torch.allclose(new_out[len(old_out):], new_in[len(old_in):])


def test_spare_rows_are_used_not_shrunk(tiny_model_dir):
    """Checkpoints with more rows than tokens (padded vocabularies) keep their size."""
    cfg = ModelConfig(base=str(tiny_model_dir))
    model, base_tok, tok = load_model(cfg), load_tokenizer(cfg), load_tokenizer(cfg)
    model.resize_token_embeddings(len(tok) + 16, mean_resizing=False)
    old = model.get_input_embeddings().weight.detach().clone()
    added = extend_tokenizer(tok, NEW)
    resize_with_mean_init(model, tok, added, base_tok)
    weight = model.get_input_embeddings().weight
    assert weight.shape == old.shape
    row = tok.convert_tokens_to_ids(NEW[0])
    pieces = base_tok(NEW[0], add_special_tokens=False).input_ids
    torch.testing.assert_close(weight[row], old[pieces].mean(0), atol=1e-6, rtol=0)


def test_base_tokenizer_must_be_the_original(tiny_model_dir):
    cfg = ModelConfig(base=str(tiny_model_dir))
    model, tok = load_model(cfg), load_tokenizer(cfg)
    added = extend_tokenizer(tok, NEW)
    with pytest.raises(ValueError, match="original tokenizer"):
        resize_with_mean_init(model, tok, added, tok)
    extended_copy = load_tokenizer(cfg)
    extend_tokenizer(extended_copy, NEW)
    with pytest.raises(ValueError, match="base_tokenizer already knows"):
        resize_with_mean_init(model, tok, added, extended_copy)


def test_loss_right_after_extension_does_not_jump(model_cfg):
    """The new tokens barely move the loss; the same rows initialised carelessly do.

    The random tiny model predicts almost uniformly, so "close to before" alone would be weak:
    the control (new rows drawn like a fresh nn.Embedding, N(0, 1), ~50x this model's scale)
    shows the bound really catches a spike.
    """
    base_model, base_tok = load_model(model_cfg), load_tokenizer(model_cfg)
    before = lm_loss(base_model, base_tok)
    model, _, tok, added = extended(model_cfg)
    after = lm_loss(model, tok)
    assert torch.isfinite(torch.tensor(after))
    assert abs(after - before) < 0.25, (before, after)

    rows = tok.convert_tokens_to_ids(added)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in {id(w): w for w in (model.get_input_embeddings().weight,
                                          model.get_output_embeddings().weight)}.values():
            weight[rows] = torch.randn(len(rows), weight.shape[1], generator=generator)
    assert lm_loss(model, tok) > before + 1.0


# --------------------------------------------------------------------------- training the embeddings
def test_lora_with_train_embeddings_trains_both_and_round_trips(model_cfg, tmp_path):
    model, _, tok, added = extended(model_cfg)
    tied = is_tied(model)
    vocab, hidden = model.get_input_embeddings().weight.shape
    model = prepare_for_training(model, "lora", LORA, train_embeddings=True)

    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    assert inp.weight.requires_grad and out.weight.requires_grad
    assert (out.weight is inp.weight) == tied  # peft keeps a tied model tied (ensure_weight_tying)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    lora_count = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    embed_count = vocab * hidden * (1 if tied else 2)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora_count + embed_count

    ids = tok(TEXT, return_tensors="pt").input_ids
    model.train()(ids, labels=ids, use_cache=False).loss.backward()
    new_rows = tok.convert_tokens_to_ids(added)
    assert inp.weight.grad[new_rows].abs().sum(dim=1).min() > 0  # the new tokens' rows learn

    with torch.no_grad():  # a step's worth of change in every trainable tensor
        generator = torch.Generator().manual_seed(2)
        for _name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    trained = logits_of(model, ids)

    save_trained(model, tok, tmp_path / "adapter")
    reloaded = load_trained(tmp_path / "adapter", base=model_cfg).model
    saved_tok = load_tokenizer(ModelConfig(base=str(tmp_path / "adapter")))
    assert saved_tok(TEXT).input_ids == ids[0].tolist()
    assert is_tied(reloaded) == tied
    torch.testing.assert_close(logits_of(reloaded, ids), trained, atol=1e-5, rtol=0)


def test_lora_without_train_embeddings_still_reloads_an_extended_model(tiny_model_dir, tmp_path):
    """New tokens with frozen (mean-initialised) rows: peft saves the resized embedding itself."""
    cfg = ModelConfig(base=str(tiny_model_dir))
    model, _, tok, _ = extended(cfg)
    model = prepare_for_training(model, "lora", LORA)
    assert not model.get_input_embeddings().weight.requires_grad
    assert not any("modules_to_save" in n for n, _ in model.named_parameters())
    ids = tok(TEXT, return_tensors="pt").input_ids
    save_trained(model, tok, tmp_path / "adapter")
    reloaded = load_trained(tmp_path / "adapter", base=cfg).model
    torch.testing.assert_close(logits_of(reloaded, ids), logits_of(model, ids), atol=1e-5, rtol=0)


def test_full_with_train_embeddings_trains_everything(tiny_model_dir):
    model, _, _, _ = extended(ModelConfig(base=str(tiny_model_dir)))
    model = prepare_for_training(model, "full", LORA, train_embeddings=True)
    assert all(p.requires_grad for p in model.parameters())
    assert is_tied(model)
