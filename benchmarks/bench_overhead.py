"""Framework overhead: one training step through mmcore's Trainer vs the same model written by hand in
plain PyTorch (same weights, same batch, same device), and whether data loading starves the step.

The mmcore step is exactly what ``mmcore train`` runs per batch (``Trainer.train_step``: device
transfer, autocast context, forward through encoders/fusion/head, backward, non-finite-loss
tracking, loss and metric accumulation, gradient clipping, AdamW, scheduler). The plain step is
forward, cross-entropy, backward, clipping, AdamW (no weight decay on biases and norms, as the
trainer does; the same implementation the trainer picked, fused on CPU), scheduler. Both compute
the same function and the same update (checked before timing), missing modalities included
(every 8th sample lacks one; a learned placeholder stands in, as in mmcore's ``concat``).
Target: mmcore / plain <= 1.05. A third loop, plain with PyTorch's default AdamW, shows what a
hand-written loop usually costs.

    python benchmarks/bench_overhead.py                       # the table (interleaved medians)
    python benchmarks/bench_overhead.py --batch=512 --loading # another batch size; data loading too
    python benchmarks/bench_overhead.py --glibc-defaults      # without trainer.retain_freed_memory
    python -m pytest benchmarks/bench_overhead.py --benchmark-only
"""

from __future__ import annotations

import copy
import math
import shutil
import statistics
import sys
import tempfile
import time
import typing

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmcore
from mmcore.engine.evaluation import to_device
from mmcore.engine.trainer import Trainer, warmup_cosine

SLOTS, FEATURES, DIM, HIDDEN, CLASSES, BATCH, ROWS = ("a", "b", "c"), 128, 256, 512, 10, 128, 1024


def _synthetic(split: str, rows: int = ROWS):
    """Random rows in three modalities, labels from a fixed linear rule (the task does not matter)."""
    g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
    x = torch.randn(rows if split == "train" else 64, len(SLOTS), FEATURES, generator=g)
    y = (x.sum(-1) @ torch.arange(1.0, len(SLOTS) + 1)).mul(3).long().remainder(CLASSES)
    from mmcore.data import SampleDataset

    # Every 8th sample lacks one modality (a different one in turn): missing modalities are part
    # of the model's job, so both implementations must handle them, identically.
    def value(i: int, j: int):
        return None if i % 8 == 7 and (i // 8) % len(SLOTS) == j else x[i, j].tolist()

    return SampleDataset([{"inputs": {s: value(i, j) for j, s in enumerate(SLOTS)}, "target": int(y[i])}
                          for i in range(len(x))])


CONFIG = {
    "data": {"name": "bench_synthetic"},
    "model": {
        "encoders": {s: {"name": "tabular_mlp", "num_features": FEATURES, "dim": DIM, "hidden": [HIDDEN], "dropout": 0.0}
                     for s in SLOTS},
        "fusion": {"name": "concat", "dim": DIM},
        "head": {"name": "classification", "num_classes": CLASSES},
    },
    "trainer": {"epochs": 1, "batch_size": BATCH, "progress": False, "plots": False, "tensorboard": False, "device": "cpu"},
}


class PlainModel(nn.Module):
    """The same network by hand: per-modality MLPs, LayerNorm, a learned placeholder where a sample
    lacks the modality, concatenation, projection, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, DIM)) for _ in SLOTS)
        self.norms = nn.ModuleList(nn.LayerNorm(DIM) for _ in SLOTS)
        self.placeholders = nn.ParameterList(nn.Parameter(torch.zeros(DIM)) for _ in SLOTS)
        self.fuse = nn.Linear(len(SLOTS) * DIM, DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, xs: list[torch.Tensor], present: list[torch.Tensor]) -> torch.Tensor:
        z = torch.cat([torch.where(p[:, None], norm(enc(x)), placeholder) for enc, norm, placeholder, x, p
                       in zip(self.encoders, self.norms, self.placeholders, xs, present, strict=True)], dim=-1)
        return self.head(F.gelu(self.fuse(z)))


def copy_weights(plain: PlainModel, model) -> None:
    """Give the plain model the mmcore model's weights, so both compute the same function."""
    with torch.no_grad():
        for i, slot in enumerate(SLOTS):
            src = model.encoders[slot].net
            plain.encoders[i][0].weight.copy_(src[0].weight)
            plain.encoders[i][0].bias.copy_(src[0].bias)
            plain.encoders[i][2].weight.copy_(src[3].weight)
            plain.encoders[i][2].bias.copy_(src[3].bias)
            plain.norms[i].load_state_dict(model.fusion.norms[slot].state_dict())
            plain.placeholders[i].copy_(model.fusion.placeholders[slot])
        plain.fuse.weight.copy_(model.fusion.weight)
        plain.fuse.bias.copy_(model.fusion.bias)
        plain.head.weight.copy_(model.head.net[-1].weight)
        plain.head.bias.copy_(model.head.net[-1].bias)


class Steps(typing.NamedTuple):
    mmcore: typing.Callable[[], None]         # Trainer.train_step
    plain: typing.Callable[[], None]          # the same network by hand, the trainer's AdamW implementation
    hand: typing.Callable[[], None]           # the mmcore model in a hand-written loop
    plain_default: typing.Callable[[], None]  # the plain loop with PyTorch's default AdamW
    cleanup: typing.Callable[[], None]


def build(device: str = "cpu", batch_size: int = BATCH, *, retain_freed_memory: bool = True) -> Steps:
    """The steps to compare, on ``device`` for batches of ``batch_size``."""
    manager = mmcore.create_plugin_manager()
    handle = mmcore.register_plugin(_DatasetPlugin(), name="bench_synthetic", manager=manager)
    config = copy.deepcopy(CONFIG)
    config["trainer"]["device"] = device
    config["trainer"]["batch_size"] = batch_size
    config["trainer"]["retain_freed_memory"] = retain_freed_memory
    config["trainer"]["run_dir"] = tempfile.mkdtemp(prefix="mmcore-bench-")
    trainer = Trainer(config, manager=manager)
    trainer.setup()
    trainer.begin_epoch(1)
    samples = [trainer.datasets["train"][i] for i in range(batch_size)]
    batch = trainer.model.collate(samples)

    inputs, targets = to_device(batch, device)
    xs = [inputs[s]["values"] for s in SLOTS]
    present = [inputs[s]["present"].bool() for s in SLOTS]

    def plain_loop(fused: bool | None):
        """The hand-written network and loop, with an AdamW of its own (see plain_optimizer)."""
        net = PlainModel().to(device)
        copy_weights(net, trainer.model)
        optimizer, scheduler = plain_optimizer(net, trainer, fused=fused)

        def step() -> None:
            loss = F.cross_entropy(net(xs, present), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            scheduler.step()

        return net, step

    plain, plain_step = plain_loop(fused=None)
    naive, plain_default_step = plain_loop(fused=False)

    def mmcore_step() -> None:
        trainer.train_step(batch)

    # The mmcore model in a hand-written loop: separates the Trainer's cost from the components'.
    model = trainer.model
    hand_optimizer, hand_scheduler = plain_optimizer(model, trainer)

    def hand_step() -> None:
        loss = model(inputs, targets).loss
        hand_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        hand_optimizer.step()
        hand_scheduler.step()

    def cleanup() -> None:
        handle.unregister()
        shutil.rmtree(config["trainer"]["run_dir"], ignore_errors=True)

    # Same function before any step (placeholders made non-zero so that they count): the
    # comparison is between equal computations, missing modalities included.
    with torch.no_grad():
        for i, slot in enumerate(SLOTS):
            trainer.model.fusion.placeholders[slot].normal_()
            plain.placeholders[i].copy_(trainer.model.fusion.placeholders[slot])
            naive.placeholders[i].copy_(trainer.model.fusion.placeholders[slot])
    assert not all(p.all() for p in present), "the batch has missing modalities"
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.model(inputs).logits, plain(xs, present), atol=1e-5)
    trainer.model.train()
    # ... and the same update: one step of each gives the same weights.
    mmcore_step()
    plain_step()
    plain_default_step()
    stepped = PlainModel().to(device)
    copy_weights(stepped, trainer.model)
    for name, value in plain.state_dict().items():
        assert torch.allclose(stepped.state_dict()[name], value, atol=1e-5), f"one step apart: {name}"
        assert torch.allclose(naive.state_dict()[name], value, atol=1e-5), f"default AdamW one step apart: {name}"
    return Steps(mmcore_step, plain_step, hand_step, plain_default_step, cleanup)


def plain_optimizer(model: nn.Module, trainer: Trainer, *, fused: bool | None = None):
    """AdamW + schedule as the trainer sets them up: weight decay on matrices only (not on biases,
    norms or placeholders), the same learning rate, warmup and cosine length, by hand.

    ``fused`` defaults to the implementation the trainer picked (fused where the parameters allow
    it), so that the overhead compares equal optimiser work; ``fused=False`` is PyTorch's default
    AdamW, what a hand-written loop usually gets."""
    opts = trainer.options
    if fused is None:
        fused = bool(trainer.optimizer.defaults.get("fused"))
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": opts.weight_decay}],
                                  lr=opts.lr, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(trainer.total_steps, opts.warmup_fraction))
    return optimizer, scheduler


class _DatasetPlugin:
    @mmcore.hookimpl
    def mmcore_register(self, registry) -> None:
        registry.add_dataset("bench_synthetic", lambda split: _synthetic(split))


def interleaved(a, b, *, repeats: int = 200, warmup: int = 20, block: int = 5, device: str = "cpu") -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, timed in alternating blocks so both see the same
    machine load. Each block first runs its function once untimed: a training loop repeats one
    step, so the timed calls find their weights and optimiser state in cache, as they would there,
    not evicted by the other function's."""
    def timed(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(max(1, repeats // block)):
        for fn, times in ((a, ta), (b, tb)):
            fn()
            times += [timed(fn) for _ in range(block)]
    return statistics.median(ta), statistics.median(tb)


# ------------------------------------------------------------------------------ data loading
def loader_vs_step(num_workers: int, *, batches: int = 12, cache_inputs: bool = False) -> dict[str, float]:
    """The av_digits training loader (raw PNG/WAV -> processors -> batches) with ``num_workers``:
    seconds per batch of loading alone, and of loading + the demo model's training step.

    With ``cache_inputs`` the loader first runs once over the same batches (what epoch 1 does
    for epochs 2+: the processed inputs are remembered), then is timed."""
    from mmcore.engine.config import load_config

    config = load_config("configs/demo.yaml", [f"trainer.num_workers={num_workers}", f"trainer.cache_inputs={cache_inputs}",
                                               "trainer.progress=false",
                                               "trainer.plots=false", "trainer.tensorboard=false", "trainer.device=cpu",
                                               f"trainer.run_dir={tempfile.mkdtemp(prefix='mmcore-bench-')}"])
    trainer = Trainer(config)
    trainer.setup()
    trainer.begin_epoch(1)
    try:
        for _ in range(2 if cache_inputs else 1):  # with the memo: fill, then time a second pass
            start = time.perf_counter()
            for i, _ in enumerate(trainer.train_loader(1)):
                if i + 1 == batches:
                    break
        load = (time.perf_counter() - start) / batches
        start = time.perf_counter()
        for i, batch in enumerate(trainer.train_loader(1)):
            trainer.train_step(batch)
            if i + 1 == batches:
                break
        both = (time.perf_counter() - start) / batches
        # The step alone, on an already collated batch.
        start = time.perf_counter()
        for _ in range(batches):
            trainer.train_step(batch)
        step = (time.perf_counter() - start) / batches
    finally:
        shutil.rmtree(trainer.run_dir, ignore_errors=True)
    return {"workers": num_workers, "load_s": load, "step_s": step, "load_and_step_s": both}


# ------------------------------------------------------------------------------ pytest-benchmark
@pytest.fixture(scope="module")
def steps():
    steps = build()
    yield steps
    steps.cleanup()


def test_training_step_mmcore(benchmark, steps):
    benchmark(steps.mmcore)


def test_training_step_plain_pytorch(benchmark, steps):
    benchmark(steps.plain)


def test_training_step_mmcore_model_hand_loop(benchmark, steps):
    benchmark(steps.hand)


def test_training_step_plain_pytorch_default_adamw(benchmark, steps):
    benchmark(steps.plain_default)


# ------------------------------------------------------------------------------ the table
def faults_per_step(step, steps: int = 50) -> float | None:
    """Minor page faults per call of ``step`` (memory the OS had to map afresh); None off Unix."""
    try:
        import resource
    except ImportError:
        return None
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def main() -> None:
    device = "cuda" if torch.cuda.is_available() and "--cpu" not in sys.argv else "cpu"
    batch_size = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--batch=")), BATCH)
    # --glibc-defaults: leave malloc as glibc sets it (trainer.retain_freed_memory=false), to see
    # the page faults that setting saves; it applies to the whole process, so to both loops.
    steps = build(device, batch_size, retain_freed_memory="--glibc-defaults" not in sys.argv)
    try:
        total = [interleaved(steps.mmcore, steps.plain, device=device) for _ in range(5)]
        trainer_only = [interleaved(steps.mmcore, steps.hand, device=device) for _ in range(5)]
        naive = [interleaved(steps.mmcore, steps.plain_default, device=device) for _ in range(3)]
        faults = {name: faults_per_step(getattr(steps, name)) for name in ("mmcore", "plain")}
    finally:
        steps.cleanup()

    def summary(rounds) -> str:
        ratios = [a / b for a, b in rounds]
        return (f"{100 * (statistics.median(ratios) - 1):+.1f}% "
                f"(rounds: {', '.join(f'{100 * (r - 1):+.1f}%' for r in ratios)})")

    a = statistics.median(r[0] for r in total)
    b = statistics.median(r[1] for r in total)
    c = statistics.median(r[1] for r in trainer_only)
    d = statistics.median(r[1] for r in naive)
    print(f"training step, {len(SLOTS)} x {FEATURES} features -> MLP({HIDDEN}) -> {DIM}, concat, {CLASSES} classes, "
          f"batch {batch_size}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  mmcore Trainer.train_step              {1000 * a:8.3f} ms")
    print(f"  mmcore model, hand-written loop        {1000 * c:8.3f} ms")
    print(f"  plain PyTorch model and loop           {1000 * b:8.3f} ms")
    print(f"  plain, PyTorch's default AdamW         {1000 * d:8.3f} ms")
    print(f"  mmcore vs plain PyTorch (all of it):   {summary(total)}")
    print(f"  Trainer vs hand-written loop (same model): {summary(trainer_only)}")
    print(f"  mmcore vs plain with default AdamW:    {summary(naive)}")
    if faults["mmcore"] is not None:
        print(f"  page faults per step: mmcore {faults['mmcore']:.1f}, plain {faults['plain']:.1f}")
    if "--loading" in sys.argv or "--all" in sys.argv:
        print("\ndata loading on av_digits (demo config), seconds per batch of 32:")
        for workers, cache in ((0, False), (2, False), (0, True)):
            r = loader_vs_step(workers, cache_inputs=cache)
            print(f"  workers={workers}{', cache_inputs' if cache else '':14s}: loading {r['load_s'] * 1000:7.1f} ms, step {r['step_s'] * 1000:7.1f} ms, "
                  f"loading + step {r['load_and_step_s'] * 1000:7.1f} ms "
                  f"(starved by {max(0.0, r['load_and_step_s'] / r['step_s'] - 1) * 100:.0f}%)")
    if not math.isfinite(a):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
