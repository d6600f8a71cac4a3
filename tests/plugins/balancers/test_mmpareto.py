"""MMPareto: each encoder's multi-modal and uni-modal gradients, equal weights without conflict, the
two-task min-norm weights with one, and the reference code's magnitude rule -- against gradients
computed independently with torch.autograd."""

import pytest
import torch
import torch.nn.functional as F
from balancer_helpers import SLOTS, FakeTrainer, forward, grads, tiny_model, tiny_samples

from mmcore_plugins.balancers.mmpareto import MMPareto, pareto_weights


def test_pareto_weights_by_hand():
    assert pareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == (0.5, 0.5, False)
    a, b, conflict = pareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    # min_c |c g1 + (1 - c) g2|^2: c = (|g2|^2 - g1.g2) / |g1 - g2|^2 = (2 + 1) / 5
    assert conflict and a == pytest.approx(0.6) and b == pytest.approx(0.4)
    combined = a * torch.tensor([1.0, 0.0]) + b * torch.tensor([-1.0, 1.0])
    for c in torch.linspace(0, 1, 101):
        assert combined.norm() <= (c * torch.tensor([1.0, 0.0]) + (1 - c) * torch.tensor([-1.0, 1.0])).norm() + 1e-6
    assert pareto_weights(torch.zeros(3), torch.ones(3))[2] is False


def test_the_update_on_a_tiny_model_matches_independent_gradients():
    model = tiny_model()
    batch, out = forward(model, tiny_samples())
    trainer = FakeTrainer(model)
    balancer = MMPareto(gamma=1.5)
    balancer.mmcore_train_start(trainer)
    # Each encoder's two gradients, computed independently: the fused loss, and its uni-modal loss by hand.
    linear = model.head.net[-1]
    expected = {}
    for slot in SLOTS:
        params = list(model.encoders[slot].parameters())
        present = out.features[slot].present
        logits = out.features[slot].pooled[present] @ linear.weight.T + linear.bias
        g_mm = torch.autograd.grad(out.loss, params, retain_graph=True)
        g_m = torch.autograd.grad(F.cross_entropy(logits, batch["targets"][present]), params, retain_graph=True)
        flat_mm, flat_m = torch.cat([g.flatten() for g in g_mm]), torch.cat([g.flatten() for g in g_m])
        cos = float(F.cosine_similarity(flat_mm, flat_m, dim=0))
        if cos > 0:
            a_mm = a_m = 0.5
        else:
            a_mm = float((flat_m @ flat_m - flat_mm @ flat_m) / ((flat_mm - flat_m) @ (flat_mm - flat_m)))
            a_m = 1 - a_mm
        new = []
        for gm, gu in zip(g_mm, g_m, strict=True):
            g = 2 * a_mm * gm + 2 * a_m * gu
            new.append(1.5 * max(1.0, float((gm + gu).norm() / g.norm())) * g)
        expected[slot] = (new, cos <= 0)
    terms = balancer.mmcore_train_loss(trainer, batch, out)
    (out.loss + terms["mmpareto"]).backward()
    head_before = grads(model.head.parameters())
    balancer.mmcore_before_optimizer_step(trainer)
    for slot in SLOTS:
        new, conflict = expected[slot]
        assert balancer.last[slot][2] == conflict
        for p, want in zip(model.encoders[slot].parameters(), new, strict=True):
            torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.head.parameters(), head_before, strict=True))


def test_conflicting_gradients_get_the_min_norm_combination_rescaled():
    model = tiny_model()
    trainer = FakeTrainer(model)
    balancer = MMPareto(gamma=1.5)
    balancer.mmcore_train_start(trainer)
    params = list(model.encoders["a"].parameters())
    g = torch.Generator().manual_seed(0)
    g_mm = [torch.randn(p.shape, generator=g) for p in params]
    g_m = [-0.5 * x + 0.1 * torch.randn(x.shape, generator=g) for x in g_mm]  # pointing mostly against g_mm
    for p, a, b in zip(params, g_mm, g_m, strict=True):
        p.grad = a + b  # what backward() left: both losses' gradients summed
    balancer.stash.add("a", params, g_m, 1.0)
    balancer.mmcore_before_optimizer_step(trainer)
    f_mm, f_m = torch.cat([x.flatten() for x in g_mm]), torch.cat([x.flatten() for x in g_m])
    c = float((f_m @ f_m - f_mm @ f_m) / ((f_mm - f_m) @ (f_mm - f_m)))
    assert balancer.last["a"][2] and balancer.last["a"][0] == pytest.approx(c, rel=1e-5)
    for p, a, b in zip(params, g_mm, g_m, strict=True):
        new = 2 * c * a + 2 * (1 - c) * b
        want = 1.5 * max(1.0, float((a + b).norm() / new.norm())) * new
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-6)


def test_gradients_of_micro_batches_and_processes_are_scaled_like_backward():
    model = tiny_model()
    samples = tiny_samples(12)
    model.fit_processors(samples)
    trainer = FakeTrainer(model, world_size=2)  # two identical processes
    balancer = MMPareto()
    balancer.mmcore_train_start(trainer)
    params = list(model.encoders["a"].parameters())
    linear = model.head.net[-1]
    want = [torch.zeros_like(p) for p in params]
    # Two micro-batches of one step: each weighted by its share of the step's samples times world_size,
    # summed over the processes and divided by world_size -- as backward() and DDP scale p.grad.
    for part, weight in ((samples[:4], 4 / 12 * 2), (samples[4:], 8 / 12 * 2)):
        batch, out = forward(model, part, fit=False)
        trainer.micro_batch_weight = weight
        balancer.mmcore_train_loss(trainer, batch, out)
        present = out.features["a"].present
        loss = F.cross_entropy(out.features["a"].pooled[present] @ linear.weight.T + linear.bias, batch["targets"][present])
        for w, g in zip(want, torch.autograd.grad(loss, params), strict=True):
            w += weight * g * 2 / 2
    for w, g in zip(want, balancer.stash.reduce(trainer, "a", params), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
