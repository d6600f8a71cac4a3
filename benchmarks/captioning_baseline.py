"""Captioning on digit_captions: the captioning head (greedy and beam search) against a baseline
that classifies each digit position independently with the same image encoder.

    python benchmarks/captioning_baseline.py                    # trains configs/captioning.yaml first if needed
    python benchmarks/captioning_baseline.py --run runs/captioning --json out.json

Metrics on the test split (captions of digit images never seen in training), all from decoded
strings: BLEU-4 (torchmetrics ``BLEUScore``, smoothed, as the head's metric), exact match, and
per-word accuracy (position-wise, over the longer of prediction and reference:
:func:`mmcore_plugins.heads._caption_metrics.token_counts`).

Baseline: the config's image encoder (same options, fresh weights) + one linear layer giving,
for each of the ``max_digits`` positions, scores over the 10 digits and "no digit"; trained with
the config's epochs, batch size, learning rate (AdamW, weight decay 0.01, the same linear warmup +
cosine schedule as the trainer) and seed; its caption is the words of the positions up to the first
"no digit".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def string_metrics(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    from torchmetrics.text import BLEUScore

    from mmcore_plugins.heads._caption_metrics import token_counts

    bleu = BLEUScore(n_gram=4, smooth=True)
    bleu.update(hypotheses, [[r] for r in references])
    counts = [token_counts(h, r) for h, r in zip(hypotheses, references, strict=True)]
    return {"bleu": float(bleu.compute()), "exact_match": sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references),
            "token_accuracy": sum(c for c, _ in counts) / max(1, sum(t for _, t in counts))}


@torch.no_grad()
def captions_of(model, samples: list[dict], beam_size: int, batch_size: int = 128) -> list[str]:
    from mmcore.engine.evaluation import to_device

    model.eval()
    model.head.beam_size = beam_size
    out = []
    for start in range(0, len(samples), batch_size):
        batch = model.collate([{"inputs": s["inputs"]} for s in samples[start : start + batch_size]])
        output = model(to_device(batch, "cpu")[0])
        out += [p["caption"] if isinstance(p, dict) else p for p in model.head.format_predictions(output)]
    return out


def position_baseline(config: dict, datasets: dict, manager, words: list[str], max_digits: int) -> tuple[list[str], dict]:
    """Train the per-position classifier; its test captions and training info."""
    from torch import nn

    from mmcore.engine.trainer import seed_everything, warmup_cosine
    from mmcore.model import _build

    trainer = config["trainer"]
    seed_everything(int(trainer.get("seed", 0)))
    spec = config["model"]["encoders"]["image"]
    encoder = _build(manager.registry, "encoder", spec, "model.encoders.image")
    processor = encoder.processor()
    none = len(words)  # class index of "no digit"
    head = nn.Linear(encoder.dim, max_digits * (none + 1))

    def tensors(dataset):
        samples = [dataset[i] for i in range(len(dataset))]
        pixels = processor.collate([processor(s["inputs"]["image"]) for s in samples])
        index = {w: i for i, w in enumerate(words)}
        labels = torch.full((len(samples), max_digits), none)
        for row, s in enumerate(samples):
            for j, w in enumerate(s["target"].split()):
                labels[row, j] = index[w]
        return pixels, labels, [s["target"] for s in samples]

    started = time.perf_counter()
    (train_x, train_y, _), (test_x, _, test_refs) = tensors(datasets["train"]), tensors(datasets["test"])
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=float(trainer.get("lr", 1e-3)), weight_decay=float(trainer.get("weight_decay", 0.01)))
    epochs, batch_size = int(trainer.get("epochs", 20)), int(trainer.get("batch_size", 32))
    steps = epochs * math.ceil(len(train_y) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, float(trainer.get("warmup_fraction", 0.05))))
    generator = torch.Generator().manual_seed(int(trainer.get("seed", 0)))
    for _ in range(epochs):
        encoder.train()
        head.train()
        for idx in torch.randperm(len(train_y), generator=generator).split(batch_size):
            batch = {k: v[idx] for k, v in train_x.items()}
            logits = head(encoder(batch).pooled).view(len(idx), max_digits, none + 1)
            loss = nn.functional.cross_entropy(logits.reshape(-1, none + 1), train_y[idx].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
    encoder.eval()
    head.eval()
    with torch.no_grad():
        predicted = head(encoder(test_x).pooled).view(len(test_refs), max_digits, none + 1).argmax(-1)
    hypotheses = []
    for row in predicted.tolist():
        out = []
        for c in row:
            if c == none:
                break
            out.append(words[c])
        hypotheses.append(" ".join(out))
    return hypotheses, {"seconds": time.perf_counter() - started, "parameters": sum(p.numel() for p in params)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "captioning.yaml"))
    parser.add_argument("--run", help="a trained run of the config (default: train it into its run_dir unless there)")
    parser.add_argument("--beam", type=int, default=4, help="beam size of the beam-search row (default 4)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("overrides", nargs="*", help="config overrides (key.path=value)")
    args = parser.parse_args(argv)

    from mmcore.cli import load_run
    from mmcore.engine.config import load_config
    from mmcore.engine.trainer import Trainer, load_datasets
    from mmcore.plugin_manager import get_plugin_manager

    manager = get_plugin_manager()
    config = load_config(args.config, args.overrides)
    run = Path(args.run or config["trainer"].get("run_dir", "runs/captioning"))
    timings = {}
    if not (run / "best" / "model.safetensors").is_file():
        started = time.perf_counter()
        config["trainer"]["run_dir"] = str(run)
        config["trainer"]["progress"] = False
        Trainer(config, manager=manager).fit()
        timings["train_and_evaluate_s"] = time.perf_counter() - started
        print(f"trained {run} in {timings['train_and_evaluate_s']:.0f} s (data generation included when not cached)", flush=True)
    datasets = load_datasets(config, manager)
    test = [datasets["test"][i] for i in range(len(datasets["test"]))]
    references = [s["target"] for s in test]
    model, _ = load_run(run, manager)
    words = list(config["model"]["head"]["vocab"])
    results = {}
    for label, beam in (("greedy", 1), (f"beam {args.beam}", args.beam)):
        started = time.perf_counter()
        results[f"captioning, {label}"] = string_metrics(captions_of(model, test, beam), references)
        timings[f"decode_{beam}_s"] = time.perf_counter() - started
    hypotheses, info = position_baseline(config, datasets, manager, words, datasets["test"].metadata["max_digits"])
    results["per-position classifier"] = string_metrics(hypotheses, references)
    timings["baseline_train_s"] = info["seconds"]
    print(f"{'model':<28} {'BLEU-4':>7} {'exact':>7} {'word acc':>9}   ({len(test)} test captions)")
    for name, m in results.items():
        print(f"{name:<28} {100 * m['bleu']:6.1f}% {100 * m['exact_match']:6.1f}% {100 * m['token_accuracy']:8.1f}%")
    print(f"timings: {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "timings": timings, "run": str(run), "baseline": info,
                                               "config": args.config, "overrides": args.overrides}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
