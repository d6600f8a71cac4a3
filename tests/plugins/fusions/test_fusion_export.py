"""The fusions whose ONNX export onnxruntime could not run -- film, cross_attention and nl_gate
(torch.where on bool masks: onnxruntime's CPU Where takes no bools) and mcb (complex FFT) -- export
and run through onnxruntime within 1e-5 of eager, with 2 and 3 modalities and random missing ones."""

from __future__ import annotations

import importlib.util

import pytest

from mmcore.testing import check_export

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
                                reason="needs the export extra: pip install 'mmcore[export]'")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["film", "cross_attention", "nl_gate", "mcb"])
def test_fusion_runs_in_onnxruntime(manager, name):
    assert check_export("fusion", name, registry=manager.registry, onnx=True, num_modalities=3, atol=1e-5) is None
