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


# ---------------------------------------------------------------------------- many classes (issue 28.8)
def test_macro_f1_equals_torchmetrics_over_updates_absent_classes_and_ignore_index():
    from torchmetrics.classification import MulticlassF1Score

    from mmcore_plugins.heads.metrics import MulticlassMacroF1

    generator = torch.Generator().manual_seed(0)
    for classes, ignore in ((7, None), (13, None), (5, 2)):
        ours, reference = MulticlassMacroF1(classes, ignore_index=ignore), MulticlassF1Score(classes, average="macro",
                                                                                               ignore_index=ignore)
        for n in (1, 9, 40):
            target = torch.randint(0, classes - 2, (n,), generator=generator)  # the last two classes never occur
            preds = torch.where(torch.rand(n, generator=generator) < 0.6, target, torch.randint(0, classes, (n,), generator=generator))
            ours.update(preds, target)
            reference.update(preds, target)
        torch.testing.assert_close(ours.compute(), reference.compute())
    scores = torch.randn(6, 4, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(MulticlassMacroF1(4)(scores, labels), MulticlassF1Score(4, average="macro")(scores, labels))
    with pytest.raises(ValueError, match=r"class indices in \[0, 4\)"):
        MulticlassMacroF1(4).update(torch.tensor([0, 4]), torch.tensor([0, 1]))


def test_the_classification_heads_metrics_stay_linear_in_the_number_of_classes():
    """A 1.5 MB CSV with 50k classes drove fit to 20 GB: torchmetrics' macro F1 bincounts a C x C matrix."""
    classes = 300_000  # C x C int64 would be 720 GB: refused at once if anything built it
    head = ClassificationHead(input_dim=4, num_classes=classes)
    metrics = head.metrics()
    target = torch.randint(0, classes, (2000,), generator=torch.Generator().manual_seed(1))
    preds = target.clone()
    preds[::2] = (preds[::2] + 1) % classes
    for metric in metrics.values():
        metric.update(preds, target)
    values = {name: float(metric.compute()) for name, metric in metrics.items()}
    assert values["accuracy"] == pytest.approx(0.5)
    assert 0.0 < values["macro_f1"] < 1.0
    state = sum(t.numel() for m in metrics.values() for t in m.metric_state.values() if isinstance(t, torch.Tensor))
    assert state <= 8 * classes, "per-class counts only"


def test_class_names_are_looked_up_not_scanned():
    """A target name was found by list.index: 50k classes x 50k rows made every epoch quadratic."""

    class Name(str):
        comparisons = 0

        def __eq__(self, other):
            type(self).comparisons += 1
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    names = [f"class{i}" for i in range(20_000)]
    head = ClassificationHead(4, classes=names)
    targets = [Name(f"class{i}") for i in range(0, 20_000, 7)]
    Name.comparisons = 0
    assert head.collate_targets(targets).tolist() == list(range(0, 20_000, 7))
    assert Name.comparisons < 3 * len(targets)
    with pytest.raises(ValueError, match=r"one of the classes \['class0', .*'\.\.\.'\] or an index, got 'nope'"):
        head.collate_targets(["nope"])
