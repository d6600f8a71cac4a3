"""The Triton concat_linear kernel against float64 references: forward, dX_i, dW, db.

Interpreter on CPU without a GPU (see conftest.py), compiled on CUDA otherwise; ``gpu`` tests add
bf16, the benchmark shapes, the autotuned path and the auto-dispatch heuristic.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmcore_kernels as mk

HAS_CUDA = torch.cuda.is_available()

# Per dtype; ``atol`` is relative to the reference's largest magnitude.
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-4},
    torch.float16: {"atol": 2e-3, "rtol": 1e-2},
    torch.bfloat16: {"atol": 2e-2, "rtol": 5e-2},
}


def assert_close(actual, expected, dtype, what):
    assert not torch.isnan(actual).any(), f"{what}: NaN"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.detach().double().cpu(),
        expected.detach().double().cpu(),
        atol=TOL[dtype]["atol"] * scale,
        rtol=TOL[dtype]["rtol"],
        msg=lambda m: f"{what} ({dtype}): {m}",
    )


def make(lead, widths, n, dtype, device, bias=True, seed=0, strided=False):
    g = torch.Generator().manual_seed(seed)
    xs = []
    for w in widths:
        if strided:  # a column slice of a wider tensor: row stride != K_i
            x = torch.randn(*lead, w + 3, generator=g)[..., 1 : w + 1]
        else:
            x = torch.randn(*lead, w, generator=g)
        xs.append(x.to(device, dtype))
    weight = (torch.randn(n, sum(widths), generator=g) / max(1, sum(widths)) ** 0.5).to(device, dtype)
    b = torch.randn(n, generator=g).to(device, dtype) if bias else None
    return xs, weight, b


def check(xs, weight, bias, dtype, backend="triton"):
    """Forward and every gradient of concat_linear(backend) vs float64 cat + linear."""
    xs_t = [x.detach().clone().requires_grad_() for x in xs]
    w_t = weight.detach().clone().requires_grad_()
    b_t = None if bias is None else bias.detach().clone().requires_grad_()
    out = mk.concat_linear(xs_t, w_t, b_t, backend=backend)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(out.device, dtype)
    out.backward(grad)

    xs_r = [x.detach().double().requires_grad_() for x in xs]
    w_r = weight.detach().double().requires_grad_()
    b_r = None if bias is None else bias.detach().double().requires_grad_()
    ref = F.linear(torch.cat(xs_r, -1), w_r, b_r)
    ref.backward(grad.double())

    assert out.shape == ref.shape and out.dtype == dtype
    assert_close(out, ref, dtype, "out")
    for i, (a, r) in enumerate(zip(xs_t, xs_r, strict=True)):
        assert a.grad.shape == a.shape
        assert_close(a.grad, r.grad, dtype, f"dX[{i}]")
    assert_close(w_t.grad, w_r.grad, dtype, "dW")
    if bias is not None:
        assert_close(b_t.grad, b_r.grad, dtype, "db")


CASES = [
    # (lead dims, segment widths, N, bias, dtype, strided inputs)
    ((5,), (7,), 9, True, torch.float32, False),
    ((13,), (13, 31), 33, False, torch.float32, True),
    ((2, 7), (13, 31, 5), 33, True, torch.float32, False),
    ((3, 7), (13, 31, 5, 17), 40, False, torch.float16, False),
    ((70,), (33, 1, 65), 70, True, torch.float16, True),
    ((3, 5), (100,), 3, False, torch.float16, False),
    ((1,), (3, 5, 7, 9), 1, True, torch.float32, True),
]


@pytest.mark.parametrize(
    ("lead", "widths", "n", "bias", "dtype", "strided"),
    CASES,
    ids=[
        f"{'x'.join(map(str, c[0]))}-K{'+'.join(map(str, c[1]))}-N{c[2]}-{'b' if c[3] else 'nob'}-"
        f"{str(c[4])[6:]}{'-strided' if c[5] else ''}"
        for c in CASES
    ],
)
def test_forward_and_gradients_match_float64(lead, widths, n, bias, dtype, strided, triton_device):
    xs, w, b = make(lead, widths, n, dtype, triton_device, bias=bias, strided=strided)
    check(xs, w, b, dtype)


def test_really_runs_triton(triton_device):
    from mmcore_kernels import triton_concat_linear as tcl

    xs, w, b = make((4,), (3, 5), 6, torch.float32, triton_device)
    out = mk.concat_linear([x.requires_grad_() for x in xs], w, b, backend="triton")
    if triton_device.type == "cpu":
        assert tcl.INTERPRETED
        assert type(tcl._concat_linear_fwd_kernel).__name__ == "InterpretedFunction"
        assert out.grad_fn.name() == "ConcatLinearFunctionBackward"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_more_segments_than_one_launch(dtype, triton_device):
    """Six segments: two launches chained through the fp32 workspace, bias in the last one."""
    xs, w, b = make((3, 7), (13, 31, 5, 17, 9, 3), 40, dtype, triton_device)
    check(xs, w, b, dtype)


def test_zero_width_segments(triton_device):
    xs, w, b = make((4,), (0, 5, 0), 6, torch.float32, triton_device)
    check(xs, w, b, torch.float32)
    xs, w, b = make((4,), (0,), 6, torch.float32, triton_device)
    out = mk.concat_linear(xs, w, b, backend="triton")
    torch.testing.assert_close(out, b.expand(4, 6))


def test_empty_rows(triton_device):
    xs, w, b = make((0,), (3, 4), 5, torch.float32, triton_device)
    xs = [x.requires_grad_() for x in xs]
    w.requires_grad_()
    out = mk.concat_linear(xs, w, b, backend="triton")
    assert out.shape == (0, 5)
    out.sum().backward()
    assert torch.count_nonzero(w.grad) == 0


def test_small_tiles_many_k_trips(triton_device):
    """Pinned 16x16x16 tiles: several row/column tiles (wrap-around indexing) and K tails."""
    from mmcore_kernels.triton_concat_linear import concat_linear_forward

    xs, w, b = make((45,), (37, 16, 21), 50, torch.float32, triton_device, strided=True)
    out = concat_linear_forward(xs, w, b, config={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2})
    ref = F.linear(torch.cat([x.double() for x in xs], -1), w.double(), b.double())
    assert_close(out, ref, torch.float32, "out")


def test_saves_no_concatenation(triton_device):
    """Autograd keeps the original segments (and the weight), nothing of width sum K_i x rows."""
    xs, w, b = make((6,), (3, 5, 7), 4, torch.float32, triton_device)
    xs = [x.requires_grad_() for x in xs]
    out = mk.concat_linear(xs, w.requires_grad_(), b, backend="triton")
    saved = [t for t in out.grad_fn.saved_tensors]
    assert all(t.shape != (6, 15) for t in saved)
    assert sum(t.data_ptr() == x.data_ptr() for t in saved for x in xs) == 3


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    lead=st.lists(st.integers(1, 6), min_size=1, max_size=2),
    widths=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    n=st.integers(1, 40),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_triton_matches_float64(lead, widths, n, bias, seed, triton_device):
    xs, w, b = make(tuple(lead), tuple(widths), n, torch.float32, triton_device, bias=bias, seed=seed)
    check(xs, w, b, torch.float32)


# ------------------------------------------------------------------------------------------------
# GPU only
# ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("n", [128, 256, 1024])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_benchmark_shapes_autotuned(dtype, n):
    xs, w, b = make((8192,), (768, 512, 256), n, dtype, "cuda")
    check(xs, w, b, dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_auto_dispatch_follows_heuristic():
    from mmcore_kernels import _dispatch

    assert _dispatch.concat_linear_prefers_triton(8192, 1024, (768, 512, 256), torch.float16)
    assert not _dispatch.concat_linear_prefers_triton(64, 1024, (768, 512, 256), torch.float16)
    assert not _dispatch.concat_linear_prefers_triton(8192, 1024, (767, 512, 257), torch.float16)
    assert not _dispatch.concat_linear_prefers_triton(8192, 1024, (768, 512, 256), torch.float32)
    xs, w, b = make((8192,), (768, 512, 256), 1024, torch.float16, "cuda")
    auto = mk.concat_linear(xs, w, b)
    torch.testing.assert_close(auto, mk.concat_linear(xs, w, b, backend="torch"), atol=5e-2, rtol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_compile_and_opcheck():
    from mmcore_kernels import ops  # noqa: F401

    xs, w, b = make((4, 300), (64, 32), 256, torch.float16, "cuda")
    xs = [x.requires_grad_() for x in xs]
    torch.library.opcheck(torch.ops.mmcore_kernels.concat_linear.default, (xs, w.requires_grad_(), b))
    compiled = torch.compile(lambda a, c: mk.concat_linear([a, c], w, b, backend="triton"), fullgraph=True)
    out = compiled(*xs)
    torch.testing.assert_close(out, mk.concat_linear(xs, w, b, backend="torch"), atol=1e-2, rtol=1e-2)
