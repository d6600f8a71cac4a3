"""The plugin module named by the entry point: one hook, two components."""

from __future__ import annotations

import mmcore
from mmcore_example.char_histogram import CharHistogramEncoder
from mmcore_example.max_fusion import MaxFusion


@mmcore.hookimpl
def mmcore_register(registry):
    registry.add_fusion("example_max", MaxFusion, example_options={"dim": 16})
    registry.add_encoder(
        "example_char_histogram", CharHistogramEncoder, modality="text", example_options={"dim": 16}
    )
