"""The Triton cross-attention kernels against float64 references: forward, LSE, dq, dk, dv.

Without a GPU these run the real kernels through the Triton interpreter on CPU tensors (see
conftest.py); with CUDA the same tests run compiled on the GPU, and the ``gpu``-marked tests add
bf16, larger shapes and the autotuned path.

The shape grid (Lq x Lk x D x mask x dtype x B/H) is covered *pairwise* rather than as a full
product: every pair of factor values appears in at least one case, which catches the interactions
that matter (tile edges x masking, D padding x dtype, ...) in ~25 interpreter runs instead of 1440.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmcore_kernels as mk
from mmcore_kernels import reference

HAS_CUDA = torch.cuda.is_available()

# Tolerances per dtype. ``atol`` is relative to the reference's largest magnitude (gradients of
# long sequences are large in absolute terms); ``rtol`` is the usual elementwise one.
TOL = {
    torch.float32: {"atol": 2e-5, "rtol": 1e-4},
    torch.float16: {"atol": 4e-3, "rtol": 1e-2},
    torch.bfloat16: {"atol": 3e-2, "rtol": 5e-2},
}

MASKS = ("none", "kv_lens", "kpm", "both", "all_masked")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert not torch.isnan(actual).any(), f"{what}: NaN in result"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.detach().double().cpu(),
        expected.detach().double().cpu(),
        atol=TOL[dtype]["atol"] * scale,
        rtol=TOL[dtype]["rtol"],
        msg=lambda m: f"{what} ({dtype}): {m}",
    )


def pairwise(factors: dict[str, list]) -> list[dict]:
    """Greedy all-pairs covering array (deterministic): each value pair of any two factors occurs."""
    names = list(factors)
    uncovered = {
        (a, va, b, vb)
        for a, b in itertools.combinations(names, 2)
        for va in range(len(factors[a]))
        for vb in range(len(factors[b]))
    }
    candidates = list(itertools.product(*(range(len(factors[n])) for n in names)))
    chosen = []
    while uncovered:
        best, best_gain = None, -1
        for cand in candidates:
            gain = sum(
                (a, cand[i], b, cand[j]) in uncovered
                for (i, a), (j, b) in itertools.combinations(enumerate(names), 2)
            )
            if gain > best_gain:
                best, best_gain = cand, gain
        for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
            uncovered.discard((a, best[i], b, best[j]))
        chosen.append({n: factors[n][best[i]] for i, n in enumerate(names)})
    return chosen


CASES = pairwise(
    {
        "lq": [1, 7, 77],
        "lk": [1, 33, 196, 257],
        "d": [32, 64, 80, 128],
        "mask": list(MASKS),
        "dtype": [torch.float32, torch.float16],
        "bh": [(1, 1), (2, 3), (3, 2)],
        "layout": ["contiguous", "projection"],
    }
)


def _case_id(c: dict) -> str:
    b, h = c["bh"]
    return f"B{b}H{h}-Lq{c['lq']}-Lk{c['lk']}-D{c['d']}-{c['mask']}-{str(c['dtype'])[6:]}-{c['layout']}"


def make_inputs(b, lq, lk, h, d, dtype, device, layout="contiguous", seed=0):
    """q, k, v as [B, L, H, D]. ``projection`` gives the strided views real models produce:
    q from a head-major tensor, k and v as slices of one fused KV projection output."""
    g = torch.Generator().manual_seed(seed)
    if layout == "contiguous":
        q = torch.randn(b, lq, h, d, generator=g)
        k = torch.randn(b, lk, h, d, generator=g)
        v = torch.randn(b, lk, h, d, generator=g)
    else:
        q = torch.randn(b, h, lq, d, generator=g).transpose(1, 2)
        kv = torch.randn(b, lk, 2, h, d, generator=g)
        k, v = kv[:, :, 0], kv[:, :, 1]
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def make_mask(kind: str, b: int, lk: int, device, seed=0):
    """(kv_lens, key_padding_mask) for a mask kind; ``all_masked`` leaves samples with no key."""
    g = torch.Generator().manual_seed(seed + 1)
    kv_lens = kpm = None
    if kind in ("kv_lens", "both"):
        kv_lens = torch.randint(1, lk + 1, (b,), generator=g)
        kv_lens[0] = lk  # one full-length sample; the rest ragged
    if kind in ("kpm", "both"):
        kpm = torch.rand(b, lk, generator=g) < 0.7
        kpm[:, 0] = True  # every sample keeps at least one key
    if kind == "all_masked":
        kv_lens = torch.full((b,), lk, dtype=torch.long)
        kv_lens[0] = 0  # sample 0: no key at all through kv_lens
        if b > 1:
            kpm = torch.ones(b, lk, dtype=torch.bool)
            kpm[-1] = False  # last sample: no key at all through the mask
    return (
        None if kv_lens is None else kv_lens.to(device),
        None if kpm is None else kpm.to(device),
    )


def reference_grads(q, k, v, kv_lens, kpm, grad_out, scale=None):
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = reference.cross_attention_naive(q64, k64, v64, kv_lens=kv_lens, key_padding_mask=kpm, scale=scale)
    out.backward(grad_out.double())
    return out.detach(), q64.grad, k64.grad, v64.grad


def run_triton(q, k, v, kv_lens, kpm, grad_out, scale=None):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = mk.cross_attention(q, k, v, kv_lens=kv_lens, key_padding_mask=kpm, scale=scale, backend="triton")
    out.backward(grad_out)
    return out.detach(), q.grad, k.grad, v.grad


def test_interpreter_or_cuda_really_runs_triton(triton_device):
    """Guard against silently testing the fallback: the kernels in use are Triton's."""
    from mmcore_kernels import triton_cross_attention as tca

    q, k, v = make_inputs(1, 3, 5, 1, 32, torch.float32, triton_device)
    out = mk.cross_attention(q.requires_grad_(), k, v, backend="triton")
    if triton_device.type == "cpu":
        assert tca.INTERPRETED
        assert type(tca._cross_attention_fwd_kernel).__name__ == "InterpretedFunction"
        assert out.grad_fn.name() == "CrossAttentionFunctionBackward"
    else:
        assert not tca.INTERPRETED


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_forward_and_gradients_match_float64(case, triton_device):
    b, h = case["bh"]
    dtype = case["dtype"]
    q, k, v = make_inputs(b, case["lq"], case["lk"], h, case["d"], dtype, triton_device, case["layout"])
    kv_lens, kpm = make_mask(case["mask"], b, case["lk"], triton_device)
    grad_out = torch.randn(b, case["lq"], h, case["d"], generator=torch.Generator().manual_seed(7))
    grad_out = grad_out.to(triton_device, dtype)
    scale = 0.3 if case["layout"] == "projection" else None  # exercise an explicit scale too

    out, dq, dk, dv = run_triton(q, k, v, kv_lens, kpm, grad_out, scale)
    ref_out, ref_dq, ref_dk, ref_dv = reference_grads(q, k, v, kv_lens, kpm, grad_out, scale)

    assert out.shape == (b, case["lq"], h, case["d"]) and out.dtype == dtype
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    assert_close(out, ref_out, dtype, "out")
    assert_close(dq, ref_dq, dtype, "dq")
    assert_close(dk, ref_dk, dtype, "dk")
    assert_close(dv, ref_dv, dtype, "dv")

    if case["mask"] == "all_masked":
        # Samples without keys: output and every gradient exactly zero (not merely small).
        dead = [0] + ([b - 1] if b > 1 else [])
        for i in dead:
            assert torch.count_nonzero(out[i]) == 0
            assert torch.count_nonzero(dq[i]) == 0
            assert torch.count_nonzero(dk[i]) == 0
            assert torch.count_nonzero(dv[i]) == 0


def test_lse_matches_reference(triton_device):
    from mmcore_kernels.triton_cross_attention import cross_attention_forward

    b, lq, lk, h, d = 3, 7, 33, 2, 64
    q, k, v = make_inputs(b, lq, lk, h, d, torch.float32, triton_device)
    kv_lens = torch.tensor([33, 0, 10], device=triton_device)
    out, lse = cross_attention_forward(q, k, v, kv_lens, None, 0.125)
    valid = reference.key_valid_mask(b, lk, kv_lens, None, q.device)
    ref = reference.cross_attention_lse(q.double(), k.double(), valid, 0.125)
    assert lse.shape == (b, h, lq) and lse.dtype == torch.float32
    assert torch.isposinf(lse[1]).all(), "a sample without keys stores lse = +inf"
    torch.testing.assert_close(lse[[0, 2]].double(), ref[[0, 2]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_small_tiles_many_loop_trips(dtype, triton_device):
    """Pinned 16x16 tiles: 17 key tiles and 5 query tiles, ragged edges everywhere, both masks."""
    from mmcore_kernels.triton_cross_attention import CrossAttentionFunction

    b, lq, lk, h, d = 2, 77, 257, 2, 80
    q, k, v = make_inputs(b, lq, lk, h, d, dtype, triton_device, "projection", seed=3)
    kv_lens = torch.tensor([257, 131], device=triton_device)
    kpm = (torch.rand(b, lk, generator=torch.Generator().manual_seed(5)) < 0.6).to(triton_device)
    kpm[:, 0] = True
    grad_out = torch.randn(b, lq, h, d, generator=torch.Generator().manual_seed(6)).to(triton_device, dtype)
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    out = CrossAttentionFunction.apply(qq, kk, vv, kv_lens, kpm, d**-0.5, {"BLOCK_M": 16, "BLOCK_N": 16})
    out.backward(grad_out)
    ref_out, ref_dq, ref_dk, ref_dv = reference_grads(q, k, v, kv_lens, kpm, grad_out)
    assert_close(out, ref_out, dtype, "out")
    assert_close(qq.grad, ref_dq, dtype, "dq")
    assert_close(kk.grad, ref_dk, dtype, "dk")
    assert_close(vv.grad, ref_dv, dtype, "dv")


def test_backward_is_deterministic(triton_device):
    b, lq, lk, h, d = 2, 40, 70, 2, 32
    q, k, v = make_inputs(b, lq, lk, h, d, torch.float32, triton_device, seed=11)
    kv_lens = torch.tensor([70, 45], device=triton_device)
    grad_out = torch.randn(b, lq, h, d, generator=torch.Generator().manual_seed(1)).to(triton_device)
    first = run_triton(q, k, v, kv_lens, None, grad_out)
    second = run_triton(q, k, v, kv_lens, None, grad_out)
    for a, c in zip(first, second, strict=True):
        assert torch.equal(a, c)


def test_out_of_range_kv_lens_are_clamped_inside_the_kernel(triton_device):
    """The public API rejects them; the kernels still must never read out of bounds (e.g. under
    torch.compile, where the value check is skipped)."""
    from mmcore_kernels.triton_cross_attention import cross_attention_forward

    q, k, v = make_inputs(2, 5, 20, 1, 32, torch.float32, triton_device)
    wild = torch.tensor([-3, 25], device=triton_device)
    tame = torch.tensor([0, 20], device=triton_device)
    out_wild, lse_wild = cross_attention_forward(q, k, v, wild, None, 0.2)
    out_tame, lse_tame = cross_attention_forward(q, k, v, tame, None, 0.2)
    assert torch.equal(out_wild, out_tame) and torch.equal(lse_wild, lse_tame)


def test_matches_torch_backend(triton_device):
    """The two backends agree with each other, not only with the float64 oracle."""
    q, k, v = make_inputs(2, 9, 50, 2, 96, torch.float32, triton_device)
    kv_lens, kpm = make_mask("both", 2, 50, triton_device)
    a = mk.cross_attention(q, k, v, kv_lens=kv_lens, key_padding_mask=kpm, backend="triton")
    c = mk.cross_attention(q, k, v, kv_lens=kv_lens, key_padding_mask=kpm, backend="torch")
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_empty_query_and_batch(triton_device):
    for b, lq in ((0, 3), (2, 0)):
        q, k, v = make_inputs(b, lq, 4, 2, 16, torch.float32, triton_device)
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        out = mk.cross_attention(q, k, v, backend="triton")
        assert out.shape == (b, lq, 2, 16)
        out.sum().backward()
        assert torch.count_nonzero(k.grad) == 0 and torch.count_nonzero(v.grad) == 0


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 2),
    lq=st.integers(1, 40),
    lk=st.integers(1, 70),
    d=st.sampled_from([16, 32, 80]),
    mask=st.sampled_from(MASKS),
    seed=st.integers(0, 2**16),
)
def test_property_triton_matches_float64(b, h, lq, lk, d, mask, seed, triton_device):
    q, k, v = make_inputs(b, lq, lk, h, d, torch.float32, triton_device, seed=seed)
    kv_lens, kpm = make_mask(mask, b, lk, triton_device, seed=seed)
    grad_out = torch.randn(b, lq, h, d, generator=torch.Generator().manual_seed(seed)).to(triton_device)
    got = run_triton(q, k, v, kv_lens, kpm, grad_out)
    want = reference_grads(q, k, v, kv_lens, kpm, grad_out)
    for name, a, c in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert_close(a, c, torch.float32, name)


# ------------------------------------------------------------------------------------------------
# GPU only: bf16, big shapes, autotuning, the torch.library op under torch.compile
# ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mask", ["none", "kv_lens", "all_masked"])
@pytest.mark.parametrize("d", [64, 80, 128])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_half_precision(dtype, d, mask):
    b, lq, lk, h = 3, 77, 257, 4
    q, k, v = make_inputs(b, lq, lk, h, d, dtype, "cuda", "projection")
    kv_lens, kpm = make_mask(mask, b, lk, "cuda")
    grad_out = torch.randn(b, lq, h, d, device="cuda", dtype=dtype)
    got = run_triton(q, k, v, kv_lens, kpm, grad_out)
    want = reference_grads(q, k, v, kv_lens, kpm, grad_out)
    for name, a, c in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert_close(a, c, dtype, name)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize(("lq", "lk"), [(77, 197), (197, 77), (128, 500), (1024, 2048), (3, 4096)])
def test_gpu_large_shapes_autotuned(lq, lk):
    """No pinned config: the autotuned kernels for every schedule class, vs the fp32 SDPA path."""
    from mmcore_kernels import triton_cross_attention as tca

    b, h, d = 4, 8, 64 if lk < 2048 else 128
    q, k, v = make_inputs(b, lq, lk, h, d, torch.float16, "cuda")
    kv_lens = torch.randint(1, lk + 1, (b,), device="cuda")
    grad_out = torch.randn(b, lq, h, d, device="cuda", dtype=torch.float16)
    got = run_triton(q, k, v, kv_lens, None, grad_out)
    q32, k32, v32 = (t.float().requires_grad_() for t in (q, k, v))
    ref = reference.cross_attention_reference(q32, k32, v32, kv_lens=kv_lens)
    ref.backward(grad_out.float())
    for name, a, c in zip(("out", "dq", "dk", "dv"), got, (ref, q32.grad, k32.grad, v32.grad), strict=True):
        assert_close(a, c, torch.float16, name)
    assert tca._autotuned.cache_info().currsize > 0


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_auto_backend_picks_triton_and_compiles():
    from mmcore_kernels import _dispatch
    from mmcore_kernels.cross_attention_op import triton_cross_attention_unsupported

    q, k, v = make_inputs(2, 77, 197, 8, 64, torch.float16, "cuda")
    assert (
        _dispatch.resolve_backend(
            "cross_attention", None, q.device, lambda: triton_cross_attention_unsupported(q)
        )
        == "triton"
    )
    q.requires_grad_()
    kv_lens = torch.tensor([197, 120], device="cuda")
    eager = mk.cross_attention(q, k, v, kv_lens=kv_lens)
    torch.testing.assert_close(
        eager, mk.cross_attention(q, k, v, kv_lens=kv_lens, backend="torch"), atol=2e-3, rtol=2e-3
    )
    compiled = torch.compile(lambda q, k, v, n: mk.cross_attention(q, k, v, kv_lens=n), fullgraph=True)
    out = compiled(q, k, v, kv_lens)
    torch.testing.assert_close(out, eager, atol=2e-3, rtol=2e-3)
    out.float().sum().backward()
    assert q.grad is not None and not torch.isnan(q.grad).any()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_opcheck():
    q, k, v = make_inputs(2, 7, 33, 2, 64, torch.float16, "cuda")
    kv_lens = torch.tensor([33, 0], device="cuda")
    from mmcore_kernels import ops  # noqa: F401  (registers the ops)

    torch.library.opcheck(
        torch.ops.mmcore_kernels.cross_attention.default,
        (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), kv_lens, None, 1 / math.sqrt(64)),
    )


def test_cuda_schedule_classes(triton_device):
    """The autotune candidate lists (pure Python; checked everywhere, used on CUDA): short sides get
    one tile covering them, tiles are powers of two >= 16, register budget respected."""
    from mmcore_kernels.triton_cross_attention import _cuda_configs

    def tiles(kind, lq, lk, d):
        configs = _cuda_configs(kind, lq, lk, d)
        assert configs
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in configs}

    for kind in ("fwd", "dq", "dkdv"):
        assert {m for m, _ in tiles(kind, 7, 4096, 64)} == {16}
        assert {m for m, _ in tiles(kind, 1, 4096, 64)} == {16}
        assert {n for _, n in tiles(kind, 4096, 33, 64)} == {64}
        assert {n for _, n in tiles(kind, 4096, 1, 64)} == {16}
        assert tiles(kind, 7, 100, 128) == {(16, 128)}
        for m, n in tiles(kind, 4096, 4096, 128):
            assert m >= 16 and n >= 16 and m & (m - 1) == 0 and n & (n - 1) == 0
            assert m * n <= (128 * 128 if kind == "fwd" else 128 * 64)
        assert len(tiles(kind, 4096, 4096, 64)) > 1  # long sequences get a real search
