"""max_pool_2x2: F.max_pool2d(x, 2)'s values and gradients, through the CPU's channels-last kernel."""

import pytest
import torch
import torch.nn.functional as F

from mmcore_plugins.layers import MaxPool2x2, max_pool_2x2


@pytest.mark.parametrize("shape", [(1, 16, 40, 24), (3, 8, 7, 9), (32, 16, 40, 24), (2, 1, 2, 2), (1, 4, 3, 5)])
def test_same_values_as_max_pool2d(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x[..., ::3, ::2] = 0.0  # ties, as padding zeros make them
    want = F.max_pool2d(x, 2)
    with torch.inference_mode():
        got = max_pool_2x2(x)
    assert torch.equal(got, want) and got.is_contiguous()
    assert torch.equal(MaxPool2x2()(x), want)


@pytest.mark.parametrize("shape", [(1, 8, 6, 6), (8, 16, 16, 16)])
def test_same_gradients_as_max_pool2d(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    g = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=torch.Generator().manual_seed(2))
    grads = []
    for pool in (max_pool_2x2, lambda t: F.max_pool2d(t, 2)):
        leaf = x.clone().requires_grad_()
        pool(leaf).backward(g)
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])


def test_not_a_number_propagates():
    x = torch.zeros(1, 2, 4, 4)
    x[0, 1, 2, 3] = float("nan")
    got = max_pool_2x2(x)
    assert torch.isnan(got[0, 1, 1, 1]) and torch.isnan(got).sum() == 1


def test_exported_graph_keeps_one_max_pool():
    program = torch.export.export(MaxPool2x2(), (torch.randn(2, 3, 8, 8),), strict=False)
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets == ["aten.max_pool2d.default"]



def test_gradients_reach_the_layer_before_contiguous():
    """A training step's gradient reaches the layer before the pooling (GELU in the encoders) in NCHW layout:
    a channels-last one would send that layer's backward down a slower mixed-layout path."""
    leaf = torch.randn(4, 8, 16, 16).requires_grad_()
    hidden = F.gelu(leaf)
    seen = []
    hidden.register_hook(lambda grad: seen.append(grad.is_contiguous()))
    max_pool_2x2(hidden).sum().backward()
    assert seen == [True]
