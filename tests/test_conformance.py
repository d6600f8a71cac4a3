"""The registry-wide conformance suite: every registered encoder, fusion and head — built-in or
third-party — keeps the mmcore contracts (forward, backward, shapes, masks, missing modalities).

Components are built from their registered ``example_options``; see mmcore/testing.py for what
each check verifies.
"""

from __future__ import annotations

import pytest

import mmcore
from mmcore.testing import check_component

_manager = mmcore.create_plugin_manager()
_components = list(_manager.registry)


def _params(kind: str):
    return [pytest.param(info, id=f"{info.name}") for info in _components if info.kind == kind]


def test_every_builtin_plugin_loads():
    failed = {r.name: r.error for r in _manager.records.values() if r.distribution == "mmcore" and r.status != "ok"}
    assert not failed, f"built-in plugins failed to load: {failed}"


@pytest.mark.parametrize("info", _params("encoder"))
def test_encoder_conformance(info):
    check_component(info)


@pytest.mark.parametrize("num_modalities", [2, 3])
@pytest.mark.parametrize("info", _params("fusion"))
def test_fusion_conformance(info, num_modalities):
    check_component(info, num_modalities=num_modalities)


@pytest.mark.parametrize("info", _params("head"))
def test_head_conformance(info):
    check_component(info)


def test_every_component_has_a_one_line_doc():
    undocumented = [f"{c.kind} {c.name}" for c in _components if not c.doc]
    assert not undocumented, f"components without a docstring: {undocumented}"
