"""Kernel-test setup: run the real Triton kernels through the Triton interpreter when there is no GPU.

tests/conftest.py switches the interpreter on before any test module is collected (Triton's own
standard library is decorated at `import triton`, which other test modules trigger); this file
repeats it for a run of tests/kernels alone from another root. The
whole test process shares it; that is fine because without CUDA nothing else could use a compiled
Triton kernel anyway. With CUDA the kernels compile for the GPU and the same tests run on CUDA
tensors.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from mmcore_kernels import _dispatch  # noqa: E402  (after the environment is set)

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="session")
def triton_device() -> torch.device:
    """Where the Triton kernels run in this session: CUDA, else CPU under the interpreter."""
    problem = _dispatch.triton_import_error()
    if problem is not None:
        pytest.skip(problem)
    if HAS_CUDA:
        return torch.device("cuda")
    if not _dispatch.triton_interpret_active():
        pytest.fail(
            "no CUDA and the Triton interpreter is off (TRITON_INTERPRET is not 1, or the kernel "
            "modules were imported before it was set): the Triton kernels cannot be tested"
        )
    return torch.device("cpu")


@pytest.fixture(autouse=True)
def clean_backend_env(monkeypatch):
    """No MMCORE_KERNELS override leaking in from the environment, no context left open."""
    monkeypatch.delenv(_dispatch.ENV_VAR, raising=False)
    assert not _dispatch._stack
    yield
    assert not _dispatch._stack
