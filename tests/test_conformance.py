"""The registry-wide conformance suite: every registered encoder, fusion, head, perturbation and
dataset — built-in or third-party — keeps the mmcore contracts (forward, backward, shapes, masks,
missing modalities, batch independence, processor state, seeded perturbations, dataset samples).

Components are built from their registered ``example_options``; see mmcore/testing.py for what
each check verifies.
"""

from __future__ import annotations

import pytest

import mmcore
from mmcore.options import factory_parameters
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


@pytest.mark.parametrize("info", _params("perturbation"))
def test_perturbation_conformance(info):
    check_component(info, registry=_manager.registry)


def _needs_options(info) -> list[str]:
    """The dataset factory's required options that its example_options do not give (e.g. a file)."""
    params, _ = factory_parameters(info.factory)
    return [name for name, p in params.items() if name != "split" and name not in info.example_options
            and p.default is p.empty]


@pytest.mark.parametrize("info", _params("dataset"))
def test_dataset_conformance(info):
    missing = _needs_options(info)
    if missing:
        pytest.skip(f"dataset {info.name!r} needs options {missing} and registers no example_options giving them")
    check_component(info, registry=_manager.registry)


def test_every_component_has_a_one_line_doc():
    undocumented = [f"{c.kind} {c.name}" for c in _components if not c.doc]
    assert not undocumented, f"components without a docstring: {undocumented}"


def test_manifest_dataset_conformance_on_real_files(tmp_path):
    """The manifest needs a file, so it registers no example_options: check it on a real CSV of
    PNG images, texts and numbers (one image missing), written here."""
    import numpy as np
    from PIL import Image

    rows = ["image,caption,x,label,split"]
    for i in range(12):
        name = ""
        if i != 4:
            name = f"img{i}.png"
            Image.fromarray(np.full((6, 5, 3), 20 * i, dtype=np.uint8)).save(tmp_path / name)
        rows.append(f"{name},word {i},{i / 3:.3f},{'ab'[i % 2]},{['train', 'train', 'val', 'test'][i % 4]}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    options = {"path": str(tmp_path / "manifest.csv"), "columns": {"image": "image", "text": "caption", "numbers": ["x"]},
               "path_columns": ["image"], "target": "label", "split_column": "split"}
    built = check_component(_manager.registry.get("dataset", "manifest"), options=options, registry=_manager.registry)
    assert [len(built[s]) for s in ("train", "val", "test")] == [6, 3, 3]


#: Built-in components that refuse export (``export_refusal``), each for the reason it gives.
_REFUSE_EXPORT = {("head", "captioning")}


@pytest.mark.slow
@pytest.mark.parametrize("info", _params("encoder") + _params("fusion") + _params("head"))
def test_export_conformance(info):
    """Every registered encoder, fusion and head exports with torch.export (dynamic batch and
    lengths, the exported program equal to eager), or refuses export with a reason; the built-in
    ones that refuse are exactly those listed."""
    from mmcore.testing import check_export

    if info.kind == "fusion" and info.distribution == "mmcore":
        pytest.skip("built-in fusions: tests/plugins/fusions/test_fusion_export.py runs this check with ONNX added")
    refusal = check_export(info)
    if info.distribution == "mmcore":
        assert (refusal is not None) == ((info.kind, info.name) in _REFUSE_EXPORT), refusal
    if refusal is not None:
        assert isinstance(refusal, str) and len(refusal) > 20, "a refusal says why"
