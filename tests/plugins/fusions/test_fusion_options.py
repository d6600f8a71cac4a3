"""Bad options and bad inputs give errors that say what was expected and what came."""

from __future__ import annotations

import pytest
import torch

import mmcore
from mmcore import ConfigError, Features
from mmcore_plugins.fusions.attention import (
    BottleneckFusion,
    CoAttentionFusion,
    CrossAttentionFusion,
    JointTransformerFusion,
    MulTFusion,
    PerceiverFusion,
)
from mmcore_plugins.fusions.bilinear import LowRankTensorFusion, TensorFusion
from mmcore_plugins.fusions.concat import ConcatFusion, WeightedConcatFusion
from mmcore_plugins.fusions.factorized import BlockFusion, MCBFusion, MFBFusion, MutanFusion
from mmcore_plugins.fusions.gating import FiLMFusion, GatedFusion, MultiplicativeFusion, NonLocalGateFusion
from mmcore_plugins.fusions.pooling import (
    DeepSetFusion,
    LateFusion,
    MeanFusion,
    SumFusion,
)

TWO = {"a": 3, "b": 4}


@pytest.mark.parametrize(
    ("factory", "option"),
    [(CrossAttentionFusion, "query"), (FiLMFusion, "target"), (NonLocalGateFusion, "target"), (MultiplicativeFusion, "target")],
)
def test_an_unknown_special_slot_is_named(factory, option):
    with pytest.raises(ValueError, match=rf"{option} must be one of the modalities \['a', 'b'\], got 'c'"):
        factory(TWO, dim=8, **{option: "c"})


@pytest.mark.parametrize(
    "factory",
    [CrossAttentionFusion, CoAttentionFusion, MulTFusion, JointTransformerFusion, BottleneckFusion, PerceiverFusion,
     NonLocalGateFusion],
)
def test_dim_must_be_divisible_by_heads(factory):
    with pytest.raises(ValueError, match=r"dim \(10\) must be divisible by heads \(4\)"):
        factory(TWO, dim=10, heads=4)
    with pytest.raises(ValueError, match="heads must be a positive int, got 0"):
        factory(TWO, dim=8, heads=0)


@pytest.mark.parametrize(
    "factory",
    [WeightedConcatFusion, GatedFusion, FiLMFusion, NonLocalGateFusion, MultiplicativeFusion, TensorFusion,
     LowRankTensorFusion, MCBFusion, MFBFusion, MutanFusion, BlockFusion, CrossAttentionFusion, CoAttentionFusion,
     MulTFusion, BottleneckFusion],
)
def test_interaction_fusions_need_two_modalities(factory):
    with pytest.raises(ValueError, match=r"fuses at least 2 modalities, got 1: \['a'\]"):
        factory({"a": 3}, dim=8)


@pytest.mark.parametrize("factory", [ConcatFusion, SumFusion, MeanFusion, DeepSetFusion, LateFusion, JointTransformerFusion, PerceiverFusion])
def test_set_and_single_stream_fusions_take_one_modality(factory):
    fusion = factory({"a": 3}, dim=8).eval()
    out = fusion({"a": Features.from_pooled(torch.randn(2, 3))})
    assert out.pooled.shape == (2, 8) and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize(
    ("factory", "options", "message"),
    [
        (TensorFusion, {"factor_dim": 0}, "factor_dim must be a positive int, got 0"),
        (TensorFusion, {"factor_dim": 3000}, "the outer product would have 9,006,001 entries"),
        (LowRankTensorFusion, {"rank": 0}, "rank must be a positive int"),
        (MFBFusion, {"factors": -1}, "factors must be a positive int"),
        (BlockFusion, {"chunks": 0}, "chunks must be a positive int"),
        (MCBFusion, {"sketch_dim": 1}, "sketch_dim must be at least 2"),
        (MultiplicativeFusion, {"form": "cube"}, "form must be 'vector', 'matrix' or 'tensor', got 'cube'"),
        (LateFusion, {"combine": "max"}, "combine must be 'mean' or 'learned', got 'max'"),
        (WeightedConcatFusion, {"activation": "tanh"}, "activation must be one of"),
        (SumFusion, {"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        (CrossAttentionFusion, {"layers": 0}, "layers must be a positive int, got 0"),
        (PerceiverFusion, {"num_latents": 0}, "num_latents must be a positive int, got 0"),
        (BottleneckFusion, {"bottleneck_tokens": 0}, "bottleneck_tokens must be a positive int, got 0"),
    ],
)
def test_bad_sizes_and_choices_are_named(factory, options, message):
    with pytest.raises(ValueError, match=message):
        factory(TWO, dim=8, **options)


def test_tensor_fusion_limit_counts_every_modality():
    with pytest.raises(ValueError, match=r"\(factor_dim \+ 1\) \*\* 3\), more than"):
        TensorFusion({"a": 3, "b": 4, "c": 5}, dim=8, factor_dim=200)


def test_inputs_must_match_the_modalities_the_fusion_was_built_for():
    fusion = MeanFusion(TWO, dim=8)
    with pytest.raises(ValueError, match=r"built for modalities \['a', 'b'\], got \['a'\]"):
        fusion({"a": Features.from_pooled(torch.randn(2, 3))})
    with pytest.raises(ValueError, match="modality 'b': expected features of width 4, got 5"):
        fusion({"a": Features.from_pooled(torch.randn(2, 3)), "b": Features.from_pooled(torch.randn(2, 5))})


def test_build_model_reports_a_bad_fusion_option_through_the_spec():
    spec = {
        "encoders": {s: {"name": "tabular_mlp", "num_features": 2, "dim": 8} for s in "ab"},
        "fusion": {"name": "cross_attention", "dim": 8, "heads": 3},
        "head": {"name": "classification", "num_classes": 2},
    }
    with pytest.raises((ConfigError, ValueError), match=r"dim \(8\) must be divisible by heads \(3\)"):
        mmcore.build_model(spec)
