"""Head options: every option applies in every combination or is refused at build; class names in and out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmcore import Features, HeadOutput
from mmcore.errors import ConfigError
from mmcore_plugins.heads.captioning import CaptioningHead
from mmcore_plugins.heads.classification import ClassificationHead, MultilabelHead
from mmcore_plugins.heads.regression import RegressionHead


def batch():
    g = torch.Generator().manual_seed(0)
    return Features.from_pooled(torch.randn(16, 6, generator=g)), torch.randint(0, 3, (16,), generator=g)


def head(**options) -> ClassificationHead:
    torch.manual_seed(0)
    return ClassificationHead(6, num_classes=3, **options)


def test_focal_loss_applies_label_smoothing_and_class_weights():
    fused, targets = batch()
    focal = head(focal_gamma=2.0)(fused, targets).loss
    smoothed = head(focal_gamma=2.0, label_smoothing=0.3)(fused, targets).loss
    assert not torch.isclose(focal, smoothed), "label_smoothing changes the focal loss"
    # the formula: -sum_c q_c (1 - p_c)^gamma log p_c, q the smoothed one-hot target
    logits = head()(fused).logits
    log_p = logits.log_softmax(-1)
    q = F.one_hot(targets, 3).float() * 0.7 + 0.1
    assert torch.allclose(smoothed, -(q * (1 - log_p.exp()) ** 2 * log_p).sum(-1).mean(), atol=1e-6)
    weighted = head(focal_gamma=2.0, label_smoothing=0.3, class_weights=[1.0, 3.0, 0.5])(fused, targets).loss
    assert not torch.isclose(weighted, smoothed)
    # gamma -> 0 with smoothing is cross-entropy with smoothing (the same q)
    tiny = head(focal_gamma=1e-9, label_smoothing=0.3)(fused, targets).loss
    assert torch.allclose(tiny, F.cross_entropy(logits, targets, label_smoothing=0.3), atol=1e-5)


@pytest.mark.parametrize(("factory", "options", "message"), [
    (ClassificationHead, {"num_classes": 3, "hidden": 0}, "hidden must be a positive int"),
    (ClassificationHead, {"num_classes": 3, "dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    (ClassificationHead, {"num_classes": 3, "class_weights": [1.0, -1.0, 1.0]}, "class_weights must be finite, >= 0"),
    (ClassificationHead, {}, "give num_classes or classes"),
    (ClassificationHead, {"num_classes": 3, "classes": ["a", "b"]}, r"num_classes=3 but classes lists 2 names"),
    (ClassificationHead, {"classes": ["a", "a", "b"]}, r"classes: one class named more than once: 'a' and 'a'"),
    (RegressionHead, {"loss": "mse", "huber_delta": 2.0}, "huber_delta applies to loss: huber only"),
    (RegressionHead, {"hidden": 0}, "hidden must be a positive int"),
    (MultilabelHead, {"num_labels": 2, "pos_weight": [1.0, 0.0]}, "pos_weight must be finite and positive"),
    (MultilabelHead, {}, "give num_labels or classes"),
    (CaptioningHead, {"vocab": ["a"], "beam_size": 1, "length_penalty": 0.5}, "length_penalty applies to beam search only"),
    (CaptioningHead, {"vocab": ["a"], "dropout": 1.5}, r"dropout must be in \[0, 1\)"),
])
def test_options_that_would_be_ignored_or_are_out_of_range_are_refused(factory, options, message):
    with pytest.raises(ValueError, match=message):
        factory(6, **options)


def test_huber_delta_still_applies_to_huber():
    fused = Features.from_pooled(torch.randn(4, 6))
    targets = torch.randn(4, 1) * 5
    torch.manual_seed(0)
    a = RegressionHead(6, loss="huber", huber_delta=0.1)(fused, targets).loss
    torch.manual_seed(0)
    b = RegressionHead(6, loss="huber")(fused, targets).loss
    assert not torch.isclose(a, b)
    with pytest.raises(ValueError, match=r"regression target #1 must be finite"):
        RegressionHead(6).collate_targets([1.0, float("nan")])


def test_classification_names_in_and_out():
    h = ClassificationHead(6, classes=["cat", "dog"])
    assert h.num_classes == 2
    assert h.collate_targets(["dog", 0, 1.0, "cat"]).tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match=r"target #0 must be one of the classes \['cat', 'dog'\] or an index, got 'bird'"):
        h.collate_targets(["bird"])
    with pytest.raises(TypeError, match="must be an int class index or a class name, got float 0.5"):
        h.collate_targets([0.5])
    out = HeadOutput(logits=torch.zeros(3, 2), predictions=torch.tensor([1, 0, 1]))
    assert h.format_predictions(out) == ["dog", "cat", "dog"]
    assert ClassificationHead(6, num_classes=2).format_predictions(out) == [1, 0, 1]


def test_multilabel_names_in_and_out():
    h = MultilabelHead(6, classes=["a", "b", "c"])
    assert h.collate_targets([["c", "a"], [], [0, 1, 0]]).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    out = HeadOutput(logits=torch.zeros(2, 3), predictions=torch.tensor([[1, 0, 1], [0, 0, 0]]))
    assert h.format_predictions(out) == [["a", "c"], []]


def test_classes_are_filled_from_the_training_split_and_checked():
    metadata = {"classes": ["cat", "dog"], "num_classes": 2}
    assert ClassificationHead.options_from_data({}, metadata) == {"classes": ["cat", "dog"], "num_classes": 2}
    assert ClassificationHead.options_from_data({"num_classes": 2, "dropout": 0.1}, metadata) == {
        "num_classes": 2, "dropout": 0.1, "classes": ["cat", "dog"]}
    with pytest.raises(ConfigError) as info:
        ClassificationHead.options_from_data({"num_classes": 3}, metadata)
    assert info.value.issues[0].path == "num_classes"
    assert "is 3, but the training split has 2 classes ['cat', 'dog']" in info.value.issues[0].message
    with pytest.raises(ConfigError, match=r"classes: lists \['dog', 'cat'\], but the training split's classes are"):
        ClassificationHead.options_from_data({"classes": ["dog", "cat"]}, metadata)
    # a data set without a vocabulary (class indices) still tells the count
    assert ClassificationHead.options_from_data({}, {"num_classes": 10}) == {"num_classes": 10}
    assert MultilabelHead.options_from_data({}, metadata) == {"classes": ["cat", "dog"], "num_labels": 2}
    assert ClassificationHead.dataset_options({"num_classes": 4}) == {"target_type": "class", "num_classes": 4}
    assert RegressionHead.dataset_options({}) == {"target_type": "regression"}
