"""Mid-epoch resume when training from shards: a run killed inside an epoch (its last checkpoint
written mid-epoch by ``trainer.checkpoint_every_steps``) and resumed uses every sample of that epoch
exactly once across the kill and ends with the uninterrupted run's weights -- here in one process with
2 DataLoader workers; under torchrun with 2 gloo processes x 2 workers on a single shard in
test_shard_distributed.py (one torchrun launch for both)."""

from __future__ import annotations

import pytest
from shard_data import DATA, KILL, MODEL, SAVED, STEPS, Recording, check_resumed

from mmcore.engine.checkpoint import load_training_state
from mmcore_plugins.shards.write import write_shards


def shards_config(folder, run_dir):
    return {"data": {"name": "shards", "path": str(folder)}, "model": MODEL,
            "trainer": {"epochs": 2, "batch_size": 4, "lr": 0.01, "seed": 0, "run_dir": str(run_dir), "progress": False,
                        "plots": False, "tensorboard": False, "num_workers": 2, "checkpoint_every_steps": 2}}


def test_one_process_two_workers_killed_mid_epoch_resumes_with_the_unseen_samples(table, tmp_path):
    from mmcore.engine.datasets import model_data_options
    from mmcore.plugin_manager import get_plugin_manager

    implied = model_data_options(MODEL, get_plugin_manager().registry)
    write_shards(str(table), DATA, implied, tmp_path / "shards", shard_size=3)  # 5 shards, the last of 1
    straight = Recording(shards_config(tmp_path / "shards", tmp_path / "straight"))
    straight.fit()
    config = shards_config(tmp_path / "shards", tmp_path / "resumed")
    killed = Recording(config, kill_at=KILL)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    state = load_training_state(tmp_path / "resumed" / "last")
    assert state["step"] == SAVED and state["partial_epoch"]["batches"] == SAVED - STEPS
    resumed = Recording(config, resume=tmp_path / "resumed")
    resumed.fit()
    assert resumed.seen[2][0][0] == SAVED + 1 and sorted(resumed.seen) == [2]
    before = [i for step, ids in killed.seen[2] if step <= SAVED for i in ids]
    after = [i for _, ids in resumed.seen[2] for i in ids]
    order = [i for _, ids in straight.seen[2] for i in ids]
    check_resumed(tmp_path, "straight", "resumed", before, after, order)
    assert before + after == order, "in the uninterrupted run's (seed, epoch) order"
