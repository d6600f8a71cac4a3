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

# Under pytest-xdist (``-n N``: CI runs the suite on two workers) each worker gets its share of the
# cores and idle OpenMP threads sleep: N processes each running PyTorch's one-thread-per-core pool
# with spinning waits would fight over the cores (mmcore/threads.py has the measurements).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

if _WORKERS > 1:
    torch.set_num_threads(max(1, torch.get_num_threads() // _WORKERS))

# Triton decides interpreted-or-compiled when a @triton.jit function is decorated, and its own
# standard library (tl.max, tl.sum, ...) is decorated at `import triton`, which torchmetrics and
# torchvision trigger through torch._dynamo. So the interpreter must be switched on before any test
# module is collected, not in tests/kernels/conftest.py: a test module of tests/core importing
# torchmetrics first left every interpreted kernel calling a compiled library function.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import mmcore  # noqa: E402  (after the environment is set)

#: Session-scoped fixtures worth building once per test run, not once per xdist worker: the tests
#: using one of them go to one worker together (``--dist loadgroup``).
SHARED_SESSION_FIXTURES = {"small_run": "deploy", "small_export": "deploy"}


# tryfirst: xdist's worker reads the xdist_group marks in its own pytest_collection_modifyitems (it appends
# "@group" to each node id); without it this hook ran after xdist's and no test was ever grouped (each
# worker built every shared fixture: the deploy export twice, 2 x 171 s of setup under load).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """xdist groups (used by ``--dist loadgroup``; without xdist the marks do nothing): the tests of
    a module with a module-scoped fixture stay together, as do the users of an expensive
    session-scoped fixture, so each is built once."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs if info is not None else {}
        group = next((SHARED_SESSION_FIXTURES[name] for name in item.fixturenames if name in SHARED_SESSION_FIXTURES),
                     None)
        if group is None and any(d.scope == "module" and d.baseid for fixdefs in defs.values() for d in fixdefs):
            group = item.nodeid.split("::", 1)[0]
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


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


@pytest.fixture
def keep_threads():
    """For a test running a training in this process: a run sets PyTorch's thread count
    (``trainer.threads``) and leaves it; the next tests get this process's own count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
