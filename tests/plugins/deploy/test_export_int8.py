"""`mmcore export --int8`: onnxruntime's root-logger advice about its pre-processing script is not
printed (every other log record is), and an int8 graph whose predictions differ from fp32 on the
verification records is one warning line with the numbers in the export's summary."""

from __future__ import annotations

import json
import logging

import mmcore
from mmcore.model import build_model
from mmcore_plugins.deploy.export import (
    INT8_WARN_PROBABILITY,
    VERIFY_BATCHES,
    export_model,
    int8_warning,
    quiet_quantisation_advice,
)

ADVICE = ("Please consider to run pre-processing before quantization. Refer to example: "
          "https://github.com/microsoft/onnxruntime-inference-examples/blob/main/quantization/image_classification/cpu/ReadMe.md ")


def test_the_int8_export_logs_no_advice_and_records_the_agreement(tmp_path, caplog):
    spec = {"encoders": {"table": {"name": "tabular_mlp", "num_features": 3, "dim": 8}}, "fusion": {"name": "concat", "dim": 8},
            "head": {"name": "classification", "num_classes": 3}}
    model = build_model(spec, mmcore.get_registry())
    with caplog.at_level(logging.INFO):
        folder = export_model(model, tmp_path / "out", fmt="onnx", int8=True)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    entry = json.loads((folder / "manifest.json").read_text())["verification"]["int8"]
    same, total = entry["records_agreeing"]
    assert total == sum(VERIFY_BATCHES) and 0 <= same <= total
    warned = int8_warning({"int8": entry}) is not None
    assert warned == (same < total or entry["max_abs_diff"]["probabilities"] > INT8_WARN_PROBABILITY)


def test_only_the_advice_is_dropped_and_no_handler_is_left_behind(capfd):
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # as in `mmcore export`: nothing configured the root logger
    try:
        with quiet_quantisation_advice():
            logging.warning(ADVICE)
            logging.warning("Please consider pre-processing before quantization. See https://example")
            logging.error("a real quantisation error")
        assert root.handlers == []
    finally:
        root.handlers[:] = saved
    err = capfd.readouterr().err
    assert "pre-processing" not in err and "a real quantisation error" in err


def test_an_int8_graph_that_disagrees_is_one_warning_line_with_the_numbers():
    agree = {"max_abs_diff": {"logits": 0.01, "predictions": 0.0, "probabilities": 0.004}, "records_agreeing": [15, 15]}
    assert int8_warning({"int8": agree}) is None
    assert int8_warning({"onnx": agree}) is None
    moved = {"max_abs_diff": {"logits": 0.42, "predictions": 0.0, "probabilities": 0.17}, "records_agreeing": [15, 15]}
    assert int8_warning({"int8": moved}) == (
        "warning: model.int8.onnx predicts as the fp32 model on 15/15 verification records (100%); max |logit difference| "
        "0.42, max |probability difference| 0.17 -- check it on your own data, or serve model.onnx (mmcore serve --graph model.onnx)")
    flipped = {"max_abs_diff": {"logits": 0.03, "predictions": 1.0, "probabilities": 0.01}, "records_agreeing": [14, 15]}
    line = int8_warning({"int8": flipped})
    assert "on 14/15 verification records (93%)" in line and "\n" not in line
