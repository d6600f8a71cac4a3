"""G-Blend: the weighted loss (fused + one uni-modal loss per modality over the samples that have it)
and the weights from generalisation gained over overfitting gained squared -- against hand computations."""

import pytest
import torch.nn.functional as F
from balancer_helpers import SLOTS, FakeTrainer, by_hand_logits, forward, tiny_model, tiny_samples

from mmcore.data import SampleDataset
from mmcore_plugins.balancers._common import component_losses
from mmcore_plugins.balancers.gblend import OVERFIT_FLOOR, GradientBlending, blend_weights


def test_weights_are_generalisation_over_overfitting_squared():
    previous = {"fused": (0.50, 0.80), "a": (0.90, 1.00), "b": (0.60, 0.90)}
    current = {"fused": (0.30, 0.70), "a": (0.80, 0.90), "b": (0.40, 0.95)}
    w = blend_weights(previous, current, dict.fromkeys(previous, 1 / 3))
    raw = {"fused": 0.1 / (0.4 - 0.3) ** 2,  # G = 0.8 - 0.7, O: 0.30 -> 0.40
           "a": 0.1 / max((0.1 - 0.1) ** 2, OVERFIT_FLOOR),  # no overfitting gained: the floor
           "b": 0.0}  # validation loss rose: no weight
    total = sum(raw.values())
    assert w == pytest.approx({k: v / total for k, v in raw.items()})
    assert sum(w.values()) == pytest.approx(1.0)
    # Nothing gained anywhere: the weights stay; an objective measured in only one round gets 0 this round.
    same = dict.fromkeys(previous, 1 / 3)
    assert blend_weights(previous, previous, same) == same
    w = blend_weights(previous, {**current, "a": (None, None)}, same)
    assert w["a"] == 0.0 and w["fused"] > 0


def test_the_loss_term_is_the_weighted_sum_by_hand():
    model = tiny_model()
    batch, out = forward(model, tiny_samples())
    trainer = FakeTrainer(model)
    balancer = GradientBlending()
    balancer.mmcore_train_start(trainer)
    balancer.weights = {"fused": 0.4, "a": 0.3, "b": 0.2, "c": 0.1}
    term = balancer.mmcore_train_loss(trainer, batch, out)["gblend"]
    unimodal = {}
    for slot in SLOTS:
        logits, rows = by_hand_logits(model, out, slot)
        unimodal[slot] = float(F.cross_entropy(logits, batch["targets"][rows]))
    fused = float(out.loss.detach())
    want = 0.4 * fused + 0.3 * unimodal["a"] + 0.2 * unimodal["b"] + 0.1 * unimodal["c"]
    assert float((out.loss + term).detach()) == pytest.approx(want, rel=1e-5), "the backpropagated loss is sum_k w_k L_k"
    assert term.requires_grad
    sums = balancer.train_losses.reduce(trainer)
    assert sums["c"] == pytest.approx((unimodal["c"] * 4, 4.0), rel=1e-5), "c: only the 4 samples that have it"


def test_component_losses_on_a_split_and_the_epoch_update():
    model = tiny_model()
    samples = tiny_samples(12, seed=1)
    model.fit_processors(samples)
    data = SampleDataset(samples)
    trainer = FakeTrainer(model, datasets={"val": data})
    losses = component_losses(trainer, data, list(SLOTS))
    model.eval()
    batch, out = forward(model, samples, fit=False)
    assert losses["fused"] == pytest.approx(float(out.loss), rel=1e-5)
    for slot in SLOTS:
        logits, rows = by_hand_logits(model, out, slot)
        assert losses[slot] == pytest.approx(float(F.cross_entropy(logits, batch["targets"][rows])), rel=1e-5)

    balancer = GradientBlending(every=1)
    balancer.mmcore_train_start(trainer)
    metrics = {}
    balancer.mmcore_epoch_end(trainer, epoch=1, metrics=metrics)
    assert metrics["balancer/fused"] == 0.25 and balancer.previous["a"][1] == pytest.approx(losses["a"])
    assert balancer.weights == dict.fromkeys(["fused", *SLOTS], 0.25), "one measurement: nothing to compare yet"


def test_bad_options():
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="gblend"):
            GradientBlending(every=bad)
