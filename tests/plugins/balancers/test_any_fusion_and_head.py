"""Every balancer's step works with every registered fusion and with a head that reads each slot's
features (``unimodal_ensemble``): the uni-modal path is the model's own fusion and head."""

import pytest
import torch
from balancer_helpers import FakeTrainer, forward, tiny_samples

import mmcore
from mmcore.plugin_manager import get_registry
from mmcore_plugins.balancers.agm import AGM
from mmcore_plugins.balancers.gblend import GradientBlending
from mmcore_plugins.balancers.mla import MLA
from mmcore_plugins.balancers.mmpareto import MMPareto
from mmcore_plugins.balancers.ogm_ge import OGMGE

BALANCERS = {"ogm_ge": OGMGE, "agm": AGM, "gblend": GradientBlending, "mmpareto": MMPareto, "mla": MLA}


def _model(fusion: str, head: str = "classification"):
    torch.manual_seed(0)
    info = get_registry().get("fusion", fusion)
    spec = {"encoders": {s: {"name": "tabular_mlp", "num_features": 3, "dim": 8, "dropout": 0.0} for s in ("a", "b", "c")},
            "fusion": {"name": fusion, **info.example_options},
            "head": {"name": head, "num_classes": 3}}
    return mmcore.build_model(spec)


def _step(model, balancer):
    batch, out = forward(model, tiny_samples())
    trainer = FakeTrainer(model)
    balancer.mmcore_train_start(trainer)
    terms = balancer.mmcore_train_loss(trainer, batch, out) or {}
    (out.loss + sum(terms.values(), torch.zeros(()))).backward()
    hook = getattr(balancer, "mmcore_before_optimizer_step", None)  # (G-Blend only weighs losses)
    if hook is not None:
        hook(trainer=trainer, step=1) if isinstance(balancer, OGMGE) else hook(trainer)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["c"].parameters())


@pytest.mark.parametrize("fusion", sorted(get_registry().names("fusion")))
def test_uni_modal_losses_train_through_every_fusion(fusion):
    # (AGM's and explain's coalitions go through every fusion in tests/plugins/explain.)
    _step(_model(fusion), MMPareto())


@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_each_balancer_with_a_head_that_reads_every_slot(name):
    _step(_model("mean", head="unimodal_ensemble"), BALANCERS[name]())
