"""The ensemble's experts chosen on validation (issue 27): an expert at chance whose absence does not
lower the product's validation accuracy is left out; an informative one never is -- on injected
log-probabilities (nothing trained)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmcore import Features
from mmcore_plugins.autofit.experts import (
    MAX_SHARPEN,
    MIN_ROWS,
    ExpertOutputs,
    at_chance,
    choose_experts,
    expert_outputs,
    sharpening,
    split_metrics,
)
from mmcore_plugins.heads.ensemble import UnimodalEnsembleHead


def _log_probs(targets: torch.Tensor, right: float, classes: int, seed: int, sure: float = 3.0) -> torch.Tensor:
    """An expert right on a ``right`` share of the rows (a random wrong class elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    n = len(targets)
    hit = torch.rand(n, generator=g) < right
    wrong = (targets + torch.randint(1, classes, (n,), generator=g)) % classes
    guess = torch.where(hit, targets, wrong)
    logits = torch.randn(n, classes, generator=g) * 0.5
    logits[torch.arange(n), guess] += sure
    return logits.log_softmax(-1)


def _outputs(rights: dict[str, float], n: int = 600, classes: int = 10, sure: dict[str, float] | None = None) -> ExpertOutputs:
    targets = torch.arange(n) % classes
    log_probs = {s: _log_probs(targets, r, classes, seed=k, sure=(sure or {}).get(s, 3.0)) for k, (s, r) in enumerate(rights.items())}
    return ExpertOutputs(log_probs=log_probs, present={s: torch.ones(n, dtype=torch.bool) for s in rights}, targets=targets)


def test_an_expert_at_chance_that_costs_accuracy_is_left_out_and_said_why():
    # "hint" is right on a tenth of the rows (chance for 10 classes) and loud: its votes flip rows.
    outputs = _outputs({"image": 0.7, "audio": 0.6, "hint": 0.1}, sure={"hint": 6.0})
    choice = choose_experts(outputs)
    assert choice.dropped == ["hint"]
    assert choice.weights["hint"] == 0.0 and all(1.0 <= choice.weights[s] <= MAX_SHARPEN for s in ("image", "audio"))
    assert choice.accuracy_chosen >= choice.accuracy_all
    assert choice.accuracy_chosen == pytest.approx(outputs.accuracy(choice.weights))
    assert "hint left out" in choice.why and choice.to_json()["dropped"] == ["hint"]


def test_an_informative_expert_is_kept_even_when_the_others_make_it_look_redundant_on_validation():
    # "audio" is nearly perfect on validation (the training speakers); "image" is weaker but clearly
    # above chance: it must keep its vote for rows whose audio shifts at test.
    outputs = _outputs({"image": 0.5, "audio": 0.99})
    choice = choose_experts(outputs)
    assert choice.dropped == [] and all(1.0 <= w <= MAX_SHARPEN for w in choice.weights.values())
    assert "every expert kept" in choice.why


def test_an_expert_at_chance_is_kept_when_leaving_it_out_lowers_validation_accuracy():
    # Two classes, 100 rows. "a" is confidently right on 80 rows and narrowly wrong on 20; "b" is
    # worse than chance alone (right on those 20 only) yet breaks exactly those ties in the product.
    targets = torch.tensor([0, 1] * 50)
    unsure = torch.arange(100) < 20
    right, other = targets, 1 - targets

    def probs(p_right: torch.Tensor) -> torch.Tensor:
        out = torch.empty(100, 2)
        out[torch.arange(100), right] = p_right
        out[torch.arange(100), other] = 1 - p_right
        return out.log()

    a = probs(torch.where(unsure, 0.45, 0.95))
    b = probs(torch.where(unsure, 0.8, 0.4))
    outputs = ExpertOutputs({"a": a, "b": b}, {s: torch.ones(100, dtype=torch.bool) for s in "ab"}, targets)
    accuracy, chance, rows = outputs.alone("b")
    assert at_chance(accuracy, chance, rows) and outputs.accuracy({"a": 1.0, "b": 0.0}) < outputs.accuracy({"a": 1.0, "b": 1.0})
    assert choose_experts(outputs).dropped == []


def test_at_least_one_expert_always_votes_and_few_rows_are_never_evidence():
    outputs = _outputs({"a": 0.1, "b": 0.1})
    choice = choose_experts(outputs)
    assert sum(w > 0 for w in choice.weights.values()) >= 1
    assert not at_chance(0.1, 0.1, MIN_ROWS - 1)
    assert at_chance(0.11, 0.1, 1000) and not at_chance(0.2, 0.1, 1000)


def test_absent_modalities_count_only_where_present_and_chance_is_the_commonest_class():
    targets = torch.tensor([0, 0, 0, 1] * 10)
    log_probs = torch.log(torch.tensor([[0.9, 0.1]] * 40))  # always answers class 0
    outputs = ExpertOutputs({"a": log_probs}, {"a": torch.tensor([True, False] * 20)}, targets)
    accuracy, chance, rows = outputs.alone("a")
    assert rows == 20 and accuracy == pytest.approx(chance)
    with pytest.raises(ValueError):
        choose_experts(ExpertOutputs({}, {}, torch.zeros(0, dtype=torch.long)))


def _calibrated(targets: torch.Tensor, right: float, classes: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """An expert right on a ``right`` share of the rows whose probabilities are calibrated (its top
    probability is its accuracy), then flattened: ``scale`` < 1 multiplies its log-probabilities --
    what training on augmented inputs does to an expert judged on clean ones."""
    g = torch.Generator().manual_seed(seed)
    n = len(targets)
    hit = torch.rand(n, generator=g) < right
    wrong = (targets + torch.randint(1, classes, (n,), generator=g)) % classes
    guess = torch.where(hit, targets, wrong)
    probs = torch.full((n, classes), (1 - right) / (classes - 1))
    probs[torch.arange(n), guess] = right
    return (scale * probs.log()).log_softmax(-1)


def test_an_under_confident_expert_is_sharpened_by_its_own_validation_calibration_and_a_calibrated_one_is_not():
    # Issue 27's products: the augmented photo expert is right more often than its votes say; the
    # uniform product lets the weaker text expert outvote it. Calibration sharpens only the photo.
    targets = torch.arange(2000) % 10
    photo = _calibrated(targets, 0.85, 10, seed=0, scale=0.6)
    text = _calibrated(targets, 0.75, 10, seed=1)
    outputs = ExpertOutputs({"photo": photo, "text": text}, {s: torch.ones(2000, dtype=torch.bool) for s in ("photo", "text")},
                            targets)
    assert sharpening(text, targets) == pytest.approx(1.0, abs=0.02)
    assert sharpening(photo, targets, most=5.0) == pytest.approx(1 / 0.6, abs=0.1)  # the flattening undone
    choice = choose_experts(outputs)
    assert choice.weights["photo"] == MAX_SHARPEN and choice.weights["text"] == pytest.approx(1.0, abs=0.02)
    assert choice.changed and choice.dropped == [] and "photo x1.30" in choice.why
    assert choice.accuracy_chosen >= choice.accuracy_all


def test_sharpening_is_bounded_never_flattens_and_needs_enough_rows():
    # A speaker-bound audio expert: right on every val row yet unsure -- its NLL would sharpen it
    # without limit (on the digits' test speakers it was at 40-49%): at most MAX_SHARPEN.
    targets = torch.arange(300) % 10
    sure_and_right = _calibrated(targets, 1.0 - 1e-6, 10, seed=0, scale=0.2)
    assert sharpening(sure_and_right, targets) == MAX_SHARPEN
    # An over-confident expert is left as it is (1.0): calibration here only sharpens.
    loud = _calibrated(targets, 0.6, 10, seed=1, scale=3.0)
    assert sharpening(loud, targets) == 1.0
    assert sharpening(sure_and_right[: MIN_ROWS - 1], targets[: MIN_ROWS - 1]) == 1.0


def test_sharpening_that_would_lower_the_products_validation_accuracy_is_not_applied():
    # Two classes, 200 rows. "a" is right and unsure (0.7) on 160 rows -- calibration would sharpen
    # it -- and narrowly wrong (0.4) on 40, where "b" is narrowly right (0.62) and breaks the tie;
    # elsewhere "b" is a coin toss at 0.65 / 0.35 (over-confident: not sharpened).
    targets = torch.tensor([0, 1] * 100)
    tie, half = torch.arange(200) < 40, torch.arange(200) % 4 < 2

    def log_probs(p_right: torch.Tensor) -> torch.Tensor:
        out = torch.empty(200, 2)
        out[torch.arange(200), targets] = p_right
        out[torch.arange(200), 1 - targets] = 1 - p_right
        return out.log()

    a = log_probs(torch.where(tie, 0.4, 0.7))
    b = log_probs(torch.where(tie, 0.62, torch.where(half, 0.65, 0.35)))
    outputs = ExpertOutputs({"a": a, "b": b}, {s: torch.ones(200, dtype=torch.bool) for s in "ab"}, targets)
    assert sharpening(a, targets) == MAX_SHARPEN and sharpening(b, targets) == 1.0
    assert outputs.accuracy({"a": MAX_SHARPEN}) < outputs.accuracy({}) == 1.0
    choice = choose_experts(outputs)
    assert choice.weights == {"a": 1.0, "b": 1.0} and not choice.changed and "not sharpened" in choice.why


def test_the_head_weighs_its_experts_as_the_choice_says():
    torch.manual_seed(0)
    head = UnimodalEnsembleHead(input_dim=8, num_classes=3, input_dims={"a": 4, "b": 4}, expert_weights={"b": 0.0}).eval()
    features = {"a": Features.from_pooled(torch.randn(5, 4), torch.ones(5, dtype=torch.bool)),
                "b": Features.from_pooled(torch.randn(5, 4), torch.ones(5, dtype=torch.bool))}
    fused = Features.from_pooled(torch.randn(5, 8), torch.ones(5, dtype=torch.bool))
    out = head(fused, None, features)
    torch.testing.assert_close(out.logits, head.experts["a"](features["a"].pooled).log_softmax(-1))
    # The experts the fit measures are the head's own, and its metrics score the weighted product.
    outputs = ExpertOutputs({s: head.experts[s](features[s].pooled).log_softmax(-1) for s in "ab"},
                            {s: features[s].present for s in "ab"}, out.predictions)
    assert split_metrics(head_model(head), outputs, {"a": 1.0, "b": 0.0})["accuracy"] == 1.0


def head_model(head):
    """The part of a model ``split_metrics`` reads: ``model.head``."""
    return type("M", (), {"head": head})()


@pytest.mark.parametrize("weights", [{"c": 1.0}, {"a": -1.0}, {"a": float("nan")}, {"a": True}])
def test_the_head_refuses_bad_expert_weights(weights):
    with pytest.raises(ValueError, match="expert_weights"):
        UnimodalEnsembleHead(input_dim=8, num_classes=3, input_dims={"a": 4, "b": 4}, expert_weights=weights)


def test_expert_outputs_reads_each_expert_of_a_model_once(monkeypatch):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = UnimodalEnsembleHead(input_dim=4, num_classes=2, input_dims={"x": 4, "y": 4})

        def encode(self, inputs):
            return {s: Features.from_pooled(inputs[s]["v"], inputs[s]["present"]) for s in ("x", "y")}

    model = Model()
    batch = {"inputs": {s: {"v": torch.randn(6, 4), "present": torch.tensor([True] * 5 + [s == "x"])} for s in ("x", "y")},
             "targets": torch.tensor([0, 1, 0, 1, 0, 1])}
    import mmcore.data

    monkeypatch.setattr(mmcore.data, "make_dataloader", lambda dataset, model, batch_size: [batch])
    out = expert_outputs(model, dataset=None)
    assert set(out.log_probs) == {"x", "y"} and out.log_probs["x"].shape == (6, 2)
    assert out.present["y"].tolist() == [True] * 5 + [False] and out.targets.tolist() == [0, 1, 0, 1, 0, 1]
    assert model.training  # put back as it was


def test_fit_leaves_out_an_expert_at_chance_and_the_saved_model_predicts_as_the_summary_says(tmp_path):
    """End to end: a text column that names the class and a number that is pure noise. The number's
    expert is at chance on val and costs nothing to drop: fit leaves it out (and sharpens the text's
    expert as far as its val calibration asks), and the best checkpoint, config.yaml and the Predictor
    all carry the choice (its test score is the summary's)."""
    import json

    import numpy as np
    from autofit_helpers import write_jsonl

    import mmcore

    rng = np.random.default_rng(0)

    def rows(n: int, split: str) -> list[dict]:
        out = []
        for _ in range(n):
            label = str(rng.choice(["alpha", "beta", "gamma"]))
            filler = " ".join(rng.choice(["the", "a", "one", "some", "new", "old", "big", "small"], size=3))
            out.append({"note": f"{filler} {label} item", "reading": round(float(rng.normal()), 3), "y": label, "split": split})
        return out

    table = write_jsonl(tmp_path / "t.jsonl", rows(150, "train") + rows(60, "val") + rows(30, "test"))
    predictor = mmcore.fit(table, target="y", time_limit="10m", preset="fast", run_dir=tmp_path / "run", verbose=False,
                           max_epochs=3)
    summary = json.loads((tmp_path / "run" / "fit_summary.json").read_text())
    experts = summary["experts"]
    assert set(experts["val_by_expert"]) == {"note", "tabular"}
    phases = [p["phase"] for p in summary["time"]["phases"]]
    assert phases.index("experts") < phases.index("test"), "chosen before the one test pass, which scores the choice"
    assert experts["dropped"] == ["tabular"], experts["why"]
    # the text expert may also be sharpened by its val calibration: whatever was chosen is what is saved
    chosen = {s: w for s, w in experts["weights"].items() if w != 1.0}
    assert chosen["tabular"] == 0.0 and 1.0 <= experts["weights"]["note"] <= MAX_SHARPEN
    spec = json.loads((tmp_path / "run" / "best" / "model.json").read_text())["spec"]
    assert spec["head"]["expert_weights"] == chosen
    from mmcore.yamlio import load_yaml_file

    assert load_yaml_file(tmp_path / "run" / "config.yaml")["model"]["head"]["expert_weights"] == chosen
    assert predictor.model.head.expert_weights == experts["weights"]
    assert predictor.evaluate(table)["accuracy"] is not None
    test_rows = [r for r in json.loads("[" + ",".join((tmp_path / "t.jsonl").read_text().split("\n")[:-1]) + "]")
                 if r["split"] == "test"]
    predictions = predictor.predict([{k: r[k] for k in ("note", "reading")} for r in test_rows])
    accuracy = np.mean([p == r["y"] for p, r in zip(predictions, test_rows, strict=True)])
    assert accuracy == pytest.approx(summary["test"]["accuracy"])
    again = mmcore.Predictor.load(tmp_path / "run")
    assert again.predict([{k: r[k] for k in ("note", "reading")} for r in test_rows]).equals(predictions)
