"""`mmcore export` of a component whose forward switches grad mode (a frozen pretrained encoder --
minilm, efficientnet_lite0 -- runs its backbone under ``set_grad_enabled(False)``): the saved
model.pt2 loads back and reproduces the eager model exactly; a graph that cannot be loaded back is
one line naming the file, and nothing is written."""

from __future__ import annotations

import json

import pytest
import torch

import mmcore
from mmcore.model import build_model
from mmcore.testing import check_export
from mmcore_plugins.deploy.export import ExportFailed, export_model, grad_mode_components
from mmcore_plugins.encoders.tabular import MLPTabularEncoder


class _FrozenTabular(MLPTabularEncoder):
    """Switches grad off as the frozen pretrained encoders do (text.py, image_pretrained.py)."""

    def forward(self, batch):
        with torch.set_grad_enabled(torch.is_grad_enabled() and False):
            return super().forward(batch)


class _GradOnTabular(MLPTabularEncoder):
    """Switches grad on inside forward (not a no-op under the export's no_grad)."""

    def forward(self, batch):
        with torch.enable_grad():
            return super().forward(batch)


class _BranchyTabular(MLPTabularEncoder):
    """Branches on a tensor's value: torch.export cannot trace it."""

    def forward(self, batch):
        if batch["values"].sum() > 0:
            return super().forward(batch)
        return super().forward({**batch, "values": -batch["values"]})


class _Plugin:
    @mmcore.hookimpl
    def mmcore_register(self, registry):
        registry.add_encoder("frozen_tabular", _FrozenTabular, modality="tabular", example_options={"num_features": 3, "dim": 8})
        registry.add_encoder("branchy_tabular", _BranchyTabular, modality="tabular")
        registry.add_encoder("grad_on_tabular", _GradOnTabular, modality="tabular", example_options={"num_features": 3, "dim": 8})


def _model(encoder: str):
    with mmcore.register_plugin(_Plugin(), "grad-mode-plugin"):
        spec = {"encoders": {"table": {"name": encoder, "num_features": 3, "dim": 8}}, "fusion": {"name": "concat", "dim": 8},
                "head": {"name": "classification", "num_classes": 3}}
        return build_model(spec, mmcore.get_registry()).eval()


@pytest.mark.parametrize("encoder", ["frozen_tabular", "grad_on_tabular"])
def test_a_component_switching_grad_mode_exports_to_pt2_that_loads_and_matches_eager(encoder, tmp_path):
    model = _model(encoder)
    folder = export_model(model, tmp_path / "out", fmt="pt2")
    check = json.loads((folder / "manifest.json").read_text())["verification"]["pt2"]["max_abs_diff"]
    assert check and all(v == 0 for v in check.values())
    program = torch.export.load(folder / "model.pt2").module()
    values = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -3.0]])
    categories, present = torch.zeros(2, 0, dtype=torch.long), torch.tensor([True, True])
    with torch.no_grad():  # the processors' standardisation is the front end's: compare the graphs' own inputs
        eager = model({"table": {"values": values, "categories": categories, "present": present}}).logits
    assert [i["name"] for i in json.loads((folder / "manifest.json").read_text())["inputs"]] == \
        ["table.values", "table.categories", "table.present"]
    assert torch.equal(program(values, categories, present)[0], eager)


def test_the_grad_switch_is_traced_to_its_component_by_name():
    from mmcore_plugins.deploy.export import ExportModule, component_of, plan

    model = _model("frozen_tabular")
    module = ExportModule(model, plan(model)).eval()
    inputs = (torch.zeros(2, 3), torch.zeros(2, 0, dtype=torch.long), torch.ones(2, dtype=torch.bool))
    program = torch.export.export(module, inputs, strict=False)  # grad on: the frozen switch is traced
    assert grad_mode_components(program, model) == ["encoder 'frozen_tabular' (slot 'table')"]
    assert component_of(model, "model.head") == "head 'classification'"
    assert component_of(model, "model.fusion.proj") == "fusion 'concat'"


def test_a_graph_that_cannot_be_loaded_back_is_one_line_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("Node.meta wrap_with_set_grad_enabled is missing val field.\nmore detail")

    monkeypatch.setattr(torch.export, "load", refuse)  # the loader's verifier rejecting the saved program
    with pytest.raises(ExportFailed) as caught:
        export_model(_model("tabular_mlp"), tmp_path / "out", fmt="pt2")
    assert str(caught.value) == ("model.pt2 was written but cannot be loaded back and run: RuntimeError: "
                                 "Node.meta wrap_with_set_grad_enabled is missing val field.")
    assert list(tmp_path.iterdir()) == []


def test_the_conformance_check_exports_a_grad_switching_encoder_as_mmcore_export_does():
    with mmcore.register_plugin(_Plugin(), "grad-mode-plugin"):
        assert check_export("encoder", "frozen_tabular", registry=mmcore.get_registry()) is None


def test_a_component_the_tracer_fails_on_is_named_in_one_line_and_nothing_is_written(tmp_path):
    with pytest.raises(ExportFailed) as caught:
        export_model(_model("branchy_tabular"), tmp_path / "out", fmt="pt2")
    message = str(caught.value)
    assert message.startswith("torch.export failed in encoder 'branchy_tabular' (slot 'table'): ") and "\n" not in message
    assert list(tmp_path.iterdir()) == []
