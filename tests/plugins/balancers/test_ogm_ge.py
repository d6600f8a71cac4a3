"""OGM-GE: scores from the uni-modal predictions (samples without the modality left out), the
discrepancy ratio against the other modalities' mean, 1 - tanh(alpha rho), and the noise -- checked
on a tiny model against a hand computation."""

import math

import pytest
import torch
from balancer_helpers import SLOTS, FakeTrainer, by_hand_logits, forward, grads, tiny_model, tiny_samples

from mmcore_plugins.balancers.ogm_ge import OGMGE, ogm_coefficients


def _scores_by_hand(model, batch, out):
    scores = {}
    for slot in SLOTS:
        logits, rows = by_hand_logits(model, out, slot)
        scores[slot] = float(logits.softmax(-1)[torch.arange(len(rows)), batch["targets"][rows]].mean())
    return scores


def test_coefficients_follow_the_paper_for_two_and_generalise_to_more():
    # Two modalities: rho_a = s_a / s_v; only the dominant one is slowed.
    k = ogm_coefficients({"a": 0.8, "v": 0.4}, alpha=0.5)
    assert k["a"] == pytest.approx(1 - math.tanh(0.5 * 2.0)) and k["v"] == 1.0
    # Three: each against the mean of the others; a slot in no sample of the step is left alone.
    k = ogm_coefficients({"a": 0.9, "b": 0.3, "c": 0.6, "d": None}, alpha=1.0)
    assert k["a"] == pytest.approx(1 - math.tanh(0.9 / 0.45)) and k["b"] == 1.0
    assert k["c"] == 1.0  # rho = 0.6 / mean(0.9, 0.3) = 1 exactly: not above 1
    assert k["d"] == 1.0
    assert ogm_coefficients({"a": 0.9, "b": None}, alpha=1.0) == {"a": 1.0, "b": 1.0}  # nothing to compare with


@pytest.mark.parametrize("noise", [False, True])
def test_the_update_on_a_tiny_model_matches_a_hand_computation(noise):
    model = tiny_model()
    batch, out = forward(model, tiny_samples())
    trainer = FakeTrainer(model, step=4, seed=3)
    balancer = OGMGE(alpha=0.7, gradient_noise=noise)
    balancer.mmcore_train_start(trainer)
    assert balancer.mmcore_train_loss(trainer, batch, out) is None  # statistics only
    out.loss.backward()
    before = {slot: grads(model.encoders[slot].parameters()) for slot in SLOTS}
    head_before = grads(model.head.parameters())
    balancer.mmcore_before_optimizer_step(trainer, step=5)

    scores = _scores_by_hand(model, batch, out)
    assert balancer.last["scores"] == pytest.approx(scores)
    expected_k = {}
    for slot in SLOTS:
        others = [scores[s] for s in SLOTS if s != slot]
        rho = scores[slot] / (sum(others) / len(others))
        expected_k[slot] = 1 - math.tanh(0.7 * rho) if rho > 1 else 1.0
    assert balancer.last["coefficients"] == pytest.approx(expected_k)
    assert any(k < 1 for k in expected_k.values()), "the example should slow at least one modality"
    generator = torch.Generator().manual_seed(3 * 1_000_003 + 5)
    for slot in SLOTS:
        for p, g in zip(model.encoders[slot].parameters(), before[slot], strict=True):
            want = g * expected_k[slot]
            if noise and g.dim() > 1:  # drawn in slot, then parameter order, with the unscaled std
                want = want + torch.empty_like(g).normal_(generator=generator) * (g.std() + 1e-8)
            torch.testing.assert_close(p.grad, want, rtol=1e-6, atol=1e-7)
    for p, g in zip(model.head.parameters(), head_before, strict=True):
        assert torch.equal(p.grad, g), "only encoders are modulated"


def test_statistics_of_a_step_are_summed_over_micro_batches_and_processes():
    model = tiny_model()
    samples = tiny_samples(12)
    balancer = OGMGE(alpha=0.5, gradient_noise=False)
    trainer = FakeTrainer(model, world_size=2)
    balancer.mmcore_train_start(trainer)
    whole_batch, whole = forward(model, samples)
    for part in (samples[:5], samples[5:]):  # two micro-batches of one step
        batch, out = forward(model, part, fit=False)
        balancer.mmcore_train_loss(trainer, batch, out)
    (model(whole_batch["inputs"], whole_batch["targets"]).loss).backward()
    balancer.mmcore_before_optimizer_step(trainer, step=1)
    # Two identical processes: the same means as one process over the whole step.
    assert balancer.last["scores"] == pytest.approx(_scores_by_hand(model, whole_batch, whole))


def test_the_window_and_bad_options():
    model = tiny_model()
    batch, out = forward(model, tiny_samples())
    trainer = FakeTrainer(model, epoch=1)
    balancer = OGMGE(alpha=0.7, gradient_noise=False, start_epoch=2)
    balancer.mmcore_train_start(trainer)
    balancer.mmcore_train_loss(trainer, batch, out)
    out.loss.backward()
    before = grads(model.parameters())
    balancer.mmcore_before_optimizer_step(trainer, step=1)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before, strict=True))
    for bad in ({"alpha": 0}, {"alpha": "x"}, {"start_epoch": 0}, {"start_epoch": 3, "end_epoch": 2}):
        with pytest.raises(ValueError, match="ogm_ge"):
            OGMGE(**bad)
