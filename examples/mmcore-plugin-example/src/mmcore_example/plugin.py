"""The plugin module named by the entry point: one registration hook for every component kind, plus a
command and a lifecycle hook (pluggy collects every ``@mmcore.hookimpl`` of this module)."""

from __future__ import annotations

import mmcore
from mmcore_example.char_histogram import CharHistogramEncoder
from mmcore_example.char_noise import CharNoise
from mmcore_example.commands import mmcore_add_commands  # noqa: F401 - a hook of this plugin
from mmcore_example.jsonl_logger import JsonlLogger
from mmcore_example.lifecycle import mmcore_epoch_end  # noqa: F401 - a hook of this plugin
from mmcore_example.margin_head import MarginHead
from mmcore_example.max_fusion import MaxFusion
from mmcore_example.palindromes import load_palindromes


@mmcore.hookimpl
def mmcore_register(registry):
    registry.add_fusion("example_max", MaxFusion, example_options={"dim": 16})
    # The modality comes from CharHistogramEncoder.modality (one source).
    registry.add_encoder("example_char_histogram", CharHistogramEncoder, example_options={"dim": 16})
    registry.add_head("example_margin", MarginHead)
    registry.add_perturbation("example_char_noise", CharNoise, example_options={"level": 0.2})
    registry.add_dataset("example_palindromes", load_palindromes, example_options={"size": 40})
    registry.add_logger("example_jsonl", JsonlLogger)
