"""The classification head: cross-entropy options, focal loss, predictions and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcore import Features
from mmcore_plugins.heads.classification import ClassificationHead


def logits_and_targets():
    g = torch.Generator().manual_seed(0)
    return Features.from_pooled(torch.randn(8, 5, generator=g)), torch.randint(0, 3, (8,), generator=g)


def test_loss_options_are_cross_entropys():
    fused, targets = logits_and_targets()
    torch.manual_seed(0)
    head = ClassificationHead(5, num_classes=3, label_smoothing=0.1, class_weights=[1.0, 2.0, 0.5])
    out = head(fused, targets)
    expected = F.cross_entropy(out.logits, targets, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1)
    assert torch.allclose(out.loss, expected)
    assert torch.equal(out.predictions, out.logits.argmax(-1))
    assert "probabilities" not in out.extras, "a training step does not pay for probabilities"
    head.eval()
    out = head(fused, targets)
    assert torch.allclose(out.extras["probabilities"], out.logits.softmax(-1))
    assert torch.allclose(out.extras["probabilities"].sum(-1), torch.ones(8))


def test_focal_loss_down_weights_easy_examples():
    fused, targets = logits_and_targets()
    torch.manual_seed(0)
    plain = ClassificationHead(5, num_classes=3)
    torch.manual_seed(0)
    focal = ClassificationHead(5, num_classes=3, focal_gamma=2.0)
    out_plain, out_focal = plain(fused, targets), focal(fused, targets)
    p_t = out_plain.logits.softmax(-1).gather(1, targets[:, None]).squeeze(1)
    ce = F.cross_entropy(out_plain.logits, targets, reduction="none")
    assert torch.allclose(out_focal.loss, ((1 - p_t) ** 2 * ce).mean(), atol=1e-6)
    assert out_focal.loss < out_plain.loss


def test_targets_and_options_are_checked():
    head = ClassificationHead(5, num_classes=3)
    assert head.collate_targets([0, 2, torch.tensor(1)]).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match=r"classification target #1 must be in \[0, 3\), got 3"):
        head.collate_targets([0, 3])
    with pytest.raises(TypeError, match="classification target #0 must be an int class index, got str"):
        head.collate_targets(["cat"])
    with pytest.raises(ValueError, match="class_weights must have num_classes=3 entries, got 2"):
        ClassificationHead(5, num_classes=3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        ClassificationHead(5, num_classes=1)
