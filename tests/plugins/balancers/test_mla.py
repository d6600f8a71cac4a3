"""MLA: one modality per optimiser step, round robin; its uni-modal loss trains through the shared head,
whose gradient is projected (OWM) away from the inputs the other modalities gave it -- by hand."""

import pytest
import torch
import torch.nn.functional as F
from balancer_helpers import FakeTrainer, by_hand_logits, forward, tiny_model, tiny_samples

from mmcore_plugins.balancers.mla import MLA, owm_update


def test_owm_update_by_hand():
    p = torch.eye(3, dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    q = owm_update(p, x, alpha=0.5)
    torch.testing.assert_close(q, torch.eye(3, dtype=torch.float64) - torch.outer(x, x) / (0.5 + 5.0))
    assert float((q @ x).norm()) < 0.1 * float(x.norm()), "what x spans is (nearly) projected out"


def _step(model, balancer, trainer, batch):
    """One optimiser step's gradients through the hooks: the head's fused + MLA loss, backward, projection."""
    model.zero_grad()
    out = model(batch["inputs"], batch["targets"])
    term = balancer.mmcore_train_loss(trainer, batch, out)["mla"]
    (out.loss + term).backward()
    balancer.mmcore_before_optimizer_step(trainer)
    return out


def test_two_steps_of_round_robin_with_the_projection_by_hand():
    model = tiny_model()
    batch, _ = forward(model, tiny_samples())
    trainer = FakeTrainer(model)
    balancer = MLA(alpha=0.1)
    balancer.mmcore_train_start(trainer)
    linear = model.head.net[-1]
    weight = linear.weight

    def by_hand(slot):
        out = model(batch["inputs"], batch["targets"])
        logits, rows = by_hand_logits(model, out, slot)
        x = out.features[slot].pooled[rows]
        uni = F.cross_entropy(x @ weight.T + linear.bias, batch["targets"][rows])
        g_fused = torch.autograd.grad(out.loss, weight, retain_graph=True)[0]
        g_uni = torch.autograd.grad(uni, weight)[0]
        return g_fused, g_uni, x.detach().double().mean(0)

    # Step 1 trains slot a (step 0 % 3): nothing learnt yet, P_a = I: the plain sum.
    g_fused, g_uni, x_a = by_hand("a")
    _step(model, balancer, trainer, batch)
    torch.testing.assert_close(weight.grad, g_fused + g_uni, rtol=1e-5, atol=1e-7)
    p_b = owm_update(torch.eye(4, dtype=torch.float64), x_a, 0.1)  # b's and c's projectors learnt a's mean input
    torch.testing.assert_close(balancer.projectors["b", 0], p_b)
    torch.testing.assert_close(balancer.projectors["a", 0], torch.eye(4, dtype=torch.float64))

    # Step 2 trains slot b, through P_b.
    trainer.step = 1
    g_fused, g_uni, _ = by_hand("b")
    _step(model, balancer, trainer, batch)
    torch.testing.assert_close(weight.grad, g_fused + (g_uni.double() @ p_b).float(), rtol=1e-5, atol=1e-6)
    assert balancer.turns == {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.0, 0.0]}


def test_the_term_is_the_turns_unimodal_loss_and_fused_weight_scales_the_fused_loss():
    model = tiny_model()
    batch, out = forward(model, tiny_samples())
    trainer = FakeTrainer(model, step=2)  # slot c's turn: only 4 samples have it
    balancer = MLA(fused_weight=0.0, projection=False)
    balancer.mmcore_train_start(trainer)
    assert balancer.turn(trainer) == "c"
    term = balancer.mmcore_train_loss(trainer, batch, out)["mla"]
    logits, rows = by_hand_logits(model, out, "c")
    want = float(F.cross_entropy(logits, batch["targets"][rows]))
    assert float((out.loss + term).detach()) == pytest.approx(want, rel=1e-5), "fused_weight 0: the uni-modal loss alone"
    # A turn whose modality no sample has adds nothing but the fused weighting.
    batch, out = forward(model, tiny_samples(missing={"c": list(range(10))}))
    balancer = MLA(projection=False)
    balancer.mmcore_train_start(trainer)
    assert balancer.mmcore_train_loss(trainer, batch, out) is None


def test_bad_options():
    for bad in ({"fused_weight": -1}, {"alpha": 0}, {"fused_weight": "x"}):
        with pytest.raises(ValueError, match="mla"):
            MLA(**bad)
