"""`unimodal_ensemble`: per-modality experts with their own losses, combined over present modalities."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcore import Features
from mmcore_plugins.heads.ensemble import UnimodalEnsembleHead


def _features(present: list[bool], width: int, seed: int) -> Features:
    g = torch.Generator().manual_seed(seed)
    pooled = torch.randn(len(present), width, generator=g, requires_grad=True)
    return Features.from_pooled(pooled, torch.tensor(present))


def test_predictions_are_a_product_of_the_present_experts():
    torch.manual_seed(0)
    head = UnimodalEnsembleHead(input_dim=8, num_classes=4, input_dims={"a": 6, "b": 5}).eval()
    features = {"a": _features([True, True, False, False], 6, 1), "b": _features([True, False, True, False], 5, 2)}
    fused = Features.from_pooled(torch.randn(4, 8), torch.tensor([True, True, True, False]))
    out = head(fused, None, features)
    log_a = head.experts["a"](features["a"].pooled).log_softmax(-1)
    log_b = head.experts["b"](features["b"].pooled).log_softmax(-1)
    torch.testing.assert_close(out.logits[0], log_a[0] + log_b[0])   # both present
    torch.testing.assert_close(out.logits[1], log_a[1])              # only a
    torch.testing.assert_close(out.logits[2], log_b[2])              # only b
    torch.testing.assert_close(out.extras["probabilities"][3], torch.full((4,), 0.25))  # none: uniform
    assert out.predictions.tolist() == out.logits.argmax(-1).tolist()


def test_each_expert_learns_from_its_own_loss_only():
    """No competition: the loss is the mean of per-expert cross-entropies on the samples having the
    modality, so an expert's gradient does not depend on how well the other modality fits."""
    torch.manual_seed(0)
    head = UnimodalEnsembleHead(input_dim=8, num_classes=3, input_dims={"a": 4, "b": 4}, label_smoothing=0.0, dropout=0.0)
    leaf_a, leaf_b = torch.randn(4, 4, requires_grad=True), torch.randn(4, 4, requires_grad=True)
    present_a, present_b = torch.tensor([True, True, True, False]), torch.tensor([False, True, True, True])

    def features():
        return {"a": Features.from_pooled(leaf_a, present_a), "b": Features.from_pooled(leaf_b, present_b)}

    fused = Features.from_pooled(torch.randn(4, 8), torch.ones(4, dtype=torch.bool))
    targets = torch.tensor([0, 1, 2, 1])
    out = head.train()(fused, targets, features())
    ce_a = F.cross_entropy(head.experts["a"](leaf_a[:3]), targets[:3])
    ce_b = F.cross_entropy(head.experts["b"](leaf_b[1:]), targets[1:])
    torch.testing.assert_close(out.loss, (ce_a + ce_b) / 2)
    out.loss.backward()
    grad_a = leaf_a.grad.clone()
    assert grad_a[3].abs().sum() == 0  # an absent sample teaches its expert nothing
    # Making expert b (nearly) perfect changes nothing for expert a's gradient.
    leaf_a.grad = None
    with torch.no_grad():
        head.experts["b"][-1].weight.mul_(100.0)
    head(fused, targets, features()).loss.backward()
    torch.testing.assert_close(leaf_a.grad, grad_a)


def test_falls_back_to_the_fused_vector_without_per_slot_features():
    head = UnimodalEnsembleHead(input_dim=8, num_classes=3, input_dims={"a": 4}, classes=["x", "y", "z"])
    fused = Features.from_pooled(torch.randn(2, 8), torch.ones(2, dtype=torch.bool))
    out = head.train()(fused, torch.tensor([0, 2]), None)
    assert out.loss is not None and out.logits.shape == (2, 3)
    assert head.num_classes == 3 and head.classes == ["x", "y", "z"]


def test_the_fused_vector_counts_in_predictions_with_or_without_targets():
    """joint_weight > 0: the fused classifier's log-probabilities join the product in prediction as in
    validation (they were added only when targets were given: predict ignored the fusion)."""
    torch.manual_seed(0)
    head = UnimodalEnsembleHead(input_dim=8, num_classes=3, input_dims={"a": 4}, joint_weight=0.5).eval()
    features = {"a": _features([True, True], 4, 1)}
    fused = Features.from_pooled(torch.randn(2, 8), torch.ones(2, dtype=torch.bool))
    with torch.no_grad():
        unlabelled = head(fused, None, features).logits
        labelled = head(fused, torch.tensor([0, 1]), features).logits
        expected = head.experts["a"](features["a"].pooled).log_softmax(-1) + 0.5 * head.net(fused.pooled).log_softmax(-1)
    torch.testing.assert_close(unlabelled, labelled)
    torch.testing.assert_close(unlabelled, expected)


def test_train_warns_once_when_the_configs_fusion_is_not_used(capsys):
    """newcomer 3 item 4: fit's config (unimodal_ensemble, joint_weight 0) with another fusion trained
    exactly as before, silently: ``mmcore train`` says so at start, naming the option that changes it."""
    import mmcore
    from mmcore.cli import _warn_unused_fusion

    manager = mmcore.get_plugin_manager()

    def warned(head: dict) -> str:
        _warn_unused_fusion({"model": {"fusion": {"name": "gated"}, "head": head}}, manager)
        return capsys.readouterr().err

    err = warned({"name": "unimodal_ensemble", "joint_weight": 0})
    assert err.count("\n") == 1 and err.startswith("warning: model.fusion (gated) changes nothing in this run: ")
    assert "set model.head.joint_weight above 0" in err
    assert warned({"name": "unimodal_ensemble"}).startswith("warning: model.fusion (gated)")  # the default is 0
    assert warned({"name": "unimodal_ensemble", "joint_weight": 0.5}) == ""
    assert warned({"name": "classification"}) == ""
    assert warned({"name": "no_such_head"}) == ""  # the Trainer's error, not this one's
