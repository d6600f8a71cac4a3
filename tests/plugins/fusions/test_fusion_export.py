"""Every built-in fusion exports (torch.export: identical to eager; ONNX: onnxruntime within 1e-5 of
eager, absolute, every output) at graph batches of 2, 64 and 512 with 3 modalities missing at
random, so an error that grows with the batch shows. (One record runs as a graph batch of 2: the
export's front end pads a batch to ``frontend.MIN_SIZE`` -- some fusions keep a "batch is not 1"
guard under torch.export.) Among them the fusions onnxruntime once could not run -- film,
cross_attention and nl_gate (torch.where on bool masks: onnxruntime's CPU Where takes no bools) and
mcb (complex FFT). tests/test_conformance.py leaves the built-in fusions to this file (one export
each, not two)."""

from __future__ import annotations

import importlib.util

import pytest

import mmcore
from mmcore.testing import check_export

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
                                reason="needs the export extra: pip install 'mmcore[export]'")

FUSIONS = sorted(i.name for i in mmcore.create_plugin_manager().registry if i.kind == "fusion" and i.distribution == "mmcore")


def test_every_built_in_fusion_is_checked():
    assert len(FUSIONS) >= 22 and {"block", "mcb", "film", "cross_attention", "nl_gate"} <= set(FUSIONS)


@pytest.mark.slow
@pytest.mark.parametrize("name", FUSIONS)
def test_fusion_exports_and_runs_in_onnxruntime_as_eager_at_batch_2_64_512(manager, name):
    assert check_export("fusion", name, registry=manager.registry, onnx=True, num_modalities=3, atol=1e-5, rtol=0.0,
                        batch_sizes=(2, 64, 512)) is None
