"""Bad input: every check raises TypeError/ValueError saying what was expected and what came.

Validation runs before dispatch, so each case is checked on both backends (the Triton one through
the interpreter on CPU).
"""

from __future__ import annotations

import pytest
import torch

import mmcore_kernels as mk

BACKENDS = ["torch", "triton"]


@pytest.fixture(params=BACKENDS)
def backend(request, triton_device):
    if request.param == "triton" and triton_device.type != "cpu":
        pytest.skip("validation is device-independent; the CPU run covers it")
    return request.param


def qkv(b=2, lq=3, lk=5, h=2, d=16, dtype=torch.float32):
    return (
        torch.randn(b, lq, h, d, dtype=dtype),
        torch.randn(b, lk, h, d, dtype=dtype),
        torch.randn(b, lk, h, d, dtype=dtype),
    )


ATTENTION_ERRORS = [
    # (description, kwargs-builder, exception, message pattern)
    ("q not a tensor", lambda q, k, v: dict(q=q.tolist()), TypeError, r"q must be a torch.Tensor, got list"),
    (
        "q 3-D",
        lambda q, k, v: dict(q=q[:, :, 0]),
        ValueError,
        r"q must be 4-D \[B, Lq, H, D\], got 3-D tensor of shape \[2, 3, 16\]",
    ),
    ("k 5-D", lambda q, k, v: dict(k=k[None]), ValueError, r"k must be 4-D \[B, Lk, H, D\], got 5-D"),
    (
        "batch mismatch",
        lambda q, k, v: dict(k=k[:1], v=v[:1]),
        ValueError,
        r"k batch \(dim 0\) must equal q's: expected 2, got 1",
    ),
    (
        "heads mismatch",
        lambda q, k, v: dict(v=v[:, :, :1]),
        ValueError,
        r"v heads \(dim 2\) must equal q's: expected 2, got 1",
    ),
    (
        "head dim mismatch",
        lambda q, k, v: dict(k=k[..., :8]),
        ValueError,
        r"k head dim \(dim 3\) must equal q's: expected 16, got 8",
    ),
    (
        "k/v length mismatch",
        lambda q, k, v: dict(v=v[:, :4]),
        ValueError,
        r"k and v must have the same number of keys Lk, got k \[2, 5, 2, 16\] and v \[2, 4, 2, 16\]",
    ),
    (
        "no keys",
        lambda q, k, v: dict(k=k[:, :0], v=v[:, :0]),
        ValueError,
        r"expected at least one key \(Lk >= 1\), got Lk=0",
    ),
    (
        "mixed dtypes",
        lambda q, k, v: dict(v=v.half()),
        TypeError,
        r"q, k and v must share one dtype, got q=torch.float32, k=torch.float32, v=torch.float16",
    ),
    (
        "integer dtype",
        lambda q, k, v: dict(q=q.int(), k=k.int(), v=v.int()),
        TypeError,
        r"expected a floating dtype in .* got torch.int32",
    ),
    (
        "kv_lens float",
        lambda q, k, v: dict(kv_lens=torch.tensor([1.0, 2.0])),
        TypeError,
        r"kv_lens must be an integer tensor .* got torch.float32",
    ),
    (
        "kv_lens bool",
        lambda q, k, v: dict(kv_lens=torch.tensor([True, False])),
        TypeError,
        r"kv_lens must be an integer tensor .* got torch.bool",
    ),
    (
        "kv_lens wrong shape",
        lambda q, k, v: dict(kv_lens=torch.tensor([[1, 2]])),
        ValueError,
        r"kv_lens must have shape \[B\] = \[2\], got \[1, 2\]",
    ),
    (
        "kv_lens wrong length",
        lambda q, k, v: dict(kv_lens=torch.tensor([1, 2, 3])),
        ValueError,
        r"kv_lens must have shape \[B\] = \[2\], got \[3\]",
    ),
    (
        "kv_lens not a tensor",
        lambda q, k, v: dict(kv_lens=[1, 2]),
        TypeError,
        r"kv_lens must be a torch.Tensor, got list",
    ),
    (
        "kv_lens negative",
        lambda q, k, v: dict(kv_lens=torch.tensor([-1, 2])),
        ValueError,
        r"kv_lens values must lie in \[0, Lk\] = \[0, 5\], got min -1, max 2",
    ),
    (
        "kv_lens too long",
        lambda q, k, v: dict(kv_lens=torch.tensor([3, 6])),
        ValueError,
        r"kv_lens values must lie in \[0, Lk\] = \[0, 5\], got min 3, max 6",
    ),
    (
        "mask not bool",
        lambda q, k, v: dict(key_padding_mask=torch.ones(2, 5)),
        TypeError,
        r"key_padding_mask must be a bool tensor \(True = real key\), got torch.float32",
    ),
    (
        "mask wrong shape",
        lambda q, k, v: dict(key_padding_mask=torch.ones(2, 1, 5, dtype=torch.bool)),
        ValueError,
        r"key_padding_mask must have shape \[B, Lk\] = \[2, 5\], got \[2, 1, 5\]",
    ),
    (
        "mask would broadcast",
        lambda q, k, v: dict(key_padding_mask=torch.ones(1, 5, dtype=torch.bool)),
        ValueError,
        r"key_padding_mask must have shape \[B, Lk\] = \[2, 5\], got \[1, 5\]",
    ),
    (
        "mask over queries",
        lambda q, k, v: dict(key_padding_mask=torch.ones(2, 3, dtype=torch.bool)),
        ValueError,
        r"key_padding_mask must have shape \[B, Lk\] = \[2, 5\], got \[2, 3\]",
    ),
    (
        "scale a string",
        lambda q, k, v: dict(scale="0.1"),
        TypeError,
        r"scale must be a float or None, got str",
    ),
    ("scale a bool", lambda q, k, v: dict(scale=True), TypeError, r"scale must be a float or None, got bool"),
    ("scale nan", lambda q, k, v: dict(scale=float("nan")), ValueError, r"scale must be finite, got nan"),
]


@pytest.mark.parametrize(
    ("what", "build", "exc", "pattern"), ATTENTION_ERRORS, ids=[e[0] for e in ATTENTION_ERRORS]
)
def test_cross_attention_bad_input(what, build, exc, pattern, backend):
    q, k, v = qkv()
    args = {"q": q, "k": k, "v": v}
    args.update(build(q, k, v))
    with pytest.raises(exc, match=pattern):
        mk.cross_attention(args.pop("q"), args.pop("k"), args.pop("v"), backend=backend, **args)


def test_cross_attention_mask_on_another_device_is_named():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"kv_lens must be on q's device cpu, got cuda:0"):
        mk.cross_attention(q, k, v, kv_lens=torch.tensor([1, 2], device="cuda"))


def test_cross_attention_kv_lens_and_mask_combine(backend):
    """Both given is supported (not rejected): a key must pass both."""
    q, k, v = qkv()
    kv_lens = torch.tensor([5, 3])
    kpm = torch.tensor([[True, False, True, True, True], [True, True, True, True, True]])
    both = mk.cross_attention(q, k, v, kv_lens=kv_lens, key_padding_mask=kpm, backend=backend)
    combined = kpm & (torch.arange(5)[None] < kv_lens[:, None])
    torch.testing.assert_close(both, mk.cross_attention(q, k, v, key_padding_mask=combined, backend="torch"))


CONCAT_ERRORS = [
    (
        "single tensor",
        lambda xs, w, b: dict(xs=xs[0]),
        TypeError,
        r"xs must be a list or tuple of tensors \[\.\.\., K_i\], got Tensor \(wrap a single tensor as \[x\]\)",
    ),
    (
        "generator",
        lambda xs, w, b: dict(xs=(x for x in xs)),
        TypeError,
        r"xs must be a list or tuple of tensors .* got generator",
    ),
    (
        "empty",
        lambda xs, w, b: dict(xs=[]),
        ValueError,
        r"xs must contain at least one tensor \[\.\.\., K_i\], got an empty list",
    ),
    (
        "non-tensor element",
        lambda xs, w, b: dict(xs=[xs[0], 3.0]),
        TypeError,
        r"xs\[1\] must be a torch.Tensor, got float",
    ),
    (
        "0-D element",
        lambda xs, w, b: dict(xs=[xs[0], torch.tensor(1.0)]),
        ValueError,
        r"xs\[1\] must have at least one dimension",
    ),
    (
        "unequal leading dims",
        lambda xs, w, b: dict(xs=[xs[0], xs[1][:2]]),
        ValueError,
        r"every xs\[i\] must have the same leading dims as xs\[0\] \[3, 4\] \(no broadcasting\), got xs\[1\] of shape \[2, 4, 7\]",
    ),
    (
        "broadcastable leading dims",
        lambda xs, w, b: dict(xs=[xs[0], xs[1][:1]]),
        ValueError,
        r"same leading dims as xs\[0\] \[3, 4\] \(no broadcasting\), got xs\[1\] of shape \[1, 4, 7\]",
    ),
    (
        "different ndim",
        lambda xs, w, b: dict(xs=[xs[0], xs[1].reshape(12, 7)]),
        ValueError,
        r"got xs\[1\] of shape \[12, 7\]",
    ),
    (
        "weight too narrow",
        lambda xs, w, b: dict(weight=w[:, :11]),
        ValueError,
        r"weight must have sum K_i = 5 \+ 7 = 12 columns, got weight of shape \[6, 11\]",
    ),
    (
        "weight transposed",
        lambda xs, w, b: dict(weight=w.t()),
        ValueError,
        r"weight must have sum K_i = 5 \+ 7 = 12 columns, got weight of shape \[12, 6\]",
    ),
    (
        "weight 1-D",
        lambda xs, w, b: dict(weight=w[0]),
        ValueError,
        r"weight must be 2-D \[N, sum K_i\], got shape \[12\]",
    ),
    (
        "weight not a tensor",
        lambda xs, w, b: dict(weight=None),
        TypeError,
        r"weight must be a torch.Tensor, got NoneType",
    ),
    (
        "bias wrong size",
        lambda xs, w, b: dict(bias=b[:5]),
        ValueError,
        r"bias must have shape \[N\] = \[6\], got \[5\]",
    ),
    (
        "bias 2-D",
        lambda xs, w, b: dict(bias=b[None]),
        ValueError,
        r"bias must have shape \[N\] = \[6\], got \[1, 6\]",
    ),
    (
        "mixed dtypes",
        lambda xs, w, b: dict(xs=[xs[0], xs[1].double()]),
        TypeError,
        r"xs, weight and bias must share one dtype, got xs\[0\]=torch.float32, xs\[1\]=torch.float64, "
        r"weight=torch.float32, bias=torch.float32",
    ),
    ("bias dtype", lambda xs, w, b: dict(bias=b.half()), TypeError, r"bias=torch.float16"),
    (
        "integer dtype",
        lambda xs, w, b: dict(xs=[x.long() for x in xs], weight=w.long(), bias=b.long()),
        TypeError,
        r"expected a floating dtype in .* got torch.int64",
    ),
]


@pytest.mark.parametrize(
    ("what", "build", "exc", "pattern"), CONCAT_ERRORS, ids=[e[0] for e in CONCAT_ERRORS]
)
def test_concat_linear_bad_input(what, build, exc, pattern, backend):
    xs = [torch.randn(3, 4, 5), torch.randn(3, 4, 7)]
    w, b = torch.randn(6, 12), torch.randn(6)
    args = {"xs": xs, "weight": w, "bias": b}
    args.update(build(xs, w, b))
    with pytest.raises(exc, match=pattern):
        mk.concat_linear(args["xs"], args["weight"], args["bias"], backend=backend)


def test_no_bare_asserts_on_user_input():
    """Python -O must not change validation: the checks are explicit raises, not asserts."""
    import ast
    import inspect

    from mmcore_kernels import _validate, concat_linear_op, cross_attention_op

    for module in (_validate, cross_attention_op, concat_linear_op):
        tree = ast.parse(inspect.getsource(module))
        assert not [node for node in ast.walk(tree) if isinstance(node, ast.Assert)], module.__name__
