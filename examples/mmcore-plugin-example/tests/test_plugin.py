"""The example plugin keeps mmcore's contracts (the same checks mmcore runs on its built-ins)."""

from mmcore_example.char_histogram import CharHistogramEncoder
from mmcore_example.max_fusion import MaxFusion

import mmcore
from mmcore.testing import check_component, check_encoder, check_fusion


def test_fusion_conformance():
    check_fusion(MaxFusion, options={"dim": 8})
    check_fusion(MaxFusion, options={"dim": 8}, input_dims={"a": 3, "b": 5})


def test_encoder_conformance():
    check_encoder(CharHistogramEncoder(dim=8))


def test_registered_through_the_entry_point_when_installed():
    registry = mmcore.create_plugin_manager().registry
    check_component(registry.get("fusion", "example_max"))
    assert registry.get("encoder", "example_char_histogram").modality == "text"
    kinds = {(info.kind, info.name) for info in registry.by_plugin("example")}
    assert kinds == {("fusion", "example_max"), ("encoder", "example_char_histogram"),
                     ("perturbation", "example_char_noise"), ("dataset", "example_palindromes"),
                     ("logger", "example_jsonl"), ("head", "example_margin")}
    check_component(registry.get("head", "example_margin"))


def test_histogram_counts_characters():
    processor = CharHistogramEncoder().processor()
    hist = processor("aab")
    assert hist[0] == 2 / 3 and hist[1] == 1 / 3
