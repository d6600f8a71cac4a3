"""Candidates compared on validation (issue 27): the probe keeps the pretrained encoder only where it
measurably wins, and the config follows -- on synthetic features and a fake clock (nothing timed)."""

from __future__ import annotations

import numpy as np
import pytest

from mmcore_plugins.autofit.candidates import IMAGE_MARGIN, MIN_ROWS, compare, probe_score


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    informative = np.eye(3)[y] * 3 + rng.normal(size=(n, 3))
    noise = rng.normal(size=(n, 8))
    return y, informative, noise


class Clock:
    """Advances 1 s per pretrained batch encoded."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(pretrained_good: bool, kind: str = "image", deadline: float = 1e9, n: int = 200):
    y_train, good_train, noise_train = _data(n, 0)
    y_val, good_val, noise_val = _data(n, 1)
    index = {"train": np.arange(n), "val": np.arange(n)}
    feats = {"train": (good_train, noise_train), "val": (good_val, noise_val)}
    clock = Clock()

    def pretrained(raws):  # a raw is (split, row)
        clock.now += 1.0
        split, rows = raws[0][0], [r[1] for r in raws]
        return (feats[split][0] if pretrained_good else feats[split][1])[rows]

    def scratch(train, val):
        pick = 1 if pretrained_good else 0
        return feats["train"][pick][[r[1] for r in train]], feats["val"][pick][[r[1] for r in val]]

    values = {s: [(s, int(i)) for i in index[s]] for s in index}
    targets = {"train": list(y_train), "val": list(y_val)}
    return compare("photo", kind, values, targets, task="classification", pretrained=pretrained, scratch=scratch,
                   deadline=deadline, clock=clock)


@pytest.mark.parametrize("kind", ["image", "text"])
def test_the_better_candidate_on_validation_is_kept_with_both_scores_and_the_reason(kind):
    won = _run(pretrained_good=True, kind=kind)
    assert won.chosen == "pretrained" and won.scores["pretrained"] > won.scores["scratch"] + IMAGE_MARGIN
    lost = _run(pretrained_good=False, kind=kind)
    assert lost.chosen == "scratch" and lost.scores["scratch"] > lost.scores["pretrained"]
    assert f"{lost.scores['pretrained']:.3f}" in lost.why and f"{lost.scores['scratch']:.3f}" in lost.why
    assert lost.rows == (200, 200) and lost.to_json()["chosen"] == "scratch"


def test_the_deadline_bounds_the_rows_encoded_and_too_few_keeps_the_rule():
    # 1 s per batch of 16, alternating train and val: a deadline at 8 s encodes 4 batches of each
    bounded = _run(pretrained_good=False, deadline=8.0)
    assert bounded.rows == (64, 64) and bounded.chosen == "scratch"
    # at 4 s each split has 32 rows, fewer than MIN_ROWS: it goes on (up to OVERRUN x) until 48 each
    overrun = _run(pretrained_good=False, deadline=4.0)
    assert overrun.rows == (48, 48) and overrun.chosen == "scratch"
    starved = _run(pretrained_good=False, deadline=1.0)  # at most 2 s: one batch of each
    assert starved.rows == (16, 16) and starved.rows[1] < MIN_ROWS
    assert starved.chosen == "pretrained" and starved.why.startswith("not compared")


def test_the_probe_scores_classification_by_accuracy_and_regression_by_r2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    assert probe_score(x[:200], list(x[:200, 0] > 0), x[200:], list(x[200:, 0] > 0), "classification") > 0.9
    y = 2 * x[:, 1] + 0.1 * rng.normal(size=300)
    assert probe_score(x[:200], y[:200], x[200:], y[200:], "regression") > 0.95


def test_a_measured_loss_makes_the_config_use_the_from_scratch_encoder_and_say_why():
    from mmcore_plugins.autofit.choose import build_config
    from mmcore_plugins.autofit.infer import ColumnInfo
    from mmcore_plugins.autofit.prepare import Plan

    plan = Plan(target="y", task="classification", slots={"photo": {"kind": "image", "column": "photo"},
                                                          "note": {"kind": "text", "column": "note"}}, classes=["a", "b"])
    infos = [ColumnInfo("photo", "image", "", 0.0, details={"side": 32}), ColumnInfo("note", "text", "", 0.0, details={"words": 5})]
    available = {"efficientnet_lite0": True, "minilm": True}
    config, _ = build_config(plan, infos, n_train=500, data_path="d.jsonl", run_dir="r", available=available)
    assert config["model"]["encoders"]["photo"]["name"] == "efficientnet_lite0"
    config, choices = build_config(plan, infos, n_train=500, data_path="d.jsonl", run_dir="r", available=available,
                                   scratch={"photo": "measured: pixels 0.9 vs features 0.2", "note": "measured: words win"})
    assert config["model"]["encoders"]["photo"]["name"] == "image_cnn"
    assert config["model"]["encoders"]["photo"]["image_size"] == 32
    assert config["model"]["encoders"]["note"]["name"] == "text_transformer"
    assert {c.slot: c.why for c in choices}["photo"] == "measured: pixels 0.9 vs features 0.2"
    assert config["trainer"]["cache_features"] is False, "nothing frozen is left to cache"


def test_a_pretrained_candidate_whose_features_cannot_fit_the_time_left_is_not_taken():
    """By the encoder's own pace measured while comparing (injected here), scaled by the pixels to
    the smallest image size fit would use: more than half the time left -> from scratch, said why."""
    from mmcore_plugins.autofit.candidates import PROBE_IMAGE_SIZE, Comparison
    from mmcore_plugins.autofit.fitting import FEATURE_SHARE, _features_too_slow

    def kept(kind: str, per_row: float) -> Comparison:
        return Comparison("x", kind, {"pretrained": 0.9, "scratch": 0.4}, (64, 64), "pretrained", "probe", 1.0,
                          "accuracy", per_row)

    config = {"model": {"encoders": {"x": {"name": "efficientnet_lite0", "image_size": 224}}}}
    # 0.1 s a row at the compared size is (96 / compared) ** 2 of it at 96 px, for 10,000 rows.
    at_96 = 0.1 * (96 / PROBE_IMAGE_SIZE) ** 2 * 10000
    slow = _features_too_slow({"x": kept("image", 0.1)}, config, rows=10000, left=at_96 / FEATURE_SHARE - 1)
    assert list(slow) == ["x"] and "96 px" in slow["x"] and f"{at_96:.0f} s" in slow["x"]
    assert _features_too_slow({"x": kept("image", 0.1)}, config, rows=10000, left=at_96 / FEATURE_SHARE + 1) == {}
    text = {"model": {"encoders": {"x": {"name": "minilm"}}}}  # no pixels: the measured pace as it is
    assert list(_features_too_slow({"x": kept("text", 0.01)}, text, rows=1000, left=19)) == ["x"]
    assert _features_too_slow({"x": kept("text", 0.01)}, text, rows=1000, left=21) == {}
    lost = Comparison("x", "image", {}, (0, 0), "scratch", "probe", 1.0, "accuracy", 0.1)
    assert _features_too_slow({"x": lost}, config, rows=10000, left=1.0) == {}  # already from scratch


def test_compare_measures_the_pretrained_encoders_pace_per_row():
    won = _run(pretrained_good=True)
    assert won.feature_row_s == pytest.approx(2 * 200 / 16 / 400, rel=0.05)  # 1 s per batch of 16 (the fake clock)


@pytest.mark.parametrize(("kind", "chosen"), [("image", "scratch"), ("text", "pretrained")])
def test_pretrained_image_features_a_little_ahead_of_the_pixel_probe_lose_to_the_cnn(monkeypatch, kind, chosen):
    # Issue 27's products at 64 px: EfficientNet 0.813 vs pixels 0.780 on the probe. A small CNN gains
    # more over its pixel probe (0.07-0.34, measured) than a projection of frozen features over theirs
    # (0.04): a lead under IMAGE_MARGIN keeps the CNN. Text has no such margin: the pretrained one stays.
    import mmcore_plugins.autofit.candidates as candidates

    scores = iter([0.813, 0.780])  # compare() probes the pretrained features first, then the raw input
    monkeypatch.setattr(candidates, "probe_score", lambda *args, **kwargs: next(scores))
    assert 0.813 < 0.780 + IMAGE_MARGIN
    result = _run(pretrained_good=True, kind=kind)
    assert result.chosen == chosen and result.scores == {"pretrained": 0.813, "scratch": 0.780}
