"""Shared fixtures. Each test that touches plugins gets its own plugin manager."""

from __future__ import annotations

import os

import pytest
import torch

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
