from domaintune.sft.escalation import meets, run_recipe


def _skip_qlora(method):
    return "needs a CUDA GPU" if method == "qlora" else None


def test_escalates_until_the_target_is_met_and_records_every_attempt():
    scores = {"lora": 2.0, "full": 1.2}
    trained = []

    def train(method):
        trained.append(method)
        return {"val_loss": scores[method], "steps": 2}

    chosen, attempts = run_recipe(["qlora", "lora", "full"], train, "val_loss", 1.5, _skip_qlora)
    assert chosen == "full" and trained == ["lora", "full"]
    assert [(a["method"], a["status"]) for a in attempts] == [("qlora", "skipped"), ("lora", "missed"),
                                                              ("full", "met")]
    assert attempts[0]["reason"] == "needs a CUDA GPU" and attempts[1]["val_loss"] == 2.0


def test_stops_at_the_first_method_that_is_enough():
    chosen, attempts = run_recipe(["lora", "full"], lambda m: {"val_accuracy": 0.9}, "val_accuracy", 0.5,
                                  lambda m: None)
    assert chosen == "lora" and len(attempts) == 1


def test_when_all_miss_the_best_is_kept_and_marked():
    chosen, attempts = run_recipe(["lora", "full"], lambda m: {"val_loss": {"lora": 3.0, "full": 2.5}[m]},
                                  "val_loss", 0.1, lambda m: None)
    assert chosen == "full" and attempts[1]["chosen_as_best_of_missed"]


def test_direction_of_each_metric():
    assert meets("val_loss", 1.0, 1.5) and not meets("val_loss", 2.0, 1.5)
    assert meets("val_accuracy", 0.6, 0.5) and not meets("val_accuracy", None, 0.5)
