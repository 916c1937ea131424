import pickle
import random

import numpy as np
import pytest
import torch

from domaintune.errors import CheckpointError
from domaintune.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    verify,
)
from domaintune.training.resume import OwnCheckpoints, newest_intact


class Evil:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def _setup():
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt, sched = _setup()
    path = save_checkpoint(tmp_path, 3, model, opt, sched, {"k": 1}, keep_last=2)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    model2, opt2, sched2 = torch.nn.Linear(4, 2), None, None
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0)
    meta = load_checkpoint(path, model2, opt2, sched2)
    assert meta["step"] == 3 and meta["k"] == 1
    assert torch.equal(model.weight, model2.weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # RNG continues identically


def test_retention_keeps_the_newest(tmp_path):
    model, opt, sched = _setup()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, opt, sched, {}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]


def test_retention_also_keeps_the_best_heldout_loss(tmp_path):
    model, opt, sched = _setup()
    for step, loss in ((1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, None)):
        save_checkpoint(tmp_path, step, model, opt, sched, {"val_loss": loss}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000004", "step-00000005"]


def test_corrupt_newest_is_skipped_with_a_warning(tmp_path):
    model, opt, sched = _setup()
    save_checkpoint(tmp_path, 1, model, opt, sched, {}, keep_last=3)
    newest = save_checkpoint(tmp_path, 2, model, opt, sched, {}, keep_last=3)
    (newest / "scheduler.pt").write_bytes(b"x")
    warnings = []
    assert newest_intact(OwnCheckpoints(tmp_path), warnings.append).name == "step-00000001"
    assert "scheduler.pt does not match its checksum" in warnings[0]
    assert verify(newest) is not None


def test_pickled_objects_are_refused(tmp_path):
    model, opt, sched = _setup()
    path = save_checkpoint(tmp_path, 1, model, opt, sched, {}, keep_last=1)
    state = rng_state()
    state["extra"] = Evil()
    with (path / "rng.pt").open("wb") as fh:
        pickle.dump(state, fh)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path, model, opt, sched)


def test_rng_state_survives_weights_only(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "r.pt")
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True))


def _hf_checkpoint(path):
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
    torch.save({"state": {}}, path / "optimizer.pt")


@pytest.mark.parametrize("kind", ["own", "hf"])
def test_resume_never_moves_old_checkpoints_aside_and_says_where(tmp_path, kind):
    from domaintune.training.resume import HFCheckpoints, ResumePolicy, choose_checkpoint

    root = tmp_path / "checkpoints"
    if kind == "own":
        model, opt, sched = _setup()
        save_checkpoint(root, 1, model, opt, sched, {"resume_config": {"a": 1}}, keep_last=2)
        store = OwnCheckpoints(root)
    else:
        _hf_checkpoint(root / "checkpoint-1")
        store = HFCheckpoints(root)
    warnings = []
    assert choose_checkpoint(store, {"a": 1}, ResumePolicy(resume="never", section="sft"), warnings.append) is None
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("checkpoints.prev-")]
    assert len(kept) == 1 and len(list(kept[0].iterdir())) >= 1  # nothing deleted
    assert "sft.checkpoint.resume=never" in warnings[0] and str(kept[0]) in warnings[0]
    assert store.list() == []


def test_a_corrupt_hf_settings_file_is_one_clear_error(tmp_path):
    from domaintune.training.resume import HFCheckpoints, ResumePolicy, choose_checkpoint

    root = tmp_path / "checkpoints"
    _hf_checkpoint(root / "checkpoint-2")
    (root / "resume_key.json").write_text('{"sett')
    with pytest.raises(CheckpointError, match=r"resume_key\.json is unreadable .*delete .*resume_key\.json"):
        choose_checkpoint(HFCheckpoints(root), {"a": 1}, ResumePolicy(), lambda m: None)
