"""The training loop: config -> data + model -> AdamW with warmup/cosine -> best checkpoint -> test report."""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmcore.components import PRIMARY_ARGUMENT
from mmcore.data import SPLITS
from mmcore.engine.checkpoint import atomic_write, save_model
from mmcore.engine.config import TrainerOptions, validate_config
from mmcore.engine.evaluation import evaluate, to_device
from mmcore.errors import MmcoreError
from mmcore.model import MultimodalModel, build_model
from mmcore.plugin_manager import MmcorePluginManager, get_plugin_manager


class NonFiniteLossError(MmcoreError):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is a dependency, but seeding must never be what fails
        pass


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def load_datasets(config: Mapping[str, Any], manager: MmcorePluginManager, splits=SPLITS) -> dict[str, Any]:
    data = dict(config["data"])
    info = manager.registry.get("dataset", data.pop("name"))
    return {split: info.factory(**{PRIMARY_ARGUMENT["dataset"]: split}, **data) for split in splits}


class ModalityDropout:
    """Training-time removal of modalities: each present modality of a sample is dropped (its raw
    input set to None, so encoders see ``present=False`` exactly as for truly missing data) with
    probability ``p``, never all of a sample's modalities. Seeded, so runs repeat exactly."""

    def __init__(self, collate, p: float, *, seed: int) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {p}")
        self.collate, self.p = collate, p
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, samples):
        if self.p == 0:
            return self.collate(samples)
        dropped = []
        for sample in samples:
            present = [slot for slot, raw in sample["inputs"].items() if raw is not None]
            drop = [slot for slot in present if float(torch.rand((), generator=self.generator)) < self.p]
            if len(drop) == len(present):
                drop = drop[:-1]  # keep at least one modality
            inputs = {slot: (None if slot in drop else raw) for slot, raw in sample["inputs"].items()}
            dropped.append({**sample, "inputs": inputs})
        return self.collate(dropped)


class Trainer:
    """Trains one model from a validated config and writes everything into ``options.run_dir``."""

    def __init__(self, config: Mapping[str, Any], *, manager: MmcorePluginManager | None = None) -> None:
        self.manager = manager or get_plugin_manager()
        self.config = dict(config)
        self.options: TrainerOptions = validate_config(self.config, self.manager.registry)
        self.run_dir = Path(self.options.run_dir)
        self.device = resolve_device(self.options.device)
        self.model: MultimodalModel | None = None
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ pieces
    def _loader(self, dataset, *, shuffle: bool, seed: int, collate=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.options.batch_size,
            shuffle=shuffle,
            collate_fn=collate or self.model.collate,
            num_workers=self.options.num_workers,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=self.device.type == "cuda",
        )

    def _to_device(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], torch.Tensor | None]:
        return to_device(batch, self.device)

    def evaluate(self, dataset) -> dict[str, float]:
        """Mean loss and the head's metrics over ``dataset``."""
        return evaluate(self.model, dataset, batch_size=self.options.batch_size, device=self.device)

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict[str, Any]:
        opts = self.options
        seed_everything(opts.seed)
        datasets = load_datasets(self.config, self.manager)
        if len(datasets["train"]) == 0:
            raise ValueError("the training split is empty")
        self.model = build_model(self.config["model"], self.manager.registry).to(self.device)
        self.model.fit_processors(datasets["train"].samples if hasattr(datasets["train"], "samples") else list(datasets["train"]))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / "config.json", lambda p: p.write_text(json.dumps(self.config, indent=2)))

        optimizer = torch.optim.AdamW(self.model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        steps_per_epoch = math.ceil(len(datasets["train"]) / opts.batch_size)
        total_steps = steps_per_epoch * opts.epochs
        warmup = max(1, int(opts.warmup_fraction * total_steps))

        def schedule(step: int) -> float:  # linear warmup, then cosine to zero
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        hook = self.manager.hook
        hook.mmcore_train_start(trainer=self, config=self.config)
        best_value, best_epoch, step, start = -math.inf, 0, 0, time.perf_counter()
        monitor_sign = -1.0 if opts.monitor == "loss" else 1.0
        for epoch in range(1, opts.epochs + 1):
            self.model.train()
            epoch_loss, seen = 0.0, 0
            dropout = ModalityDropout(self.model.collate, opts.modality_dropout, seed=opts.seed + epoch)
            for batch in self._loader(datasets["train"], shuffle=True, seed=opts.seed + epoch, collate=dropout):
                inputs, targets = self._to_device(batch)
                out = self.model(inputs, targets)
                if out.loss is None:
                    raise ValueError("the head returned no loss although targets were given")
                if not torch.isfinite(out.loss):
                    raise NonFiniteLossError(f"loss became {float(out.loss)} at step {step + 1} (epoch {epoch})")
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                if opts.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                loss_value = out.loss.item()
                epoch_loss += loss_value * len(targets)
                seen += len(targets)
                hook.mmcore_train_step_end(trainer=self, step=step, metrics={"loss": loss_value, "lr": scheduler.get_last_lr()[0]})
            row = {"epoch": epoch, "train/loss": epoch_loss / seen}
            val_split = "val" if len(datasets["val"]) else "train"
            row.update({f"val/{k}": v for k, v in self.evaluate(datasets[val_split]).items()})
            self.history.append(row)
            hook.mmcore_epoch_end(trainer=self, epoch=epoch, metrics=row)
            value = monitor_sign * row.get(f"val/{opts.monitor}", -row["train/loss"])
            if value > best_value:
                best_value, best_epoch = value, epoch
                save_model(self.model, self.run_dir / "best")
            if opts.progress:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")
                print(f"epoch {epoch}/{opts.epochs}: {shown}", flush=True)
        self._write_history()
        save_model(self.model, self.run_dir / "last")
        # Report the best checkpoint on the test split, not the last epoch's weights.
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(self.run_dir / "best" / "model.safetensors"), device=str(self.device)))
        test = self.evaluate(datasets["test"]) if len(datasets["test"]) else {}
        report = {
            "best_epoch": best_epoch,
            "monitor": opts.monitor,
            "test": test,
            "history": self.history,
            "seconds": time.perf_counter() - start,
            "run_dir": str(self.run_dir),
        }
        atomic_write(self.run_dir / "report.json", lambda p: p.write_text(json.dumps(report, indent=2)))
        hook.mmcore_train_end(trainer=self, report=report)
        return report

    def _write_history(self) -> None:
        keys = sorted({k for row in self.history for k in row}, key=lambda k: (k != "epoch", k))

        def write(path: Path) -> None:
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self.history)

        atomic_write(self.run_dir / "metrics.csv", write)
