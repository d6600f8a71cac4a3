"""A small real run shared by the deploy tests: PNG images, WAV clips, texts and a number, three
classes, written here as files and trained for one epoch (image_cnn + audio_cnn +
text_transformer + tabular_mlp, gated fusion); and its export: ONNX (+ int8) and pt2 from one torch.export."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_helpers import write_config, write_data


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    from mmcore.cli import main

    folder = tmp_path_factory.mktemp("deploy_run")
    assert main(["train", str(write_config(folder, write_data(folder)))]) == 0
    return folder / "run"


@pytest.fixture(scope="session")
def small_export(small_run, tmp_path_factory) -> Path:
    from mmcore.cli import main

    out = tmp_path_factory.mktemp("deploy_export") / "export"
    assert main(["export", str(small_run), "--format", "onnx,pt2", "--int8", "--out", str(out)]) == 0
    return out
