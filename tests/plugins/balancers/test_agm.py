"""AGM: exact Shapley outputs per modality, mono-modal cross-entropies over the samples that have the
modality, ratios against their running means, exp(alpha (eta - r)) on the encoders' weights -- on a
tiny model whose Shapley outputs are known in closed form (the sum fusion's game is additive)."""

import math

import pytest
import torch
from balancer_helpers import SLOTS, FakeTrainer, by_hand_logits, forward, grads, tiny_model, tiny_samples

from mmcore_plugins.balancers.agm import AGM, agm_coefficients


def test_coefficients_for_two_modalities_are_the_papers():
    # r_a = exp(s_v - s_a), eta_a = exp(S_v - S_a) from the running means; k = exp(alpha min(eta - r, 10))
    k = agm_coefficients({"a": 0.5, "v": 1.5}, {"a": 0.7, "v": 1.2}, alpha=0.3)
    assert k["a"] == pytest.approx(math.exp(0.3 * (math.exp(1.2 - 0.7) - math.exp(1.5 - 0.5))))
    assert k["v"] == pytest.approx(math.exp(0.3 * (math.exp(0.7 - 1.2) - math.exp(0.5 - 1.5))))
    assert k["a"] < 1 < k["v"], "audio ran ahead of its running balance: slowed; visual sped up"
    # The cap: exp(alpha * 10) at most (eta_a = e^30 here); a modality missing from the step is left alone.
    k = agm_coefficients({"a": 0.0, "v": 0.0, "t": None}, {"a": 0.0, "v": 30.0}, alpha=0.1)
    assert k["a"] == pytest.approx(math.exp(1.0)) and k["t"] == 1.0


def test_the_update_on_a_tiny_model_matches_a_hand_computation():
    model = tiny_model()
    batch, out = forward(model, tiny_samples())
    trainer = FakeTrainer(model)
    balancer = AGM(alpha=0.4)
    balancer.mmcore_train_start(trainer)
    balancer.mmcore_train_loss(trainer, batch, out)
    out.loss.backward()
    before = {slot: grads(model.encoders[slot].parameters()) for slot in SLOTS}
    balancer.mmcore_before_optimizer_step(trainer)

    # The sum fusion's game is additive: modality m's Shapley output is W x_m (the bias belongs to no one).
    scores = {}
    for slot in SLOTS:
        logits, rows = by_hand_logits(model, out, slot)
        phi = logits - model.head.net[-1].bias.detach()
        p = phi.softmax(-1)[torch.arange(len(rows)), batch["targets"][rows]]
        scores[slot] = float(-torch.log(p.clamp_min(1e-8)).mean())
    assert balancer.last["scores"] == pytest.approx(scores, rel=1e-5)
    mean = sum(scores.values()) / 3
    expected = {m: math.exp(0.4 * min(1.0 - math.exp(1.5 * (mean - s)), 10)) for m, s in scores.items()}  # eta = 1 at step 1
    assert balancer.last["coefficients"] == pytest.approx(expected, rel=1e-5)
    for slot in SLOTS:
        for p, g in zip(model.encoders[slot].parameters(), before[slot], strict=True):
            want = g * expected[slot] if g.dim() > 1 else g  # biases are not modulated
            torch.testing.assert_close(p.grad, want, rtol=1e-6, atol=1e-8)

    # Step 2 on the same batch: the running means are step 1's scores, so eta = r and k = 1.
    model.zero_grad()
    trainer.step = 1
    balancer.mmcore_train_loss(trainer, batch, out)
    balancer.mmcore_before_optimizer_step(trainer)
    assert balancer.last["coefficients"] == pytest.approx(dict.fromkeys(SLOTS, 1.0))
    assert balancer.running == pytest.approx(scores, rel=1e-5)


def test_a_modality_absent_from_the_step_keeps_its_gradient_and_running_mean():
    model = tiny_model()
    batch, out = forward(model, tiny_samples(missing={"c": list(range(10))}))
    trainer = FakeTrainer(model)
    balancer = AGM()
    balancer.mmcore_train_start(trainer)
    balancer.mmcore_train_loss(trainer, batch, out)
    balancer.mmcore_before_optimizer_step(trainer)
    assert balancer.last["scores"]["c"] is None and balancer.last["coefficients"]["c"] == 1.0
    assert "c" not in balancer.running


def test_sampled_shapley_outputs_are_used_above_six_modalities(monkeypatch):
    import mmcore_plugins.balancers.agm as agm

    model = tiny_model()
    batch, out = forward(model, tiny_samples())
    monkeypatch.setattr(agm, "EXACT_MAX", 2)  # three slots: sampled
    balancer = AGM(pairs=8)
    balancer.mmcore_train_start(FakeTrainer(model))
    phi = balancer.shapley_outputs(model, out.features)
    bias = model.head.net[-1].bias.detach()
    for j, slot in enumerate(SLOTS):  # an additive game: every order gives the exact values
        logits, rows = by_hand_logits(model, out, slot)
        torch.testing.assert_close(phi[rows, j].float(), logits - bias, rtol=1e-5, atol=1e-5)
