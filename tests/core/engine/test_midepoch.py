"""Mid-epoch checkpoints (``trainer.checkpoint_every_steps``): a run killed inside an epoch and resumed
uses each sample of that epoch exactly once across the kill and ends with the uninterrupted run's
weights, metrics rows and best checkpoint -- dropout, modality dropout, augmentation and the weights'
moving average (``trainer.ema_decay``) included."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from mmcore.engine.artefacts import CheckpointError
from mmcore.engine.checkpoint import load_training_state
from mmcore.engine.config import ConfigError
from mmcore.engine.distributed import GlobalBatchSampler
from mmcore.engine.trainer import Trainer


class Recording(Trainer):
    """Records the sample indices of each optimiser step by epoch; ``kill_at``: a KeyboardInterrupt (what
    a killed process leaves on disk: the checkpoints written so far) right after that step."""

    def __init__(self, *args, kill_at=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kill_at = kill_at
        self.seen: dict[int, list[tuple[int, list[int]]]] = {}

    def train_step(self, batch, **kwargs):
        loss = super().train_step(batch, **kwargs)
        if kwargs.get("counted", True):
            self.seen.setdefault(self.epoch, []).append((self.step, batch["index"].tolist()))
        if self.step == self.kill_at:
            raise KeyboardInterrupt
        return loss


def test_a_run_killed_mid_epoch_resumes_that_epoch_with_the_unseen_samples(wine_config, tmp_path):
    wine_config["trainer"].update(epochs=3, checkpoint_every_steps=3, modality_dropout=0.2,
                                  augment={"first": {"feature_noise": 0.2}}, ema_decay=0.9)
    straight = copy.deepcopy(wine_config)
    straight["trainer"]["run_dir"] = str(tmp_path / "straight")
    a = Recording(straight)
    a.fit()
    steps = a.steps_per_epoch
    assert steps > 4
    killed = steps + 4  # epoch 2, one step after the checkpoint of step steps + 3 (a multiple of 3 when steps is)
    saved = killed - 1 if (killed - 1) % 3 == 0 else killed - 1 - (killed - 1) % 3
    interrupted = copy.deepcopy(wine_config)
    interrupted["trainer"]["run_dir"] = str(tmp_path / "resumed")
    b = Recording(interrupted, kill_at=killed)
    with pytest.raises(KeyboardInterrupt):
        b.fit()
    state = load_training_state(tmp_path / "resumed" / "last")
    assert state["epoch"] == 1 and state["step"] == saved and state["partial_epoch"]["epoch"] == 2
    c = Recording(interrupted, resume=tmp_path / "resumed")
    report = c.fit()

    n = len(a.datasets["train"])
    before = [i for step, ids in b.seen[2] if step <= saved for i in ids]
    after = [i for _, ids in c.seen[2] for i in ids]
    assert Counter(before + after) == Counter(range(n)), "every sample of the epoch exactly once across the kill"
    assert c.seen[2][0][0] == saved + 1 and sorted(c.seen) == [2, 3]
    order = [i for _, ids in a.seen[2] for i in ids]
    assert before + after == order, "in the uninterrupted run's (seed, epoch) order"

    straight_report = json.loads((tmp_path / "straight" / "report.json").read_text())
    for row_a, row_c in zip(straight_report["history"], report["history"], strict=True):
        assert row_a.keys() == row_c.keys()
        for key in row_a:
            if key != "samples_per_s":
                assert row_c[key] == pytest.approx(row_a[key], abs=1e-6), key
    assert report["samples"]["train"] == n and report["steps"] == 3 * steps
    for which in ("last", "best"):
        wa, wb = (load_file(str(tmp_path / run / which / "model.safetensors")) for run in ("straight", "resumed"))
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6)


def test_a_resumed_sampler_skips_exactly_the_batches_done():
    full = GlobalBatchSampler(23, 4, rank=1, world_size=2, seed=5, epoch=3)
    rest = GlobalBatchSampler(23, 4, rank=1, world_size=2, seed=5, epoch=3, start=4)
    assert list(rest) == list(full)[4:] and len(rest) == len(full) - 4 and rest.shares == full.shares
    with pytest.raises(ValueError, match="start must be in"):
        GlobalBatchSampler(23, 4, start=7)


def test_checkpoint_every_steps_must_be_positive(wine_config):
    wine_config["trainer"]["checkpoint_every_steps"] = 0
    with pytest.raises(ConfigError, match="checkpoint_every_steps"):
        Trainer(wine_config)


def test_a_damaged_mid_epoch_state_is_refused_before_anything_is_loaded(wine_config, tmp_path):
    wine_config["trainer"].update(epochs=2, checkpoint_every_steps=2)
    with pytest.raises(KeyboardInterrupt):
        Recording(wine_config, kill_at=3).fit()
    last = tmp_path / "run" / "last" / "state.pt"
    state = torch.load(last, weights_only=True)
    assert state["partial_epoch"]["batches"] == 2
    state["partial_epoch"]["batches"] = 10_000  # past the epoch's batches
    torch.save(state, last)
    with pytest.raises(CheckpointError, match="partial_epoch.batches"):
        Trainer(wine_config, resume=tmp_path / "run").fit()


def test_a_balancer_without_mid_epoch_state_is_refused_with_mid_epoch_checkpoints(wine_config):
    wine_config["trainer"].update(checkpoint_every_steps=2, balancer="ogm_ge")
    with pytest.raises(ConfigError, match="trainer.checkpoint_every_steps: balancer ogm_ge keeps statistics"):
        Trainer(wine_config)
