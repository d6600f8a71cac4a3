"""`digit_captions`: real digit images side by side, captions of their words, test digit images unseen in training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmcore_plugins.datasets.av_digits import WORDS
from mmcore_plugins.datasets.digit_captions import load_digit_captions, split_digit_images

SMALL = {"train_size": 60, "val_size": 10, "test_size": 20}


def test_captions_name_the_digits_drawn_left_to_right(tmp_path):
    from sklearn.datasets import load_digits

    images = load_digits().images
    data = load_digit_captions("test", root=str(tmp_path), **SMALL)
    assert len(data) == 20 and data.metadata["vocab"] == WORDS["en"]
    rows = {json.loads(line)["id"]: json.loads(line) for line in
            (Path(data.metadata["root"]) / "manifest.jsonl").read_text().splitlines()}
    for sample in data:
        row = rows[sample["id"]]
        words = sample["target"].split()
        assert 2 <= len(words) <= 4 and words == [WORDS["en"][d] for d in row["digits"]]
        pixels = np.asarray(Image.open(sample["inputs"]["image"]), dtype=np.float64)
        assert pixels.shape == (8, 32)
        for slot, source in enumerate(row["sources"]):  # each slot holds that very scikit-learn image
            np.testing.assert_allclose(pixels[:, 8 * slot : 8 * slot + 8], images[source] * 255 / 16, atol=0.51)
        assert (pixels[:, 8 * len(words) :] == 0).all(), "empty slots are black"


def test_no_test_digit_image_is_used_in_training(tmp_path):
    ids = {}
    for split in ("train", "val", "test"):
        load_digit_captions(split, root=str(tmp_path), **SMALL)
    manifest = next(tmp_path.glob("*/manifest.jsonl"))
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        ids.setdefault(row["split"], set()).update(row["sources"])
    assert not ids["test"] & ids["train"] and not ids["val"] & ids["train"] and not ids["test"] & ids["val"]
    pools = split_digit_images(0, 0.15, 0.15)
    assert ids["test"] <= set(pools["test"]) and len(pools["test"]) == round(1797 * 0.15)


def test_other_languages_and_options(tmp_path):
    data = load_digit_captions("train", root=str(tmp_path), language="de", min_digits=3, max_digits=3, image_noise=0.2, **SMALL)
    assert all(len(s["target"].split()) == 3 and set(s["target"].split()) <= set(WORDS["de"]) for s in data)
    assert np.asarray(Image.open(data[0]["inputs"]["image"])).shape == (8, 24)
    again = load_digit_captions("train", root=str(tmp_path), language="de", min_digits=3, max_digits=3, image_noise=0.2, **SMALL)
    assert [s["target"] for s in again] == [s["target"] for s in data], "deterministic, served from the cache"


@pytest.mark.parametrize("options, message", [
    ({"language": "xx"}, "language must be one of"),
    ({"min_digits": 5, "max_digits": 4}, "min_digits"),
    ({"max_digits": 0}, "max_digits must be"),
    ({"train_size": 0}, "train_size must be"),
    ({"test_fraction": 0.6}, "test_fraction"),
    ({"image_noise": -1.0}, "image_noise"),
])
def test_bad_options_are_named(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        load_digit_captions("train", root=str(tmp_path), **options)
