"""The application configs end to end at a tiny size: configs/captioning.yaml (train, evaluate, predict
with the beam's alternatives) and configs/retrieval.yaml (train, evaluate, embed, search by a WAV)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmcore.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_captioning_config_trains_evaluates_and_predicts_a_caption_with_alternatives(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = [f"data.root={tmp_path / 'data'}", "data.train_size=96", "data.val_size=16", "data.test_size=16",
            "model.encoders.image.width=8", "model.encoders.image.dim=32", "model.head.dim=32", "model.head.layers=1",
            "trainer.epochs=2", "trainer.batch_size=32", f"trainer.run_dir={run}", "trainer.progress=false", "trainer.plots=false"]
    assert main(["train", str(CONFIGS / "captioning.yaml"), *tiny]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["test"]) >= {"bleu", "exact_match", "token_accuracy"}
    assert all(0.0 <= report["test"][m] <= 1.0 for m in ("bleu", "exact_match", "token_accuracy"))
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 16
    image = next((tmp_path / "data").glob("*/images/test_00000.png"))
    assert main(["predict", str(run), f"image={image}"]) == 0
    prediction = json.loads(capsys.readouterr().out)["prediction"]
    vocab = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert isinstance(prediction["caption"], str) and set(prediction["caption"].split()) <= vocab
    alternatives = prediction["alternatives"]
    assert 1 <= len(alternatives) <= 3 and all(a["caption"] != prediction["caption"] for a in alternatives)
    scores = [prediction["score"], *(a["score"] for a in alternatives)]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores), "log-probabilities, best first"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_retrieval_config_trains_embeds_and_searches_images_by_a_spoken_digit(tmp_path, capsys):
    pytest.importorskip("faiss")
    run = tmp_path / "run"
    tiny = [f"data.root={tmp_path / 'data'}", "data.size=60", "data.train_views=1", "data.test_voices=2",
            "data.val_voices=2", "model.encoders.image.width=8", "model.encoders.audio.width=4",
            "trainer.epochs=1", "trainer.batch_size=16", f"trainer.run_dir={run}", "trainer.progress=false", "trainer.plots=false"]
    assert main(["train", str(CONFIGS / "retrieval.yaml"), *tiny]) == 0
    report = json.loads(capsys.readouterr().out)
    for direction in ("ab", "ba"):
        assert 0.0 <= report["test"][f"recall@1_{direction}"] <= report["test"][f"recall@10_{direction}"] <= 1.0
        assert report["test"][f"median_rank_{direction}"] >= 1.0
    index = tmp_path / "images.faiss"
    assert main(["embed", str(run), "--split", "test", "--out", str(tmp_path / "test.parquet"), "--index", str(index),
                 "--vector", "head.image"]) == 0
    capsys.readouterr()
    wav = next((tmp_path / "data").glob("*/audio/*.wav"))
    assert main(["search", str(run), "--index", str(index), "--query", str(wav), "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["slot"] == "audio" and result["vector"] == "head.image" and len(result["neighbours"]) == 3
    assert all(n["id"].startswith("test:") and 0 <= n["target"] <= 9 for n in result["neighbours"])
    # A word for a model without a text slot, and an image against an image index's own space: clear errors.
    assert main(["search", str(run), "--index", str(index), "--query", "seven"]) == 2
    assert "no text slot" in capsys.readouterr().err
    assert main(["embed", str(run), "--split", "test", "--out", str(tmp_path / "t.npz"), "--index", str(tmp_path / "a.faiss"),
                 "--vector", "audio"]) == 0
    capsys.readouterr()
    image = next((tmp_path / "data").glob("*/images/*.png"))
    assert main(["search", str(run), "--index", str(tmp_path / "a.faiss"), "--query", str(image)]) == 2
    assert "not comparable" in capsys.readouterr().err
