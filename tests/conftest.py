"""Shared fixtures. Each test that touches plugins gets its own plugin manager."""

from __future__ import annotations

import pytest

import mmcore


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
