"""Shared fixtures. Each test that touches plugins gets its own plugin manager."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `python -m pytest` puts the current folder first on sys.path. In the repository root that makes
# the source folder `kernels/` (installed as `mmcore_kernels`) importable as `kernels`, shadowing
# PyPI's `kernels` package, which transformers >= 5 imports at start-up (ImportError: cannot import
# name 'CUDAProperties' from 'kernels'). mmcore's packages come from the install, never from the root.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

import pytest  # noqa: E402
import torch  # noqa: E402

# Triton decides interpreted-or-compiled when a @triton.jit function is decorated, and its own
# standard library (tl.max, tl.sum, ...) is decorated at `import triton`, which torchmetrics and
# torchvision trigger through torch._dynamo. So the interpreter must be switched on before any test
# module is collected, not in tests/kernels/conftest.py: a test module of tests/core importing
# torchmetrics first left every interpreted kernel calling a compiled library function.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import mmcore  # noqa: E402  (after the environment is set)


@pytest.fixture
def manager():
    """A fresh plugin manager with every installed entry-point plugin loaded."""
    return mmcore.create_plugin_manager(env={})


@pytest.fixture
def empty_manager():
    """A plugin manager with no plugins at all (for runtime-registration tests)."""
    return mmcore.create_plugin_manager(env={}, load_entrypoints=False)


@pytest.fixture(autouse=True)
def _fresh_default_manager():
    """Tests that register runtime plugins on the default manager must not leak into each other."""
    yield
    mmcore.reset_plugin_manager()
