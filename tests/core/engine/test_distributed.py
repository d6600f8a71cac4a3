"""Distributed runs: each process's share of the data (no sample repeated or dropped), evaluation
that counts each sample once, per-process seeds, and `torchrun` with 2 CPU processes (gloo) giving
the same model as one process with the same global batch — on an odd number of rows."""

import csv
import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler, Subset

from mmcore.cli import main as cli_main
from mmcore.engine import distributed
from mmcore.engine.distributed import GlobalBatchSampler, process_seed, shard_indices, split_share
from mmcore.engine.evaluation import evaluate_counted
from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError
from mmcore_plugins.heads.metrics import RetrievalRecall

#: torchrun of this interpreter: a ``torchrun`` found on PATH may belong to another Python (a pyenv
#: shim's, without mmcore, when the tests run in a virtual environment)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


# ---------------------------------------------------------------------- how the data is split
# Every case the trainer accepts: global batch divisible by the processes, a row per process.
SPLITS = [(n, b, w) for n, b in [(9, 4), (9, 8), (10, 4), (3, 12), (17, 6), (1, 4)] for w in (1, 2, 3, 4) if b % w == 0 and n >= w]


@pytest.mark.parametrize(("n", "batch_size", "world_size"), SPLITS)
def test_global_batches_are_split_over_processes_without_repeats(n, batch_size, world_size):
    one = GlobalBatchSampler(n, batch_size, seed=5, epoch=2)
    ranks = [GlobalBatchSampler(n, batch_size, rank=r, world_size=world_size, seed=5, epoch=2) for r in range(world_size)]
    assert all(len(s) == len(one) == -(-n // batch_size) for s in ranks)
    for b, global_batch in enumerate(one.batches):
        # The processes' real samples, in rank order, are exactly the global batch one process uses.
        real = [i for s in ranks for i in s.batches[b][: s.shares[b][0]]]
        assert real == global_batch
        assert all(s.shares[b][1] == len(global_batch) for s in ranks)
        sizes = [s.shares[b][0] for s in ranks]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
        # A process with no real sample still gets a batch (a placeholder) for DDP's all-reduce.
        assert all(len(s.batches[b]) == max(1, s.shares[b][0]) for s in ranks)
    assert sum(s.num_samples for s in ranks) == n
    assert sorted(i for s in ranks for b, batch in enumerate(s.batches) for i in batch[: s.shares[b][0]]) == list(range(n))


def test_one_process_keeps_the_order_distributed_sampler_gave():
    # Single-process runs are unchanged by the new sampler: same permutation, same batches.
    for epoch in (0, 3):
        old = DistributedSampler(range(23), num_replicas=1, rank=0, shuffle=True, seed=7)
        old.set_epoch(epoch)
        order = list(old)
        assert GlobalBatchSampler(23, 5, seed=7, epoch=epoch).batches == [order[i:i + 5] for i in range(0, 23, 5)]
    assert GlobalBatchSampler(23, 5, seed=7, epoch=0).batches != GlobalBatchSampler(23, 5, seed=7, epoch=1).batches


def test_split_share_and_evaluation_shards_partition_the_samples():
    for n in range(0, 12):
        for world_size in (1, 2, 3, 5):
            shares = [split_share(n, r, world_size) for r in range(world_size)]
            assert [i for a, b in shares for i in range(a, b)] == list(range(n))
            shards = [list(shard_indices(n, r, world_size)) for r in range(world_size)]
            assert sorted(i for s in shards for i in s) == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank must be in"):
        shard_indices(9, 2, 2)


def test_each_process_and_epoch_has_its_own_stable_seed():
    seeds = {(r, e): process_seed(0, r, e) for r in range(4) for e in range(1, 4)}
    assert len(set(seeds.values())) == len(seeds)
    assert process_seed(0, 1, 2) == seeds[(1, 2)] and process_seed(1, 1, 2) != seeds[(1, 2)]


def test_fewer_training_rows_than_processes_is_refused_up_front():
    with pytest.raises(ConfigError, match="the training split has 1 row.*fewer than the 2 processes"):
        distributed.check_training_rows(1, 2)
    distributed.check_training_rows(2, 2)
    distributed.check_training_rows(5, 1)


# ---------------------------------------------------------------------- 2 processes vs 1, 9 rows
SPLIT_ROWS = {"train": 9, "val": 7, "test": 5}  # odd everywhere: some process gets one sample fewer


def write_manifest(folder):
    """A real CSV manifest: four numeric features and a binary label, with a split column."""
    rng = random.Random(0)
    path = folder / "rows.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["f0", "f1", "f2", "f3", "label", "split"])
        row = 0
        for split, count in SPLIT_ROWS.items():
            for _ in range(count):
                label = row % 2
                writer.writerow([round(rng.gauss(label, 1.0), 4) for _ in range(4)] + [label, split])
                row += 1
    return path


def config_for(manifest, run_dir, dropout=0.0):
    return {
        "data": {"name": "manifest", "path": str(manifest), "columns": {"table": ["f0", "f1", "f2", "f3"]},
                 "target": "label", "split_column": "split"},
        "model": {
            "encoders": {"table": {"name": "tabular_mlp", "num_features": 4, "dim": 8, "dropout": dropout}},
            "fusion": {"name": "concat", "dim": 8},
            "head": {"name": "classification", "num_classes": 2},
        },
        # Global batches of 4 over 9 rows: 4, 4, 1 — the last leaves process 1 without a sample;
        # two micro-batches per step: steps of 8 and of 1 samples.
        "trainer": {"epochs": 2, "batch_size": 4, "grad_accumulation": 2, "lr": 0.02, "seed": 0, "run_dir": str(run_dir),
                    "progress": False, "plots": False, "tensorboard": False},
    }


#: Run under torchrun by each process: train, then report what each process's generator draws.
WORKER = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    import yaml
    from torch.utils.data import Subset
    from mmcore.engine.distributed import shard_indices
    from mmcore.engine.evaluation import evaluate_counted
    from mmcore.engine.trainer import Trainer
    from mmcore_plugins.heads.metrics import RetrievalRecall

    dist.init_process_group("gloo")  # joined here, so the trainer leaves it open for the checks below
    config = yaml.safe_load(open(sys.argv[1]))
    trainer = Trainer(config)
    report = trainer.fit()
    draws = {}
    for epoch in (1, 2, 1):  # epoch 1 twice: a resumed epoch draws the same
        trainer.begin_epoch(epoch)
        draws.setdefault(str(epoch), []).append(torch.rand(4).tolist())
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, draws)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    # A split with fewer rows than processes: every process evaluates it whole, unsynchronised.
    tiny = evaluate_counted(trainer.model, Subset(trainer.datasets["test"], [0]), rank=rank, world_size=world_size)
    # A metric with list ("cat") states over shards of uneven length (7 rows: 4 and 3).
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=g)
    embeddings, ids = torch.stack([a, a + torch.randn(7, 5, generator=g)], dim=1), torch.arange(7)
    recall = RetrievalRecall(1)
    mine = list(shard_indices(7, rank, world_size))
    recall.update(embeddings[mine], ids[mine])
    recall = float(recall.compute())
    if rank == 0:
        json.dump({"report": report, "draws": gathered, "tiny": tiny, "recall": recall}, open(sys.argv[2], "w"))
    dist.barrier()
    dist.destroy_process_group()
""")


@pytest.mark.slow  # two fresh Python processes import torch and torchmetrics: ~20-60 s on 2 busy cores
def test_two_processes_on_nine_rows_match_one_process(tmp_path):
    manifest = write_manifest(tmp_path)
    trainer = Trainer(config_for(manifest, tmp_path / "one"))
    one = trainer.fit()

    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(config_for(manifest, tmp_path / "two")))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(2):
        result = subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", str(tmp_path / "worker.py"), str(config),
                                 str(tmp_path / "two.json")], capture_output=True, text=True, env=env, timeout=300)
        # Once in many runs on a loaded 2-core VM, gloo's transport aborts a process (SIGABRT);
        # that, and only that, is retried once.
        if result.returncode == 0 or "SIGABRT" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "two.json").read_text())
    two = out["report"]

    # Each sample counted exactly once: 9 training rows (not 10), 7 validation, 5 test.
    assert one["samples"] == two["samples"] == SPLIT_ROWS
    assert two["world_size"] == 2 and one["steps"] == two["steps"] == 2 * 2
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/macro_f1"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    for key in ("loss", "accuracy", "macro_f1"):
        assert one["test"][key] == pytest.approx(two["test"][key], rel=1e-6, abs=1e-7), key

    wa, wb = (load_file(str(tmp_path / run / "last" / "model.safetensors")) for run in ("one", "two"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max() < 1e-6, key

    # Model randomness (dropout masks, processor augmentation) differs between processes, and is
    # the same again when an epoch is rerun (resume).
    rank0, rank1 = out["draws"]
    assert rank0["1"][0] != rank1["1"][0] and rank0["2"][0] != rank1["2"][0]
    assert rank0["1"][0] != rank0["2"][0]
    assert rank0["1"][0] == rank0["1"][1] and rank1["1"][0] == rank1["1"][1]

    tiny, count = evaluate_counted(trainer.model, Subset(trainer.datasets["test"], [0]))
    assert out["tiny"][1] == count == 1
    assert out["tiny"][0] == pytest.approx(tiny, rel=1e-6, abs=1e-7)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=g)
    recall = RetrievalRecall(1)
    recall.update(torch.stack([a, a + torch.randn(7, 5, generator=g)], dim=1), torch.arange(7))
    assert out["recall"] == pytest.approx(float(recall.compute()), abs=1e-7)
    assert 0 < out["recall"] < 1


# ---------------------------------------------------------------------- the CLI under torchrun
CLI_CONFIG = {
    # breast_cancer: 370 training rows (12 global batches of 32, the last of 18: 9 per process).
    "data": {"name": "sklearn_tabular", "dataset": "breast_cancer", "seed": 0},
    "model": {
        "encoders": {slot: {"name": "tabular_mlp", "num_features": 10, "dim": 16, "dropout": 0.0}
                     for slot in ("mean", "error", "worst")},
        "fusion": {"name": "concat", "dim": 16},
        "head": {"name": "classification", "num_classes": 2},
    },
    "trainer": {"epochs": 2, "batch_size": 32, "lr": 0.003, "progress": False, "plots": False, "tensorboard": False},
}


@pytest.mark.slow
def test_mmcore_train_under_torchrun_matches_one_process(tmp_path, keep_threads):
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(CLI_CONFIG))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The one-process reference: the same command in this process (a fresh interpreter would only
    # import torch once more), on one thread as the torchrun processes (OMP_NUM_THREADS=1).
    runs = {"one": tmp_path / "one"}
    assert cli_main(["train", str(config), f"trainer.run_dir={runs['one']}", "trainer.threads=1"]) == 0
    for attempt in range(2):
        runs["two"] = tmp_path / f"two-{attempt}"
        result = subprocess.run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "mmcore", "train", str(config),
                                 f"trainer.run_dir={runs['two']}"], capture_output=True, text=True, env=env, timeout=600)
        # Once in many runs on a loaded 2-core VM, gloo's transport aborts a process (SIGABRT);
        # that, and only that, is retried once.
        if result.returncode == 0 or "SIGABRT" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((runs[n] / "report.json").read_text()) for n in ("one", "two"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["steps"] == one["steps"] == 2 * 12, "the same number of optimiser steps: 370 rows / 32 per global batch"
    assert two["samples"] == one["samples"] and one["samples"]["train"] == 370
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
        assert a["val/accuracy"] == pytest.approx(b["val/accuracy"], abs=1e-6)
    assert one["test"]["accuracy"] == pytest.approx(two["test"]["accuracy"], abs=1e-6)
    wa, wb = (load_file(str(runs[n] / "last" / "model.safetensors")) for n in ("one", "two"))
    for key in wa:
        assert (wa[key] - wb[key]).abs().max() < 1e-5, key
    # Only the main process wrote: one run directory, no plots from the other process.
    assert not (runs["two"] / "plots").exists()
