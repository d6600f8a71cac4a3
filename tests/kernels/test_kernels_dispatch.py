"""Backend selection: argument > context manager > MMCORE_KERNELS > auto, and the errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import mmcore_kernels as mk
from mmcore_kernels import _dispatch


def _qkv(d=32):
    return torch.randn(1, 3, 1, d), torch.randn(1, 4, 1, d), torch.randn(1, 4, 1, d)


def _which(out: torch.Tensor) -> str:
    """Which path produced ``out`` on CPU: the Triton interpreter Function or the torch fallback."""
    return "triton" if out.grad_fn.name() == "CrossAttentionFunctionBackward" else "torch"


def _attn(backend=None):
    q, k, v = _qkv()
    return mk.cross_attention(q.requires_grad_(), k, v, backend=backend)


def test_import_is_light_and_standalone():
    """``import mmcore_kernels`` pulls in neither triton nor mmcore."""
    code = "import sys, mmcore_kernels; print('triton' in sys.modules, 'mmcore' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("TRITON_INTERPRET", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert res.stdout.split() == ["False", "False"], res.stdout + res.stderr


def test_public_names():
    for name in (
        "cross_attention",
        "concat_linear",
        "backend",
        "available_backends",
        "BackendUnavailableError",
    ):
        assert hasattr(mk, name)
    assert set(mk.__all__) >= {"cross_attention", "concat_linear", "backend", "available_backends"}
    assert mk.BACKENDS == ("torch", "triton")


def test_auto_on_cpu_is_torch_even_with_the_interpreter(triton_device):
    if triton_device.type != "cpu":
        pytest.skip("CPU-only behaviour")
    assert _which(_attn()) == "torch"
    assert _which(_attn("auto")) == "torch"


def test_precedence_argument_over_context_over_env(monkeypatch, triton_device):
    if triton_device.type != "cpu":
        pytest.skip("identifies the path by the CPU interpreter Function")
    monkeypatch.setenv("MMCORE_KERNELS", "triton")
    assert _which(_attn()) == "triton"
    with mk.backend("torch"):
        assert _which(_attn()) == "torch"
        assert _which(_attn("triton")) == "triton"
        with mk.backend("triton"):
            assert _which(_attn()) == "triton"
        assert _which(_attn()) == "torch"
    monkeypatch.setenv("MMCORE_KERNELS", "torch")
    assert _which(_attn()) == "torch"
    monkeypatch.setenv("MMCORE_KERNELS", "auto")
    assert _which(_attn()) == "torch"


def test_context_manager_restores_on_error():
    with pytest.raises(RuntimeError, match="boom"):
        with mk.backend("torch"):
            raise RuntimeError("boom")
    assert _dispatch.current_backend() == ("auto", "auto")


def test_invalid_backend_names():
    with pytest.raises(
        ValueError, match=r"backend=: expected one of \['torch', 'triton', 'auto'\], got 'cuda'"
    ):
        _attn("cuda")
    with pytest.raises(ValueError, match=r"mmcore_kernels.backend\(\): expected one of .* got 'tpu'"):
        with mk.backend("tpu"):
            pass
    with pytest.raises(TypeError, match="expected one of .* got int 3"):
        _attn(3)


def test_invalid_env_var(monkeypatch):
    monkeypatch.setenv("MMCORE_KERNELS", "fast")
    with pytest.raises(
        ValueError, match=r"environment variable MMCORE_KERNELS: expected one of .* got 'fast'"
    ):
        _attn()


def test_explicit_triton_without_a_way_to_run_it(monkeypatch):
    """CPU tensors, interpreter off: the error names why and what is available."""
    monkeypatch.setattr(_dispatch, "triton_interpret_active", lambda: False)
    with pytest.raises(mk.BackendUnavailableError) as err:
        _attn("triton")
    msg = str(err.value)
    assert "backend 'triton' was requested (backend='triton')" in msg
    assert "tensors are on 'cpu'" in msg and "TRITON_INTERPRET=1" in msg
    assert "Available backends for cpu tensors: ['torch']" in msg
    with pytest.raises(mk.BackendUnavailableError, match=r"requested \(MMCORE_KERNELS=triton\)"):
        monkeypatch.setenv("MMCORE_KERNELS", "triton")
        _attn()
    monkeypatch.delenv("MMCORE_KERNELS")
    with pytest.raises(mk.BackendUnavailableError, match=r"requested \(mmcore_kernels.backend\('triton'\)\)"):
        with mk.backend("triton"):
            mk.concat_linear([torch.randn(2, 3)], torch.randn(4, 3))
    assert mk.available_backends("cpu") == ["torch"]
    # Auto silently falls back.
    assert _which(_attn()) == "torch"


def test_explicit_triton_when_triton_does_not_import(monkeypatch):
    monkeypatch.setattr(
        _dispatch, "triton_import_error", lambda: "triton cannot be imported (ImportError: nope)"
    )
    with pytest.raises(
        mk.BackendUnavailableError, match=r"cannot run: triton cannot be imported \(ImportError: nope\)"
    ):
        _attn("triton")
    assert mk.available_backends("cuda") == ["torch"]
    assert _which(_attn()) == "torch"


def test_explicit_triton_with_unsupported_inputs_is_a_value_error(triton_device):
    q, k, v = (t.to(triton_device) for t in _qkv(d=48))
    with pytest.raises(ValueError, match=r"supports head dims \[16, 32, 64, 80, 96, 128\], got D=48") as err:
        mk.cross_attention(q, k, v, backend="triton")
    assert "The 'torch' backend accepts these inputs" in str(err.value)
    q, k, v = (t.to(triton_device, torch.float64) for t in _qkv())
    with pytest.raises(
        ValueError,
        match=r"supports dtypes \['torch.float16', 'torch.bfloat16', 'torch.float32'\], "
        r"got torch.float64",
    ):
        mk.cross_attention(q, k, v, backend="triton")
    with pytest.raises(ValueError, match="got torch.float64"):
        mk.concat_linear(
            [torch.randn(2, 3, dtype=torch.float64, device=triton_device)],
            torch.randn(4, 3, dtype=torch.float64, device=triton_device),
            backend="triton",
        )
    # Auto takes the torch path for the same inputs.
    assert mk.cross_attention(q, k, v).shape == q.shape


def test_available_backends(triton_device):
    assert mk.available_backends("cpu")[0] == "torch"
    expected = ["torch", "triton"]
    assert mk.available_backends(triton_device) == expected
    assert mk.available_backends() == expected


def test_concat_linear_heuristic_is_one_function():
    f = _dispatch.concat_linear_prefers_triton
    assert f(8192, 1024, (768, 512, 256), torch.float16)
    assert f(8192, 256, (768, 512, 256), torch.bfloat16)
    assert not f(8192, 128, (768, 512, 256), torch.float16)  # narrow N: per-segment cuBLAS is as good
    assert not f(512, 1024, (768, 512, 256), torch.float16)  # few rows: launch-bound
    assert not f(8192, 1024, (768, 500, 256), torch.float16)  # misaligned width
    assert not f(8192, 1024, (768, 512, 256), torch.float32)  # fp32: cuBLAS
    assert not f(8192, 1024, (16,) * 5, torch.float16)  # more segments than one launch


def test_bfloat16_is_refused_under_the_interpreter(triton_device):
    """The interpreter's bf16 tl.dot is wrong (raw-bit products); explicit triton refuses it."""
    if triton_device.type != "cpu":
        pytest.skip("interpreter-only behaviour")
    q, k, v = (t.bfloat16() for t in _qkv())
    with pytest.raises(ValueError, match="computes bfloat16 tl.dot incorrectly"):
        mk.cross_attention(q, k, v, backend="triton")
    with pytest.raises(ValueError, match="computes bfloat16 tl.dot incorrectly"):
        mk.concat_linear([torch.randn(2, 3).bfloat16()], torch.randn(4, 3).bfloat16(), backend="triton")
    assert mk.cross_attention(q, k, v).dtype == torch.bfloat16  # auto: torch path
