"""Config loading, overrides and validation: every problem at once, with its path, before anything runs."""

import pytest

import mmcore
from mmcore.engine.config import (
    TrainerOptions,
    apply_overrides,
    config_provenance,
    load_config,
    resolved_config,
    validate_config,
)


def issues_of(config, registry):
    with pytest.raises(mmcore.ConfigError) as info:
        validate_config(config, registry)
    return [str(issue) for issue in info.value.issues]


def test_overrides_parse_values_as_yaml():
    config = apply_overrides({"trainer": {"epochs": 1}}, ["trainer.epochs=5", "model.fusion.name=mean", "trainer.grad_clip=null",
                                                         "trainer.lr_multipliers={encoders.a: 0.1}", "data.root="])
    assert config == {"trainer": {"epochs": 5, "grad_clip": None, "lr_multipliers": {"encoders.a": 0.1}},
                      "model": {"fusion": {"name": "mean"}}, "data": {"root": ""}}


def test_bad_overrides_are_reported_together():
    with pytest.raises(mmcore.ConfigError) as info:
        apply_overrides({"trainer": {"epochs": 1}}, ["epochs", "trainer.epochs.x=2", "a..b=1"])
    messages = [str(i) for i in info.value.issues]
    assert len(messages) == 3
    assert "override 'epochs' must look like key.path=value" in messages[0]
    assert messages[1].startswith("trainer.epochs: override 'trainer.epochs.x=2' goes inside trainer.epochs, which is a int")


def test_every_problem_is_reported_with_its_path(wine_config, manager, tmp_path):
    config = apply_overrides(wine_config, [
        "model.fusion.dimm=3",                   # unknown option
        "model.head.name=clasification",          # unknown component
        "trainer.epochz=2",                       # unknown trainer option
        "trainer.lr=fast",                        # wrong type
        "trainer.grad_accumulation=0",            # out of range
        "trainer.lr_multipliers={encoders.third: 0.1, encoder: 2}",
        "trainer.modality_dropout={second: 1.5}",
        "trainer.augment={first: {feature_noise: 0.1, blur: 1.0, jitter: 0.1}}",
        "data.dataset=iris",
        "extra.key=1",
    ])
    messages = issues_of(config, manager.registry)
    expected = [
        "extra: unknown section",
        "data.dataset: option of dataset 'sklearn_tabular' expects one of 'wine', 'breast_cancer', got str 'iris'",
        "model.fusion.dimm: unknown option of fusion 'concat'; did you mean 'dim'?",
        "model.head.name: unknown head 'clasification'; did you mean 'classification'?",
        "trainer.epochz: unknown trainer option; did you mean 'epochs'?",
        "trainer.lr: trainer option expects float, got str 'fast'",
        "trainer.grad_accumulation: must be at least 1, got 0",
        "trainer.lr_multipliers.encoder: a multiplier's key is a module path starting with encoders, fusion, head; did you mean 'encoders'?",
        "trainer.lr_multipliers.encoders.third: no encoder slot 'third'; the model's slots are ['first', 'second']",
        "trainer.modality_dropout.second: must be a probability in [0, 1), got 1.5",
        "trainer.augment.first.blur: perturbation 'blur' applies to image data; slot 'first' holds tabular",
        "trainer.augment.first.jitter: unknown perturbation 'jitter'",
    ]
    for text in expected:
        assert any(m.startswith(text) for m in messages), f"missing: {text}\ngot:\n" + "\n".join(messages)


def test_missing_files_are_reported_with_the_other_problems(wine_config, manager, tmp_path):
    config = apply_overrides(wine_config, ["data.name=manifest", f"data.path={tmp_path / 'rows.csv'}", "data.columns={a: a}",
                                           "data.dataset=null", "data.missing_rate=null", "data.seed=0", "trainer.epochs=0"])
    for key in ("dataset", "missing_rate"):
        del config["data"][key]
    messages = issues_of(config, manager.registry)
    assert f"data.path: file '{tmp_path / 'rows.csv'}' does not exist" in messages
    assert "trainer.epochs: must be at least 1, got 0" in messages


def test_a_missing_relative_path_says_where_it_was_looked_for(wine_config, manager, tmp_path, monkeypatch):
    """A config copied out of a run folder keeps the run's relative ``data.jsonl``: the message says a
    relative path is read from the current folder, and which one."""
    monkeypatch.chdir(tmp_path)
    config = apply_overrides(wine_config, ["data.name=manifest", "data.path=data.jsonl", "data.columns={a: a}",
                                           "data.dataset=null", "data.missing_rate=null", "data.seed=0"])
    for key in ("dataset", "missing_rate"):
        del config["data"][key]
    assert (f"data.path: file 'data.jsonl' does not exist (a relative path is read from the current folder, {tmp_path})"
            in issues_of(config, manager.registry))


def test_a_valid_config_gives_its_trainer_options_and_resolves_every_default(wine_config, manager):
    options = validate_config(wine_config, manager.registry)
    assert options.epochs == 3 and options.batch_size == 16 and options.grad_accumulation == 1
    resolved = resolved_config(wine_config, options)
    assert set(resolved["trainer"]) == {f for f in TrainerOptions.__dataclass_fields__}
    assert resolved["model"] == wine_config["model"]


def test_config_provenance_names_every_plugin_kind_the_config_names(wine_config, manager):
    """The dataset, each logger (listed, or the defaults), the balancer and each augmentation perturbation,
    with the plugin and distribution that registered them (recorded in model.json by the trainer)."""
    config = apply_overrides(wine_config, ["trainer.balancer=ogm_ge", "trainer.augment={first: {feature_noise: 0.1}}",
                                           "trainer.loggers=[csv]"])
    recorded = config_provenance(config, validate_config(config, manager.registry), manager.registry)
    assert [(c["kind"], c["name"]) for c in recorded] == [("dataset", "sklearn_tabular"), ("logger", "csv"),
                                                          ("balancer", "ogm_ge"), ("perturbation", "feature_noise")]
    assert all(c["distribution"] == "mmcore" and c["plugin"] for c in recorded)
    defaults = config_provenance(wine_config, validate_config(wine_config, manager.registry), manager.registry)
    assert ("logger", "csv") in {(c["kind"], c["name"]) for c in defaults}
    assert not {"balancer", "perturbation"} & {c["kind"] for c in defaults}


def test_load_config_reports_a_missing_or_broken_file(tmp_path):
    with pytest.raises(mmcore.ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    with pytest.raises(mmcore.ConfigError, match="is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(mmcore.ConfigError, match="must hold a mapping, got list"):
        load_config(tmp_path / "list.yaml")


def test_values_that_would_only_fail_inside_torch_are_config_errors(wine_config, manager):
    wine_config["trainer"].update(lr=float("nan"), weight_decay=float("nan"), grad_clip=float("inf"), seed=2**62,
                                  compile="nope", lr_multipliers={"head": float("nan")})
    issues = issues_of(wine_config, manager.registry)
    for expected in ("trainer.lr: must be a positive number, got nan", "trainer.weight_decay: must be a number >= 0, got nan",
                     "trainer.grad_clip: must be a positive number or null, got inf", "trainer.seed: must be in 0..2**32-1",
                     "trainer.compile: unknown torch.compile backend 'nope'", "trainer.lr_multipliers.head: must be a number >= 0"):
        assert any(issue.startswith(expected) for issue in issues), (expected, issues)
    wine_config["trainer"].update(lr=0.01, weight_decay=0.0, grad_clip=1.0, seed=0, compile="eager", lr_multipliers={})
    assert validate_config(wine_config, manager.registry).compile == "eager"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_a_config_error(wine_config):
    from mmcore.engine.trainer import Trainer

    wine_config["trainer"]["device"] = "cuda"
    with pytest.raises(mmcore.ConfigError, match="trainer.device: is 'cuda' but no CUDA device is available"):
        Trainer(wine_config).fit()
