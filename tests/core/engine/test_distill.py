"""Knowledge distillation (trainer.distill, mmcore/engine/distill.py) and fine-tuning from a
checkpoint (trainer.init), on the tiny wine config."""

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import mmcore
from mmcore.engine import distill as distill_module
from mmcore.engine.checkpoint import load_model
from mmcore.engine.distill import similarity_preserving_loss, teacher_outputs
from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError


def _deterministic(config):
    config = copy.deepcopy(config)
    for encoder in config["model"]["encoders"].values():
        encoder["dropout"] = 0.0
    if config["model"].get("fusion"):
        config["model"]["fusion"]["dropout"] = 0.0
    return config


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, wine_base):
    config = _deterministic(wine_base)
    config["trainer"].update(epochs=6, run_dir=str(tmp_path_factory.mktemp("teacher") / "run"))
    Trainer(config).fit()
    return config["trainer"]["run_dir"]


def _student(config, tmp_path, name, **distill):
    config = _deterministic(config)
    config["trainer"]["run_dir"] = str(tmp_path / name)
    if distill:
        config["trainer"]["distill"] = distill
    return config


def test_alpha_zero_changes_nothing_and_the_term_is_reported(wine_config, tmp_path, teacher_run):
    plain = Trainer(_student(wine_config, tmp_path, "plain")).fit()
    report = Trainer(_student(wine_config, tmp_path, "kd", teacher=teacher_run, alpha=0.0)).fit()
    assert all(row["train/distill"] == 0.0 for row in report["history"])
    assert report["history"][-1]["train/loss"] == plain["history"][-1]["train/loss"]
    for name, tensor in load_file(str(tmp_path / "plain" / "last" / "model.safetensors")).items():
        torch.testing.assert_close(load_file(str(tmp_path / "kd" / "last" / "model.safetensors"))[name], tensor, rtol=0, atol=0)


def test_the_teacher_runs_once_per_run_and_its_cache_holds_its_outputs_per_row(wine_config, tmp_path, teacher_run, monkeypatch):
    calls = []
    original = distill_module.teacher_outputs

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(distill_module, "teacher_outputs", counted)
    config = _student(wine_config, tmp_path, "kd", teacher=teacher_run)
    config["trainer"]["epochs"] = 3
    trainer = Trainer(config)
    report = trainer.fit()
    assert len(calls) == 1, "computed once, not per epoch"
    assert all(row["train/distill"] > 0 for row in report["history"])
    distiller = dict(trainer.run_plugins)["trainer distill"]
    teacher, _ = load_model(f"{teacher_run}/best")
    teacher.eval()
    train = trainer.datasets["train"]
    rows = [0, 5, len(train) - 1]
    with torch.no_grad():
        expected = teacher(teacher.collate([{"inputs": train[i]["inputs"]} for i in rows])["inputs"]).logits
    torch.testing.assert_close(distiller.logits[rows], expected, rtol=1e-5, atol=1e-5)
    saved = trainer.rundir.read_config()["trainer"]["distill"]
    assert saved == {"teacher": teacher_run, "temperature": 4.0, "alpha": 1.0, "features": False}


def _kl_to_teacher(run_dir, teacher_run, dataset):
    student, _ = load_model(f"{run_dir}/best")
    teacher, _ = load_model(f"{teacher_run}/best")
    s, _ = teacher_outputs(student, dataset, batch_size=64, device="cpu")
    t, _ = teacher_outputs(teacher, dataset, batch_size=64, device="cpu")
    return float(F.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean"))


def test_a_distilled_student_agrees_more_with_its_teacher(wine_config, tmp_path, teacher_run):
    small = _deterministic(wine_config)
    for encoder in small["model"]["encoders"].values():
        encoder["dim"] = 4
    small["model"]["fusion"]["dim"] = 4
    plain = Trainer(_student(small, tmp_path, "plain")).fit()
    trainer = Trainer(_student(small, tmp_path, "kd", teacher=teacher_run, alpha=5.0, temperature=2.0))
    trainer.fit()
    test = trainer.datasets["test"]
    assert _kl_to_teacher(tmp_path / "kd", teacher_run, test) < _kl_to_teacher(tmp_path / "plain", teacher_run, test)
    assert plain["status"] == "completed"


def test_modality_distillation_a_student_without_a_modality_learns_from_the_full_teacher(wine_config, tmp_path, teacher_run):
    config = _student(wine_config, tmp_path, "one_slot", teacher=teacher_run, features=True)
    config["model"]["encoders"].pop("second")
    config["model"]["fusion"] = None
    trainer = Trainer(config)
    report = trainer.fit()
    assert trainer.model.slots == ["first"]
    assert report["history"][-1]["train/distill"] > 0 and report["history"][-1]["train/distill_features"] > 0
    teacher, _ = load_model(f"{teacher_run}/best")
    train = trainer.datasets["train"]
    both = next(i for i in range(len(train)) if all(v is not None for v in train[i]["inputs"].values()))
    with torch.no_grad():  # the cache holds what the teacher says with BOTH modalities of the row
        expected = teacher.eval()(teacher.collate([{"inputs": train[both]["inputs"]}])["inputs"]).logits
    torch.testing.assert_close(dict(trainer.run_plugins)["trainer distill"].logits[both], expected[0], rtol=1e-5, atol=1e-5)


def test_similarity_preserving_loss():
    torch.manual_seed(0)
    a = torch.randn(8, 5)
    assert float(similarity_preserving_loss(a, a)) == 0.0
    rotation, _ = torch.linalg.qr(torch.randn(5, 5))
    assert float(similarity_preserving_loss(3.0 * a @ rotation, a)) == pytest.approx(0.0, abs=1e-10), \
        "only which samples are alike counts: not the features' scale or basis"
    wide = torch.cat([a, torch.zeros(8, 11)], dim=1)
    assert float(similarity_preserving_loss(wide, a)) == pytest.approx(0.0, abs=1e-12), "widths may differ"
    assert float(similarity_preserving_loss(torch.randn(8, 5), a)) > 0


@pytest.mark.parametrize(("distill", "message"), [
    ({"teacher": "nowhere"}, r"trainer.distill.teacher: 'nowhere' is not a run directory"),
    ({}, r"trainer.distill.teacher: required"),
    ({"teacher": ".", "temprature": 2}, r"trainer.distill.temprature: unknown distillation option; did you mean 'temperature'"),
    ({"teacher": ".", "temperature": 0}, r"trainer.distill.temperature: must be a number > 0"),
    ({"teacher": ".", "alpha": -1}, r"trainer.distill.alpha: must be a number >= 0"),
    ({"teacher": ".", "features": "yes"}, r"trainer.distill.features: must be true, false or a weight"),
])
def test_bad_distillation_options_are_config_errors(wine_config, distill, message):
    wine_config["trainer"]["distill"] = distill
    with pytest.raises(ConfigError, match=message):
        Trainer(wine_config)


def test_a_teacher_that_does_not_fit_the_student_is_refused_before_training(wine_config, tmp_path, teacher_run):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    config = _student(wine_config, tmp_path, "a", teacher=str(not_a_run))
    with pytest.raises(ConfigError, match="holds no saved model"):
        Trainer(config).fit()
    config = _student(wine_config, tmp_path, "b", teacher=teacher_run)
    config["data"]["modalities"] = {"left": ["alcohol", "malic_acid"], "right": ["ash", "magnesium"]}
    config["model"]["encoders"] = {"left": {"name": "tabular_mlp", "num_features": 2, "dim": 8},
                                   "right": {"name": "tabular_mlp", "num_features": 2, "dim": 8}}
    with pytest.raises(ConfigError, match=r"the teacher reads modality slot\(s\) \['first', 'second'\]"):
        Trainer(config).fit()
    named = _student(wine_config, tmp_path, "named_teacher")
    named["model"]["head"] = {"name": "classification", "classes": ["a", "b", "c"]}
    named["trainer"]["epochs"] = 1
    Trainer(named).fit()
    config = _student(wine_config, tmp_path, "c", teacher=named["trainer"]["run_dir"])
    config["model"]["head"] = {"name": "classification", "classes": ["c", "b", "a"]}
    with pytest.raises(ConfigError, match=r"the teacher predicts the classes \['a', 'b', 'c'\], the student \['c', 'b', 'a'\]"):
        Trainer(config).fit()


def test_a_head_without_a_distillation_loss_is_refused(wine_config, tmp_path, teacher_run):
    config = _student(wine_config, tmp_path, "d", teacher=teacher_run)
    config["model"]["head"] = {"name": "contrastive", "embed_dim": 8}
    with pytest.raises((ConfigError, ValueError), match="distillation|contrastive"):
        Trainer(config).fit()


# ------------------------------------------------------------------ trainer.init
def test_init_starts_from_the_checkpoints_weights_and_processors(wine_config, tmp_path, teacher_run):
    config = _deterministic(wine_config)
    config["trainer"]["init"] = teacher_run
    trainer = Trainer(config)
    trainer.setup()
    try:
        expected = load_file(f"{teacher_run}/best/model.safetensors")
        for name, value in trainer.model.state_dict().items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
        teacher, _ = load_model(f"{teacher_run}/best")
        for slot, processor in trainer.model.processors.items():
            assert processor.state_dict() == teacher.processors[slot].state_dict()
    finally:
        trainer.rundir.release()
    assert Trainer(config).config["trainer"]["init"] == teacher_run


def test_init_with_other_shapes_is_refused_naming_the_tensor(wine_config, teacher_run):
    wine_config["model"]["fusion"]["dim"] = 7
    wine_config["trainer"]["init"] = teacher_run
    with pytest.raises(mmcore.errors.UserInputError, match="fusion"):
        Trainer(wine_config).fit()
    wine_config["trainer"]["init"] = "missing-folder"
    with pytest.raises(ConfigError, match="trainer.init: 'missing-folder' does not exist"):
        Trainer(wine_config)
