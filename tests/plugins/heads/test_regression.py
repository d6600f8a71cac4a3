"""Regression (standardised targets, original-unit predictions) and multilabel (per-label thresholds) heads."""

from __future__ import annotations

import pytest
import torch

from mmcore import Features
from mmcore_plugins.heads.classification import MultilabelHead
from mmcore_plugins.heads.regression import RegressionHead


def test_regression_predicts_in_original_units_after_fitting_target_statistics():
    torch.manual_seed(0)
    head = RegressionHead(4, num_targets=1)
    x = torch.randn(64, 4)
    y = 1000.0 + 50.0 * x[:, :1]
    head.fit_targets(y.tolist())
    assert head.target_mean.item() == pytest.approx(y.mean().item(), rel=1e-4)
    assert head.target_std.item() == pytest.approx(y.std().item(), rel=1e-4)
    fused = Features.from_pooled(x)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(200):
        out = head(fused, y)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert (head(fused).predictions - y).abs().max() < 5.0
    assert "target_mean" in head.state_dict()  # the statistics are saved with the weights


def test_regression_statistics_can_be_set_as_options_and_huber_is_used():
    head = RegressionHead(2, num_targets=2, loss="huber", huber_delta=0.5, target_mean=[10.0, -1.0], target_std=[2.0, 4.0])
    with torch.no_grad():
        head.net[-1].weight.zero_()
        head.net[-1].bias.zero_()
    out = head(Features.from_pooled(torch.zeros(1, 2)), torch.tensor([[14.0, -1.0]]))
    assert out.predictions.tolist() == [[10.0, -1.0]]  # a standardised 0 is the mean
    # Standardised error (2, 0): Huber with delta 0.5 gives 0.5 * (2 - 0.25) = 0.875 and 0 -> mean 0.4375.
    assert out.loss.item() == pytest.approx(0.4375)
    head.fit_targets([[0.0, 5.0], [2.0, 7.0]])  # statistics given as options are kept
    assert head.target_mean.tolist() == [10.0, -1.0] and head.target_std.tolist() == [2.0, 4.0]
    partly = RegressionHead(2, target_mean=[0.0])
    partly.fit_targets([1.0, 3.0])  # only the std is fitted
    assert partly.target_mean.tolist() == [0.0] and partly.target_std.item() == pytest.approx(2**0.5)
    with pytest.raises(ValueError, match="target_std must be positive"):
        RegressionHead(2, target_std=[0.0])
    with pytest.raises(TypeError, match=r"regression target #1 must be 2 number\(s\)"):
        head.collate_targets([[1.0, 2.0], [3.0]])


def test_multilabel_applies_per_label_thresholds():
    head = MultilabelHead(2, num_labels=2, thresholds=[0.3, 0.9])
    with torch.no_grad():
        head.net[-1].weight.zero_()
        head.net[-1].bias.copy_(torch.tensor([0.0, 0.0]))  # probabilities 0.5 for both labels
    out = head(Features.from_pooled(torch.zeros(1, 2)))
    assert out.predictions.tolist() == [[1, 0]]
    with pytest.raises(ValueError, match="multilabel target #0 must be 2 values of 0/1"):
        head.collate_targets([[1, 2]])
    with pytest.raises(ValueError, match=r"thresholds must be in \(0, 1\)"):
        MultilabelHead(2, num_labels=1, thresholds=[1.0])
