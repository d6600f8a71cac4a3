"""Parameter groups, AdamW and the warmup-cosine schedule (mmcore.engine.optim)."""

from __future__ import annotations

import math
import types

import pytest
import torch

from mmcore.engine.optim import build_optimizer, build_scheduler, parameter_groups, warmup_cosine
from mmcore.errors import ConfigError


def test_warmup_is_linear_then_cosine_decays_to_the_floor():
    factor = warmup_cosine(total_steps=20, warmup_fraction=0.2, min_ratio=0.1)  # 4 warmup steps
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(20) == pytest.approx(0.1) and factor(50) == pytest.approx(0.1)
    values = [factor(s) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_no_warmup_starts_at_the_peak_and_a_tiny_fraction_still_warms_one_step():
    assert warmup_cosine(10, 0.0)(0) == 1.0
    tiny = warmup_cosine(10, 0.01)
    assert tiny(0) == 1.0 and tiny(1) == 1.0 and tiny(2) < 1.0  # one warmup step (1/1), then the cosine from 1


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoders = torch.nn.ModuleDict({"text": torch.nn.Linear(3, 4), "image": torch.nn.Linear(3, 4)})
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_groups_split_by_multiplier_and_decay_and_skip_frozen_parameters():
    model = Tiny()
    groups = parameter_groups(model, lr=0.1, weight_decay=0.01, multipliers={"encoders": 0.5, "encoders.text": 0.1})
    by_key = {(g["lr_multiplier"], g["weight_decay"] > 0): g for g in groups}
    assert _names(model, by_key[(0.1, True)]) == ["encoders.text.weight"]  # the longest prefix wins
    assert _names(model, by_key[(0.1, False)]) == ["encoders.text.bias"]
    assert _names(model, by_key[(0.5, True)]) == ["encoders.image.weight"]
    assert _names(model, by_key[(1.0, False)]) == ["head.0.bias", "head.0.weight", "head.1.bias"]  # 1-D: no decay
    assert by_key[(0.1, True)]["lr"] == pytest.approx(0.01) and by_key[(1.0, False)]["weight_decay"] == 0.0
    assert not any("frozen" in n for g in groups for n in _names(model, g))
    assert [(g["lr_multiplier"], g["weight_decay"] > 0) for g in groups] == sorted(by_key)


def test_a_multiplier_matching_nothing_names_the_option():
    with pytest.raises(ConfigError, match=r"trainer.lr_multipliers.encoders.audio: matches no trainable parameter"):
        parameter_groups(Tiny(), 0.1, 0.0, {"encoders.audio": 2.0, "head": 1.0})
    with pytest.raises(ConfigError, match=r"trainer.lr_multipliers.frozen"):  # frozen parameters are not trainable
        parameter_groups(Tiny(), 0.1, 0.0, {"frozen": 2.0})


def test_built_optimiser_and_schedule_follow_the_options():
    options = types.SimpleNamespace(lr=0.2, weight_decay=0.05, lr_multipliers={"head": 2.0}, warmup_fraction=0.5, min_lr_ratio=0.0)
    model = Tiny()
    optimizer = build_optimizer(model, options)
    assert isinstance(optimizer, torch.optim.AdamW)
    scheduler = build_scheduler(optimizer, total_steps=4, options=options)  # 2 warmup steps
    head = [g for g in optimizer.param_groups if g["lr_multiplier"] == 2.0]
    lrs = []
    for _ in range(4):
        lrs.append(head[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.2, 0.4, 0.4, 0.2])  # 0.4 * (1/2, 1, cos schedule at 0, then at 1/2)
    assert head[0]["lr"] == pytest.approx(0.0)
