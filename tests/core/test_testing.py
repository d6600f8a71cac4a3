"""The conformance checks catch what they claim to catch (each broken component fails)."""

import pytest
import torch
from torch import nn

import mmcore
from mmcore import Features
from mmcore.testing import ConformanceError, check_fusion, check_head


class MeanPooledFusion(mmcore.Fusion):
    """Correct reference: mean of projected pooled vectors over present modalities."""

    def __init__(self, input_dims, dim=8, leak_padding=False, leak_absent=False, center_batch=False):
        super().__init__(input_dims, dim)
        self.proj = nn.ModuleDict({s: nn.Linear(d, dim) for s, d in input_dims.items()})
        self.leak_padding, self.leak_absent = leak_padding, leak_absent
        self.center_batch = center_batch

    def forward(self, features):
        total, count = 0, 0
        for slot, f in features.items():
            x = f.tokens.mean(1) if self.leak_padding else f.pooled
            y = self.proj[slot](x)
            keep = torch.ones_like(f.present) if self.leak_absent else f.present
            total = total + torch.where(keep[:, None], y, torch.zeros_like(y))
            count = count + keep.float()[:, None]
        out = total / count.clamp_min(1)
        if self.center_batch:  # a statistic over the batch couples the samples
            out = out - out.mean(0, keepdim=True)
        present = torch.stack([f.present for f in features.values()]).any(0)
        return Features.from_pooled(out, present)


def test_a_correct_fusion_passes():
    check_fusion(MeanPooledFusion)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"leak_padding": True}, "changing padding tokens"),
        ({"leak_absent": True}, "absent modality"),
        ({"center_batch": True}, "changing sample 0 changed the output of other samples"),
    ],
)
def test_broken_fusions_fail_with_the_reason(options, message):
    with pytest.raises(ConformanceError, match=message):
        check_fusion(MeanPooledFusion, options=options)


def test_a_fusion_returning_the_wrong_width_fails():
    class Wrong(MeanPooledFusion):
        def forward(self, features):
            out = super().forward(features)
            return Features.from_pooled(out.pooled[:, :-1], out.present)

    with pytest.raises(ConformanceError, match="expected feature width 8, got 7"):
        check_fusion(Wrong)


def test_a_head_whose_loss_is_not_scalar_fails(manager):
    base = manager.registry.get("head", "classification").factory

    class Broken(base):
        def forward(self, fused, targets=None, features=None):
            out = super().forward(fused, targets, features)
            if out.loss is not None:
                out.loss = out.loss.expand(2)
            return out

    with pytest.raises(ConformanceError, match="loss must be a finite scalar"):
        check_head(Broken, options={"num_classes": 3})
