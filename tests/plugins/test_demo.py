"""`mmcore demo` (a command added by a plugin hook): fused and single-modality runs, one table."""

import json
import shutil

import pytest
import yaml

from mmcore.cli import main
from mmcore_plugins.demo import DEFAULT_CONFIG, unimodal_variants


def test_unimodal_variants_keep_one_encoder_and_drop_the_fusion():
    config = {"model": {"encoders": {"a": {"name": "x"}, "b": {"name": "y"}}, "fusion": {"name": "concat"}, "head": {}},
              "trainer": {"augment": {"a": {"speed": 0.1}}, "modality_dropout": 0.2,
                          "lr_multipliers": {"encoders.a": 0.1, "fusion": 2.0, "head": 0.5}}}
    variants = unimodal_variants(config)
    assert list(variants) == ["a only", "b only"]
    assert variants["b only"]["model"] == {"encoders": {"b": {"name": "y"}}, "head": {}}
    assert variants["b only"]["trainer"] == {"augment": {}, "modality_dropout": 0.0, "lr_multipliers": {"head": 0.5}}
    assert variants["a only"]["trainer"]["augment"] == {"a": {"speed": 0.1}}
    assert variants["a only"]["trainer"]["lr_multipliers"] == {"encoders.a": 0.1, "head": 0.5}
    assert "fusion" in config["model"], "the original config is untouched"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_demo_runs_end_to_end_and_prints_the_table(tmp_path, capsys):
    code = main(["demo", "--run-dir", str(tmp_path / "runs"), "--perturbations", "gaussian_noise,typos",
                 f"data.root={tmp_path / 'data'}", "trainer.epochs=1",
                 # 200 of the 1,797 digits, one view each: the whole pipeline, a fraction of the synthesis
                 "data.size=200", "data.train_views=1"])
    out = capsys.readouterr().out
    assert code == 0
    fused = f"fused ({yaml.safe_load(DEFAULT_CONFIG.read_text())['model']['fusion']['name']})"
    for label in ("image only", "audio only", "text only", fused):
        assert label in out
    results = json.loads((tmp_path / "runs" / "demo.json").read_text())
    assert set(results) == {"image only", "audio only", "text only", fused}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results.values())
    assert (tmp_path / "runs" / "fused" / "best" / "model.safetensors").is_file()
    assert "fused minus best single modality" in out and "image + audio + text" in out
    robustness = json.loads((tmp_path / "runs" / "fused" / "robustness" / "test.json").read_text())
    assert len(robustness["missing"]) == 7, "every non-empty subset of the three modalities"
    assert {r["perturbation"] for r in robustness["perturbed"]} == {"gaussian_noise", "typos"}
