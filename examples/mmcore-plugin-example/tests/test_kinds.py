"""The head, perturbation, dataset, logger, command and lifecycle hook of the example keep mmcore's contracts."""

import json
import logging
import subprocess
import sys

import torch
from mmcore_example.char_histogram import CharHistogramProcessor
from mmcore_example.char_noise import CharNoise
from mmcore_example.palindromes import load_palindromes

import mmcore
from mmcore.testing import check_component, check_dataset, check_perturbation


def test_perturbation_conformance():
    check_perturbation(CharNoise, processor=CharHistogramProcessor(), raws=["hello world", "abcdef", "a"])
    noisy = CharNoise(1.0)("0000", torch.Generator().manual_seed(0))
    assert len(noisy) == 4 and noisy.isalpha() and CharNoise(0.0)("0000", torch.Generator()) == "0000"


def test_dataset_conformance_and_labels():
    built = check_dataset(load_palindromes, options={"size": 40})
    assert sum(len(d) for d in built.values()) == 40
    for sample in built["train"].samples:
        word = sample["inputs"]["text"]
        assert sample["target"] == int(word == word[::-1])


def test_registered_components_pass_the_registry_checks():
    registry = mmcore.create_plugin_manager().registry
    check_component(registry.get("perturbation", "example_char_noise"), registry=registry)
    check_component(registry.get("dataset", "example_palindromes"), registry=registry)
    assert registry.get("perturbation", "example_char_noise").modality == "text"


def test_command_prints_words():
    out = subprocess.run([sys.executable, "-m", "mmcore", "example-words", "--count", "3"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 3 and all(line.split("\t")[1] in ("yes", "no") for line in out)


def test_lifecycle_hook_logs_each_epoch_of_a_real_training(tmp_path, caplog):
    from mmcore.engine.trainer import Trainer

    config = {
        "data": {"name": "example_palindromes", "size": 40},
        "model": {"encoders": {"text": {"name": "example_char_histogram", "dim": 8}},
                  "head": {"name": "example_margin"}},
        "trainer": {"epochs": 2, "batch_size": 8, "run_dir": str(tmp_path / "run"),
                    "loggers": [{"name": "example_jsonl", "filename": "epochs.jsonl"}]},
    }
    with caplog.at_level(logging.INFO, logger="mmcore_example"):
        Trainer(config, manager=mmcore.create_plugin_manager()).fit()
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "mmcore_example"] == ["epoch 1", "epoch 2"]
    # The logger wrote one JSON line per epoch.
    lines = [json.loads(line) for line in (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and "val/loss" in lines[0]
