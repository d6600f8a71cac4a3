"""The config builder's choices and the time-limit arithmetic (with injected step times: nothing is timed)."""

from __future__ import annotations

import pytest

from mmcore_plugins.autofit.choose import (
    MAX_EPOCHS,
    MIN_EPOCHS,
    StepTimes,
    build_config,
    cached_slots,
    epochs_for_budget,
    parse_duration,
)
from mmcore_plugins.autofit.infer import ColumnInfo
from mmcore_plugins.autofit.prepare import make_plan


def _infos(*columns: tuple[str, str, dict], target: str = "classification") -> list[ColumnInfo]:
    infos = [ColumnInfo(name, kind, "test", 0.0, details=details) for name, kind, details in columns]
    details = {"classes": ["a", "b", "c"]} if target == "classification" else {"labels": ["x", "y"]} if target == "multilabel" else {}
    return [*infos, ColumnInfo("y", target, "test", 0.0, role="target", details=details)]


def _config(infos, *, n_train=500, preset="best", available=None):
    plan = make_plan(infos, [{"n": 1.0}] * 3)
    return build_config(plan, infos, n_train=n_train, data_path="/d/data.jsonl", run_dir="/d", preset=preset,
                        available=available or {"minilm": True, "efficientnet_lite0": True})


def test_epochs_fill_the_budget():
    times = StepTimes(cold_step=0.3, warm_step=0.1, eval_sample=0.002)
    # an epoch: 20 steps * 0.1 s + 100 val rows * 0.002 s = 2.2 s; once: 20 * (0.3 - 0.1) = 4 s
    assert epochs_for_budget(4 + 2.2 * 10, times, steps_per_epoch=20, val_rows=100, rows=500) == 10
    assert epochs_for_budget(4 + 2.2 * 10 - 0.01, times, steps_per_epoch=20, val_rows=100, rows=500) == 9
    # frozen-feature precomputation per row is paid once
    slow_setup = StepTimes(cold_step=0.3, warm_step=0.1, eval_sample=0.002, setup_per_row=0.01)
    assert epochs_for_budget(4 + 5 + 2.2 * 10, slow_setup, steps_per_epoch=20, val_rows=100, rows=500) == 10
    # clipped: never fewer than MIN_EPOCHS (a budget already spent), never more than the preset's cap
    assert epochs_for_budget(-50, times, steps_per_epoch=20, val_rows=100, rows=500) == MIN_EPOCHS
    assert epochs_for_budget(1e6, times, steps_per_epoch=20, val_rows=100, rows=500, max_epochs=30) == 30
    with pytest.raises(ValueError, match="step times must be positive"):
        epochs_for_budget(100, StepTimes(0.0, 0.0, 0.0), steps_per_epoch=5, val_rows=0, rows=10)


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600), ("90s", 90), ("1h30m", 5400), ("45", 45), (120, 120), ("2.5m", 150)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "-5", "0", "5x"])
def test_parse_duration_refuses_nonsense(text):
    with pytest.raises(ValueError, match="time-limit"):
        parse_duration(text)


def test_small_images_train_from_scratch_large_ones_use_the_frozen_backbone():
    small = _config(_infos(("photo", "image", {"side": 8, "colour": False})))[0]
    encoder = small["model"]["encoders"]["photo"]
    assert encoder["name"] == "image_cnn" and encoder["image_size"] == 16 and encoder["channels"] == 1
    assert small["trainer"]["augment"] == {"photo": {"gaussian_noise": 0.1}}
    assert "fusion" not in small["model"] and small["trainer"]["modality_dropout"] == 0.0

    large = _config(_infos(("photo", "image", {"side": 300, "colour": True})))[0]
    assert large["model"]["encoders"]["photo"]["name"] == "efficientnet_lite0"
    assert large["model"]["encoders"]["photo"]["freeze"] is True
    assert large["trainer"]["cache_features"] == "/d/feature_cache" and "photo" not in large["trainer"]["augment"]
    fast = _config(_infos(("photo", "image", {"side": 300, "colour": True})), preset="fast")[0]
    assert fast["model"]["encoders"]["photo"]["name"] == "image_cnn" and fast["model"]["encoders"]["photo"]["channels"] == 3
    missing = _config(_infos(("photo", "image", {"side": 300})), available={"minilm": False, "efficientnet_lite0": False})[0]
    assert missing["model"]["encoders"]["photo"]["name"] == "image_cnn"


def test_multimodal_config_augments_per_modality():
    infos = _infos(("voice", "audio", {"seconds_p95": 1.2, "rate": 16000}), ("note", "text", {"words": 5.0}),
                   ("n", "numeric", {}), ("city", "categorical", {}))
    config, choices = _config(infos, available={"minilm": False, "efficientnet_lite0": False})
    encoders, trainer = config["model"]["encoders"], config["trainer"]
    assert set(encoders) == {"voice", "note", "tabular"}
    assert encoders["voice"]["name"] == "audio_cnn" and encoders["voice"]["spec_augment"] and encoders["voice"]["max_seconds"] == 1.5
    assert encoders["note"]["name"] == "text_ngram" and (encoders["note"]["min_n"], encoders["note"]["max_n"]) == (2, 4)
    assert encoders["note"]["max_length"] == 1024, "about 64 words of known units, as the word-token encoder read"
    assert encoders["tabular"]["categorical"] == ["city"]
    assert trainer["augment"] == {"voice": {"speed": 0.25, "white_noise": 1.0}, "note": {"typos": 0.05}}
    # classification from several modalities: one expert per modality, no modality dropout needed
    assert config["model"]["head"] == {"name": "unimodal_ensemble", "classes": ["a", "b", "c"], "label_smoothing": 0.1}
    assert trainer["modality_dropout"] == 0.0
    assert trainer["early_stopping"] and trainer["cache_inputs"] is True
    assert cached_slots(config) == {"tabular": "processed inputs"}
    assert config["data"]["columns"]["tabular"] == {"numeric": ["n"], "categorical": ["city"]}
    assert {c.slot for c in choices} >= {"voice", "note", "tabular", "head"}

    one_word = _config(_infos(("code", "text", {"words": 1.0})), available={"minilm": False, "efficientnet_lite0": False})[0]
    assert one_word["model"]["encoders"]["code"]["name"] == "text_transformer"
    assert one_word["model"]["encoders"]["code"]["tokenizer"] == "byte", "one-word texts: bytes, not a bag of one word"

    with_minilm = _config(infos)[0]
    assert with_minilm["model"]["encoders"]["note"]["name"] == "minilm"
    assert cached_slots(with_minilm) == {"note": "frozen features", "tabular": "processed inputs"}


@pytest.mark.parametrize(("target", "head", "option"), [
    ("classification", "classification", ("classes", ["a", "b", "c"])),
    ("multilabel", "multilabel", ("classes", ["x", "y"])),
    ("regression", "regression", ("num_targets", 1)),
])
def test_head_follows_the_target(target, head, option):
    config = _config(_infos(("n", "numeric", {}), target=target))[0]
    assert config["model"]["head"]["name"] == head and config["model"]["head"][option[0]] == option[1]
    assert config["trainer"]["epochs"] == MAX_EPOCHS["best"]
    two = _config(_infos(("n", "numeric", {}), ("note", "text", {"words": 4.0}), target=target),
                  available={"minilm": False, "efficientnet_lite0": False})[0]
    if target == "classification":
        assert two["model"]["head"]["name"] == "unimodal_ensemble" and two["trainer"]["modality_dropout"] == 0.0
    else:  # joint models: a fusion that skips absent modalities, and modality dropout
        assert two["model"]["fusion"]["name"] == "gated" and two["trainer"]["modality_dropout"] == 0.3


def test_config_is_valid_for_the_registry(manager, tmp_path):
    from mmcore.engine.config import validate_config

    infos = _infos(("photo", "image", {"side": 8}), ("voice", "audio", {"seconds_p95": 0.8}), ("note", "text", {"words": 3.0}),
                   ("n", "numeric", {}), ("city", "categorical", {}))
    config = _config(infos, available={"minilm": False, "efficientnet_lite0": False})[0]
    (tmp_path / "data.jsonl").write_text("{}\n")
    config["data"]["path"] = str(tmp_path / "data.jsonl")
    validate_config(config, manager.registry)  # raises ConfigError listing every problem


def test_small_tables_get_patience_in_steps_and_a_loss_monitor():
    infos = _infos(("n", "numeric", {}))
    small = _config(infos, n_train=100)[0]["trainer"]  # 4 steps per epoch
    assert small["early_stopping"] == 50  # 200 optimiser steps
    large = _config(infos, n_train=3200)[0]["trainer"]  # 100 steps per epoch
    assert large["early_stopping"] == 10
    plan = make_plan(infos, [{"n": 1.0}])
    few_val = build_config(plan, infos, n_train=100, n_val=19, data_path="/d", run_dir="/d")[0]["trainer"]
    many_val = build_config(plan, infos, n_train=2000, n_val=300, data_path="/d", run_dir="/d")[0]["trainer"]
    assert few_val["monitor"] == "loss" and "monitor" not in many_val


@pytest.mark.parametrize(("n_train", "batch", "steps"), [(20, 32, 1), (100, 32, 4), (3200, 32, 100), (10000, 64, 157)])
def test_the_weights_are_averaged_over_about_two_epochs_of_steps(n_train, batch, steps):
    infos = _infos(("n", "numeric", {}))
    config, choices = _config(infos, n_train=n_train)
    trainer = config["trainer"]
    assert trainer["batch_size"] == batch
    assert trainer["ema_decay"] == pytest.approx(1 - 1 / (2 * steps), abs=1e-6) and 0 < trainer["ema_decay"] < 1
    said = [c for c in choices if c.slot == "averaging"]
    assert len(said) == 1 and f"decay {trainer['ema_decay']:g}" in said[0].what


@pytest.mark.parametrize("text", ["abc", "0", "-5", "inf", "1e999"])
def test_a_bad_time_limit_is_an_input_error_exit_2_before_any_work(tmp_path, capsys, text):
    """``mmcore fit --time-limit abc`` exited 1 as an internal error (a plain ValueError)."""
    from autofit_helpers import tabular_rows, write_jsonl

    from mmcore.cli import main
    from mmcore.errors import UserInputError

    with pytest.raises(UserInputError):
        parse_duration(text)
    table = write_jsonl(tmp_path / "t.jsonl", tabular_rows(20))
    assert main(["fit", str(table), "--target", "y", "--time-limit", text, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--time-limit" in err and "internal error" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_small_cnn_reads_images_at_the_size_of_their_detail(tmp_path):
    """An image upscaled from a thumbnail holds no detail beyond 32 px: measured on the files
    (:func:`detail_error`), the CNN reads it at 32 px (a quarter of the pixels of 64); an image with
    detail at 64 px is read at 64."""
    import numpy as np
    from PIL import Image

    from mmcore_plugins.autofit.choose import MAX_DETAIL_ERROR
    from mmcore_plugins.autofit.infer import detail_error

    rng = np.random.default_rng(0)
    flat, sharp = [], []
    for k in range(4):
        thumb = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).resize((28, 28), Image.BILINEAR)
        thumb.resize((64, 64), Image.BILINEAR).save(tmp_path / f"flat{k}.png")  # a 28 px picture upscaled
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / f"sharp{k}.png")
        flat.append(tmp_path / f"flat{k}.png")
        sharp.append(tmp_path / f"sharp{k}.png")
    assert detail_error(flat, 32) <= MAX_DETAIL_ERROR < detail_error(sharp, 32)
    assert detail_error([tmp_path / "absent.png"], 32) == 1.0
    no_pretrained = {"minilm": False, "efficientnet_lite0": False}
    for error, size in ((detail_error(flat, 32), 32), (detail_error(sharp, 32), 64)):
        config, choices = _config(_infos(("photo", "image", {"side": 64, "colour": False, "detail": error})),
                                  available=no_pretrained)
        assert config["model"]["encoders"]["photo"]["image_size"] == size
        assert ("hold no more detail" in next(c.why for c in choices if c.slot == "photo")) == (size == 32)
    # without the measurement (an older autofit.json): the size as before
    assert _config(_infos(("photo", "image", {"side": 64})), available=no_pretrained)[0]["model"]["encoders"]["photo"]["image_size"] == 64


def test_the_plan_says_early_stopping_is_off_when_its_patience_outlasts_the_run():
    from mmcore_plugins.autofit.fitting import stopping_text

    assert stopping_text(10, 80, 50) == "early stopping after 10 epochs without improvement"
    # a 39-row table: 2 steps an epoch, patience counted in steps (100 epochs) -- longer than the 80 planned
    assert stopping_text(100, 80, 2) == ("no early stopping: its patience, 100 epochs (200 steps) without improvement, "
                                         "is not shorter than the run; the best epoch on validation is kept")
    assert stopping_text(80, 80, 2).startswith("no early stopping")
