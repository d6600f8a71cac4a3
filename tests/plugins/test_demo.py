"""`mmcore demo` (a command added by a plugin hook): fused and single-modality runs, one table."""

import json
import shutil

import pytest

from mmcore.cli import main
from mmcore_plugins.demo import unimodal_variants


def test_unimodal_variants_keep_one_encoder_and_drop_the_fusion():
    config = {"model": {"encoders": {"a": {"name": "x"}, "b": {"name": "y"}}, "fusion": {"name": "concat"}, "head": {}}}
    variants = unimodal_variants(config)
    assert list(variants) == ["a only", "b only"]
    assert variants["b only"]["model"] == {"encoders": {"b": {"name": "y"}}, "head": {}}
    assert "fusion" in config["model"], "the original config is untouched"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_demo_runs_end_to_end_and_prints_the_table(tmp_path, capsys):
    code = main(["demo", "--run-dir", str(tmp_path / "runs"), f"data.root={tmp_path / 'data'}", "trainer.epochs=1"])
    out = capsys.readouterr().out
    assert code == 0
    for label in ("image only", "audio only", "text only", "fused (concat)"):
        assert label in out
    results = json.loads((tmp_path / "runs" / "demo.json").read_text())
    assert set(results) == {"image only", "audio only", "text only", "fused (concat)"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results.values())
    assert (tmp_path / "runs" / "fused" / "best" / "model.safetensors").is_file()
