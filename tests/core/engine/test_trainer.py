"""The trainer: artefacts, reload, hooks, exact resume, atomic checkpoints, NaN stop, accumulation,
per-component learning rates, early stopping, modality dropout and augmentation."""

import copy
import json
import types

import pytest
import torch
from safetensors.torch import load_file

import mmcore
from mmcore.data import ModelCollate
from mmcore.engine import NonFiniteLossError
from mmcore.engine.checkpoint import load_model, load_training_state, model_state, save_checkpoint
from mmcore.engine.config import load_config
from mmcore.engine.trainer import Trainer
from mmcore.engine.views import TrainingView
from mmcore.errors import ConfigError
from mmcore.yamlio import load_yaml_file


def weights(run_dir, which="last"):
    return load_file(str(run_dir / which / "model.safetensors"))


def test_training_writes_artefacts_and_the_checkpoint_reloads(tmp_path):
    config = load_config("configs/tabular.yaml", [f"trainer.run_dir={tmp_path / 'run'}", "trainer.epochs=3",
                                                   "trainer.progress=false", "trainer.plots=true"])
    report = Trainer(config).fit()
    run = tmp_path / "run"
    assert report["status"] == "completed" and report["test"]["accuracy"] > 0.85
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,lr,train/loss,")
    assert json.loads((run / "report.json").read_text())["best_epoch"] == report["best_epoch"]
    assert (run / "config.yaml").is_file() and "grad_accumulation: 1" in (run / "config.yaml").read_text()
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["accuracy.png", "diagnostics.png", "loss.png", "macro_f1.png"]
    assert (run / "plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    model, meta = load_model(run / "best")
    dataset = mmcore.get_registry().get("dataset", "sklearn_tabular").factory(split="test", dataset="breast_cancer", missing_rate=0.15)
    batch = model.collate(dataset.samples)
    model.eval()
    with torch.no_grad():
        accuracy = (model(batch["inputs"]).predictions == batch["targets"]).float().mean().item()
    assert accuracy == pytest.approx(report["test"]["accuracy"], abs=1e-6)
    assert meta["processors"]["mean"]["std"] != [1.0] * 10, "fitted standardisation is saved with the model"
    assert meta["epoch"] == report["best_epoch"]


def test_lifecycle_hooks_are_called(wine_config):
    calls = []
    plugin = types.SimpleNamespace(
        mmcore_train_start=mmcore.hookimpl(lambda config: calls.append("start")),
        mmcore_train_step_end=mmcore.hookimpl(lambda step, metrics: calls.append(("step", step)) if step in (1, 8) else None),
        mmcore_epoch_end=mmcore.hookimpl(lambda epoch, metrics: calls.append(("epoch", epoch, "val/accuracy" in metrics))),
        mmcore_train_end=mmcore.hookimpl(lambda report: calls.append(("end", report["status"]))),
    )
    wine_config["trainer"]["epochs"] = 2
    with mmcore.register_plugin(plugin, name="observer"):
        Trainer(wine_config).fit()
    # 115 training samples / batch 16 = 8 steps per epoch
    assert calls == ["start", ("step", 1), ("step", 8), ("epoch", 1, True), ("epoch", 2, True), ("end", "completed")]


class _StopAfter:
    """A plugin that interrupts training at the end of an epoch, as a killed process would."""

    def __init__(self, epoch):
        self.epoch = epoch

    @mmcore.hookimpl
    def mmcore_epoch_end(self, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_resumed_run_matches_one_that_never_stopped(wine_config, tmp_path):
    # Modality dropout, augmentation, missing modalities and nn.Dropout all draw random numbers.
    wine_config["trainer"].update(epochs=4, modality_dropout=0.2, augment={"first": {"feature_noise": 0.2}})
    straight = copy.deepcopy(wine_config)
    straight["trainer"]["run_dir"] = str(tmp_path / "straight")
    Trainer(straight).fit()

    interrupted = copy.deepcopy(wine_config)
    interrupted["trainer"]["run_dir"] = str(tmp_path / "resumed")
    with mmcore.register_plugin(_StopAfter(2), name="killer"), pytest.raises(KeyboardInterrupt):
        Trainer(interrupted).fit()
    assert load_training_state(tmp_path / "resumed" / "last")["epoch"] == 2
    epochs = []
    observer = types.SimpleNamespace(mmcore_epoch_end=mmcore.hookimpl(lambda epoch: epochs.append(epoch)))
    with mmcore.register_plugin(observer, name="observer"):
        report = Trainer(interrupted, resume=tmp_path / "resumed").fit()
    assert epochs == [3, 4], "the resumed run trains only the remaining epochs"

    a = json.loads((tmp_path / "straight" / "report.json").read_text())
    assert [round(r["train/loss"], 6) for r in a["history"]] == [round(r["train/loss"], 6) for r in report["history"]]
    assert report["best_epoch"] == a["best_epoch"] and report["test"] == pytest.approx(a["test"], abs=1e-6)
    for which in ("last", "best"):
        wa, wb = weights(tmp_path / "straight", which), weights(tmp_path / "resumed", which)
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(wine_config, tmp_path, monkeypatch):
    wine_config["trainer"]["epochs"] = 1
    trainer = Trainer(wine_config)
    trainer.fit()
    last = tmp_path / "run" / "last"
    before = weights(tmp_path / "run")
    state_before = load_training_state(last)

    import safetensors.torch

    def crashing_save(tensors, metadata=None):  # the weights are serialised, then written by mmcore
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save", crashing_save)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(trainer.model, last, training_state={"epoch": 99})
    monkeypatch.undo()
    after = weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert load_training_state(last)["epoch"] == state_before["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.endswith((".tmp", ".old"))) == [], "no temporary folder is left"
    load_model(last)  # still a complete, loadable checkpoint


def test_a_crash_between_the_two_renames_still_leaves_a_checkpoint(wine_config, tmp_path):
    wine_config["trainer"]["epochs"] = 1
    Trainer(wine_config).fit()
    run = tmp_path / "run"
    (run / "last").rename(run / ".last.old")  # died after moving the old one away, before moving the new one in
    model, _ = load_model(run / "last")
    assert load_training_state(run / "last")["epoch"] == 1
    save_checkpoint(model, run / "last", training_state={"epoch": 2})
    assert load_training_state(run / "last")["epoch"] == 2 and not (run / ".last.old").exists()


class _Poison:
    """Sets a weight to NaN after a given step, so the next step's loss is NaN."""

    def __init__(self, step):
        self.step = step

    @mmcore.hookimpl
    def mmcore_train_step_end(self, trainer, step):
        if step == self.step:
            with torch.no_grad():
                trainer.model.head.net[-1].weight.fill_(float("nan"))


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(wine_config, tmp_path):
    wine_config["trainer"]["epochs"] = 3
    with mmcore.register_plugin(_Poison(10), name="poison"), pytest.raises(NonFiniteLossError, match=r"at step 11 \(epoch 2\)"):
        Trainer(wine_config).fit()
    run = tmp_path / "run"
    assert json.loads((run / "report.json").read_text())["status"] == "non_finite_loss"
    assert load_training_state(run / "last")["epoch"] == 1
    assert all(torch.isfinite(w).all() for w in weights(run).values())


def test_gradient_accumulation_equals_one_big_batch(wine_config, tmp_path):
    wine_config["model"]["encoders"]["first"]["dropout"] = wine_config["model"]["encoders"]["second"]["dropout"] = 0.0
    wine_config["model"]["fusion"]["dropout"] = 0.0
    wine_config["trainer"]["epochs"] = 2
    big, small = copy.deepcopy(wine_config), copy.deepcopy(wine_config)
    big["trainer"].update(run_dir=str(tmp_path / "big"), batch_size=16)
    small["trainer"].update(run_dir=str(tmp_path / "small"), batch_size=8, grad_accumulation=2)
    Trainer(big).fit()
    Trainer(small).fit()
    wa, wb = weights(tmp_path / "big"), weights(tmp_path / "small")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


def test_lr_multipliers_set_per_component_rates_and_zero_freezes(wine_config):
    wine_config["trainer"].update(epochs=1, lr_multipliers={"encoders.first": 0.0, "head": 2.0})
    trainer = Trainer(wine_config)
    trainer.setup()
    start = {k: v.clone() for k, v in trainer.model.encoders["first"].state_dict().items()}
    rates = {id(p): group["lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    assert rates[id(trainer.model.head.net[-1].weight)] == pytest.approx(0.02)
    assert rates[id(trainer.model.fusion.weight)] == pytest.approx(0.01)
    decay = {id(p): group["weight_decay"] for group in trainer.optimizer.param_groups for p in group["params"]}
    assert decay[id(trainer.model.fusion.bias)] == 0.0 and decay[id(trainer.model.fusion.weight)] == 0.01
    trainer.dist.close()
    trainer.rundir.release()  # setup() locked the run directory; fit() would release it at its end
    Trainer(wine_config).fit()
    model, _ = load_model(trainer.run_dir / "last")
    assert all(torch.equal(start[k], v) for k, v in model.encoders["first"].state_dict().items())
    wine_config["trainer"]["lr_multipliers"] = {"encoders.first.nothing": 0.5}
    with pytest.raises(mmcore.ConfigError, match="trainer.lr_multipliers.encoders.first.nothing: matches no trainable parameter"):
        Trainer(wine_config).fit()


def test_early_stopping_ends_the_run_when_the_monitor_stops_improving(wine_config):
    wine_config["trainer"].update(epochs=10, lr=1e-9, early_stopping=2, monitor="accuracy")
    report = Trainer(wine_config).fit()
    assert report["status"] == "early_stopping" and report["epochs_run"] == 3 and report["best_epoch"] == 1


def test_an_unknown_monitor_is_a_config_error(wine_config):
    wine_config["trainer"]["monitor"] = "mse"
    with pytest.raises(mmcore.ConfigError, match=r"trainer.monitor: the head 'classification' reports \['loss', 'accuracy', 'macro_f1'\]"):
        Trainer(wine_config).fit()


def test_modality_dropout_removes_modalities_but_never_all_and_repeats_exactly():
    samples = [{"inputs": {"a": 1, "b": 2, "c": None}, "target": 0}] * 400
    view = TrainingView(samples, epoch=1, seed=3, dropout={"a": 0.4, "b": 0.4, "c": 0.4})
    batch = [view[i] for i in range(len(view))]
    kept = [[s for s, raw in sample["inputs"].items() if raw is not None] for sample in batch]
    assert all(kept), "every sample keeps at least one modality"
    assert all(sample["inputs"]["c"] is None for sample in batch)
    rate = sum(2 - len(k) for k in kept) / (2 * len(kept))
    assert 0.3 < rate < 0.45
    again = TrainingView(samples, epoch=1, seed=3, dropout={"a": 0.4, "b": 0.4})
    assert [again[i] for i in reversed(range(400))][::-1] == batch, "decided per sample, not by a shared stream"
    other_epoch = TrainingView(samples, epoch=2, seed=3, dropout={"a": 0.4, "b": 0.4})
    assert [other_epoch[i] for i in range(400)] != batch


def test_augmentation_perturbs_raw_inputs_per_sample_and_epoch(manager):
    noise = manager.registry.get("perturbation", "feature_noise").factory
    samples = [{"inputs": {"a": [1.0, 2.0, 3.0], "b": None}, "target": 0}] * 4
    view = TrainingView(samples, epoch=1, seed=0, augment={"a": [(noise, 0.5)]})
    rows = [view[i]["inputs"]["a"] for i in range(4)]
    assert all(r != [1.0, 2.0, 3.0] for r in rows) and len({tuple(r) for r in rows}) == 4
    assert view[2]["inputs"]["a"] == rows[2]
    assert samples[0]["inputs"]["a"] == [1.0, 2.0, 3.0], "the dataset itself is untouched"


def test_train_collate_switches_processors_to_training_only_while_collating():
    class Proc:
        training = False

        def __init__(self):
            self.seen = []

    proc = Proc()
    model = types.SimpleNamespace(processors={"x": proc}, collate=lambda samples: proc.seen.append(proc.training))
    collate = ModelCollate(model, training=True)
    collate([1])
    assert proc.seen == [True] and proc.training is False


def test_tensorboard_events_are_written_when_tensorboard_is_installed(wine_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wine_config["trainer"].update(epochs=2, tensorboard=True)
    Trainer(wine_config).fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/accuracy", "test/accuracy"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


@pytest.mark.slow
def test_compiled_training_gives_the_same_model(wine_config, tmp_path):
    # The eager backend runs TorchDynamo's graph capture without code generation: fast on CPU.
    for name in ("model.encoders.first.dropout", "model.encoders.second.dropout", "model.fusion.dropout"):
        section, *keys = name.split(".")
        node = wine_config[section]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = 0.0
    wine_config["trainer"]["epochs"] = 1
    plain, compiled = copy.deepcopy(wine_config), copy.deepcopy(wine_config)
    plain["trainer"]["run_dir"] = str(tmp_path / "plain")
    compiled["trainer"].update(run_dir=str(tmp_path / "compiled"), compile="eager")
    Trainer(plain).fit()
    trainer = Trainer(compiled)
    trainer.fit()
    assert trainer.train_model is not trainer.model
    wa, wb = weights(tmp_path / "plain"), weights(tmp_path / "compiled")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


class _PhotoWords:
    """A registered dataset of photo crops (image) and words (text); one image missing per split."""

    @staticmethod
    def load(split: str):
        from sklearn.datasets import load_sample_image

        from mmcore.data import SampleDataset

        photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
        offset = {"train": 0, "val": 12, "test": 16}[split]
        n = {"train": 12, "val": 4, "test": 4}[split]
        words = ["un", "deux", "trois"]
        samples = []
        for i in range(offset, offset + n):
            crop = photos[i % 2][20 * i : 20 * i + 64, 30 * i : 30 * i + 64].copy()
            samples.append({"inputs": {"image": crop if i % 5 else None, "text": words[i % 3]}, "target": i % 3})
        return SampleDataset(samples)

    @mmcore.hookimpl
    def mmcore_register(self, registry):
        registry.add_dataset("photo_words", self.load)


class _BackboneCalls:
    """Counts forward calls of the image backbone of every trainer that starts."""

    def __init__(self) -> None:
        self.calls = 0

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer, config):
        trainer.model.encoders["image"].backbone.register_forward_hook(lambda *args: self.count())

    def count(self) -> None:
        self.calls += 1


def test_cached_frozen_features_train_the_same_model_without_running_the_backbone(tmp_path):
    config = {
        "data": {"name": "photo_words"},
        "model": {
            "encoders": {"image": {"name": "image_torchvision", "arch": "resnet18", "image_size": 32, "freeze": True, "dim": 8},
                         "text": {"name": "text_transformer", "dim": 8, "heads": 2, "layers": 1, "max_length": 8}},
            "fusion": {"name": "concat", "dim": 8},
            "head": {"name": "classification", "num_classes": 3},
        },
        "trainer": {"epochs": 2, "batch_size": 4, "progress": False, "plots": False, "tensorboard": False},
    }
    reports, weights, calls = {}, {}, {}
    with mmcore.register_plugin(_PhotoWords(), "photo_words"):
        for cache in (False, True):
            counter = _BackboneCalls()
            with mmcore.register_plugin(counter, f"counter-{cache}"):
                run = copy.deepcopy(config)
                run["trainer"].update(cache_features=cache, run_dir=str(tmp_path / f"run-{cache}"))
                trainer = Trainer(run)
                reports[cache] = trainer.fit()
            weights[cache], calls[cache] = model_state(trainer.model), counter.calls
    # Without the cache the backbone runs on every batch; with it, training and validation
    # never run it (both splits were precomputed before the hook was attached) — only the test
    # split, evaluated once at the end (1 batch: 4 samples).
    assert calls[False] > 6 and calls[True] == 1
    for name, value in weights[False].items():
        torch.testing.assert_close(weights[True][name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert reports[True]["test"]["accuracy"] == reports[False]["test"]["accuracy"]
    # The checkpoint of the cached run is an ordinary one: it reloads and predicts as trained.
    model, _ = load_model(tmp_path / "run-True" / "best")
    assert not any(type(p).__name__ == "CachingProcessor" for p in model.processors.values())


def test_a_feature_budget_keeps_the_rows_whose_features_were_computed_in_time(tmp_path):
    """``Trainer.feature_budget`` (what ``mmcore fit`` sets): val first and whole, then training rows in a seeded
    random order while the budget allows; training reads only those rows (never the backbone again)."""
    config = {
        "data": {"name": "photo_words"},
        "model": {"encoders": {"image": {"name": "image_torchvision", "arch": "resnet18", "image_size": 32, "freeze": True,
                                         "dim": 8}},
                  "head": {"name": "classification", "num_classes": 3}},
        "trainer": {"epochs": 2, "batch_size": 4, "progress": False, "plots": False, "tensorboard": False, "cache_features": True},
    }
    asked = []
    counter = _BackboneCalls()
    with mmcore.register_plugin(_PhotoWords(), "photo_words"), mmcore.register_plugin(counter, "counter"):
        trainer = Trainer({**config, "trainer": {**config["trainer"], "run_dir": str(tmp_path / "run")}})
        trainer.feature_budget = lambda done, total, pace: asked.append((done, total, pace)) or done < 8
        report = trainer.fit()
    assert trainer.feature_rows == (8, 12) and len(trainer.datasets["train"]) == 8
    assert report["samples"]["train"] == 8 and report["steps"] == 2 * 2  # 8 rows, batch 4, 2 epochs
    assert counter.calls == 1, "training read cached rows only; the backbone ran for the test batch alone"
    assert [(d, t) for d, t, _ in asked] == [(4, 12), (8, 12)] and all(pace > 0 for _, _, pace in asked)
    # a random sample of the split, drawn from trainer.seed: the same rows every run
    expected = sorted(torch.randperm(12, generator=torch.Generator().manual_seed(0))[:8].tolist())
    assert list(trainer.datasets["train"].indices) == expected != list(range(8))
    # recorded: the run's config.yaml trains the same 8 rows again (no budget needed), and says so
    stored = load_yaml_file(tmp_path / "run" / "config.yaml")
    assert stored["trainer"]["train_rows"] == 8
    with mmcore.register_plugin(_PhotoWords(), "photo_words"):
        again = Trainer({**stored, "trainer": {**stored["trainer"], "run_dir": str(tmp_path / "again")}})
        again_report = again.fit()
    assert list(again.datasets["train"].indices) == expected and again_report["samples"]["train"] == 8
    assert again.feature_rows is None


def test_train_rows_trains_on_a_seeded_sample_and_is_checked(wine_config):
    wine_config["trainer"].update(train_rows=40, epochs=1)
    trainer = Trainer(wine_config)
    trainer.setup()
    rows = len(trainer.datasets["train"].dataset)
    assert len(trainer.datasets["train"]) == 40 < rows
    assert list(trainer.datasets["train"].indices) == sorted(
        torch.randperm(rows, generator=torch.Generator().manual_seed(0))[:40].tolist())
    trainer.close()
    wine_config["trainer"]["train_rows"] = 10**6  # more than the split: every row
    trainer = Trainer(wine_config)
    trainer.setup()
    assert not hasattr(trainer.datasets["train"], "indices")
    trainer.close()
    for bad in (0, -3, 2.5, True, "all"):
        wine_config["trainer"]["train_rows"] = bad
        with pytest.raises(ConfigError, match=r"trainer\.train_rows: (must be a whole number|trainer option expects int)"):
            Trainer(wine_config)


def test_cache_features_without_a_frozen_encoder_is_a_config_error(wine_config):
    wine_config["trainer"]["cache_features"] = True
    with pytest.raises(ConfigError, match="trainer.cache_features: no encoder of the model is frozen"):
        Trainer(wine_config).fit()


def test_cache_inputs_trains_the_same_model(tmp_path):
    config = {
        "data": {"name": "photo_words"},
        "model": {
            "encoders": {"image": {"name": "image_cnn", "image_size": 16, "width": 8, "dim": 8},
                         "text": {"name": "text_transformer", "dim": 8, "heads": 2, "layers": 1, "max_length": 8}},
            "fusion": {"name": "concat", "dim": 8},
            "head": {"name": "classification", "num_classes": 3},
        },
        "trainer": {"epochs": 2, "batch_size": 4, "progress": False, "plots": False, "tensorboard": False},
    }
    weights, processors = {}, {}
    with mmcore.register_plugin(_PhotoWords(), "photo_words"):
        for cache in (False, True):
            run = copy.deepcopy(config)
            run["trainer"].update(cache_inputs=cache, run_dir=str(tmp_path / f"run-{cache}"))
            trainer = Trainer(run)
            trainer.fit()
            weights[cache] = model_state(trainer.model)
            processors[cache] = {slot: type(p).__name__ for slot, p in trainer.model.processors.items()}
    assert processors[True]["text"] == "MemoizedProcessor" and processors[False]["text"] != "MemoizedProcessor"
    for name, value in weights[False].items():
        torch.testing.assert_close(weights[True][name], value, msg=name)


def test_accumulation_weighs_a_short_last_micro_batch_by_its_samples(wine_config, tmp_path):
    # 115 training rows: batches of 12 end with 7 rows, i.e. micro-batches of 6 + 1 under
    # accumulation; weighting both halves equally would give that one row 3.5x its due.
    for part in ("first", "second"):
        wine_config["model"]["encoders"][part]["dropout"] = 0.0
    wine_config["model"]["fusion"]["dropout"] = 0.0
    wine_config["trainer"]["epochs"] = 2
    big, small = copy.deepcopy(wine_config), copy.deepcopy(wine_config)
    big["trainer"].update(run_dir=str(tmp_path / "big"), batch_size=12)
    small["trainer"].update(run_dir=str(tmp_path / "small"), batch_size=6, grad_accumulation=2)
    assert Trainer(big).fit()["steps"] == Trainer(small).fit()["steps"] == 20
    wa, wb = weights(tmp_path / "big"), weights(tmp_path / "small")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


def test_resume_refuses_a_changed_config_but_not_a_changed_display(wine_config, tmp_path):
    wine_config["trainer"]["epochs"] = 1
    Trainer(wine_config).fit()
    run = tmp_path / "run"
    changed = copy.deepcopy(wine_config)
    changed["trainer"].update(epochs=2, lr=0.5, lr_multipliers={"head": 2.0})
    changed["data"]["seed"] = 3
    with pytest.raises(ConfigError) as info:
        Trainer(changed, resume=run)
    message = str(info.value)
    for path in ("trainer.lr: differs from the run being resumed", "trainer.epochs:", "trainer.lr_multipliers.head:", "data.seed:"):
        assert path in message
    display = copy.deepcopy(wine_config)
    display["trainer"].update(progress=True, num_workers=0, plots=True)
    assert Trainer(display, resume=run).fit()["status"] == "completed"


def test_resuming_an_early_stopped_run_trains_nothing_more(wine_config, tmp_path):
    wine_config["trainer"].update(epochs=10, lr=1e-9, early_stopping=2, monitor="accuracy")
    first = Trainer(wine_config).fit()
    again = Trainer(wine_config, resume=tmp_path / "run").fit()
    assert first["status"] == again["status"] == "early_stopping"
    assert again["epochs_run"] == first["epochs_run"] and again["steps"] == first["steps"]


def test_checkpoints_get_the_users_usual_file_permissions(wine_config, tmp_path):
    import stat

    wine_config["trainer"]["epochs"] = 1
    Trainer(wine_config).fit()
    run = tmp_path / "run"
    from mmcore.engine.checkpoint import _UMASK

    for path in (run / "last", run / "best"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~_UMASK
    for path in (run / "report.json", run / "config.yaml", run / "metrics.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_UMASK


def test_the_optimiser_is_fused_adamw_and_updates_like_the_default_one(wine_config):
    from mmcore.engine.trainer import adamw

    trainer = Trainer(wine_config)
    trainer.setup()
    trainer.dist.close()
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.optimizer.defaults["fused"] is True
    # Same update as PyTorch's default AdamW, up to float rounding, over a few steps.
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(3)]
    runs = []
    for make in (lambda groups: adamw(groups, 0.01, 0.1), lambda groups: torch.optim.AdamW(groups, lr=0.01, weight_decay=0.1)):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        optimizer = make([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}])
        for step in range(3):
            for p in params:
                p.grad = torch.full_like(p, 0.5 * (step + 1)) * torch.arange(p.numel()).reshape(p.shape)
            optimizer.step()
        runs.append(params)
    for fused, default in zip(*runs, strict=True):
        assert not torch.equal(fused.detach(), start[0] if fused.ndim == 2 else start[1])
        torch.testing.assert_close(fused, default, rtol=1e-6, atol=1e-7)


def test_adamw_falls_back_to_the_default_implementation_where_fused_is_refused(monkeypatch):
    from mmcore.engine import trainer as trainer_module

    real = torch.optim.AdamW

    def refusing(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kwargs)

    monkeypatch.setattr(trainer_module.torch.optim, "AdamW", refusing)
    params = [torch.nn.Parameter(torch.ones(2))]
    optimizer = trainer_module.adamw([{"params": params, "weight_decay": 0.0}], 0.1, 0.01)
    assert not optimizer.defaults["fused"] and optimizer.param_groups[0]["params"] == params
    params[0].grad = torch.ones(2)
    optimizer.step()
    assert torch.all(params[0] < 1.0)
