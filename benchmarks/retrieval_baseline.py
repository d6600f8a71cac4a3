"""Cross-modal retrieval on av_digits (image <-> spoken digit): the contrastive model of
configs/retrieval.yaml against a CCA baseline on the same split.

    python benchmarks/retrieval_baseline.py                       # trains configs/retrieval.yaml first if needed
    python benchmarks/retrieval_baseline.py --run runs/retrieval --json out.json

For each direction (image -> audio: an image queries the test audio clips; audio -> image) it
reports recall@1/5/10 and the median rank of the first match, under two definitions of a match:

- ``same class``: any test item of the query's digit (what the contrastive head trains for: its
  targets are the digit classes, and what its own metrics report);
- ``same sample``: only the query's own pair (its image and its audio clip). With ~45 test items
  per digit and no link between a handwriting and a voice beyond the digit, chance level for
  recall@1 is ~1/45 even for a perfect class-level model: reported because it is the standard.

Baseline: scikit-learn ``CCA`` (Hotelling 1936) between raw features of the same samples --
the image's pixels (the 8x8 PNG, 64 values) and statistics of the log-mel spectrogram the
model's own audio processor computes (per mel band: mean and standard deviation over time, and
the means of three equal time thirds: 200 values) -- standardised, fitted on the training split
(every noisy view), with the number of components chosen on the validation split by same-class
recall@1 (image -> audio); test items are ranked by cosine similarity in the CCA space.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KS = (1, 5, 10)


def retrieval_metrics(queries: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> dict:
    """recall@1/5/10 and median rank of the first match, cosine similarity."""
    import torch

    from mmcore_plugins.retrieval.metrics import first_match_ranks

    def unit(x):
        return torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)

    ranks = first_match_ranks(unit(queries), unit(gallery), torch.as_tensor(query_ids), torch.as_tensor(gallery_ids)).numpy()
    return {**{f"R@{k}": float((ranks <= k).mean()) for k in KS}, "MedR": float(np.median(ranks))}


def both_directions(image: np.ndarray, audio: np.ndarray, labels: np.ndarray) -> dict:
    """``{definition: {direction: metrics}}`` for same-class and same-sample matches."""
    out = {}
    for definition, ids in (("same class", labels), ("same sample", np.arange(len(labels)))):
        out[definition] = {"image->audio": retrieval_metrics(image, audio, ids, ids),
                           "audio->image": retrieval_metrics(audio, image, ids, ids)}
    return out


def image_features(paths: list[str]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32).reshape(-1) / 255.0 for p in paths])


def audio_features(paths: list[str], processor) -> np.ndarray:
    rows = []
    for p in paths:
        mel = processor(p).numpy()  # [n_mels, T], standardised per utterance
        thirds = np.array_split(mel, 3, axis=1)
        rows.append(np.concatenate([mel.mean(1), mel.std(1), *(t.mean(1) for t in thirds)]))
    return np.stack(rows).astype(np.float32)


def split_arrays(dataset, processor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    samples = [dataset[i] for i in range(len(dataset))]
    keep = [s for s in samples if s["inputs"].get("image") and s["inputs"].get("audio")]
    return (image_features([s["inputs"]["image"] for s in keep]), audio_features([s["inputs"]["audio"] for s in keep], processor),
            np.array([s["target"] for s in keep]))


def cca_baseline(datasets: dict, processor) -> tuple[dict, dict]:
    from sklearn.cross_decomposition import CCA
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    arrays = {split: split_arrays(datasets[split], processor) for split in ("train", "val", "test")}
    xi, xa, _ = arrays["train"]
    si, sa = StandardScaler().fit(xi), StandardScaler().fit(xa)
    chosen, best = None, -1.0
    for n in (4, 8, 16, 32):
        cca = CCA(n_components=n, max_iter=1000).fit(si.transform(xi), sa.transform(xa))
        vi, va, labels = arrays["val"]
        ui, ua = cca.transform(si.transform(vi), sa.transform(va))
        r1 = retrieval_metrics(ui, ua, labels, labels)["R@1"]
        if r1 > best:
            chosen, best = (n, cca), r1
    n, cca = chosen
    ti, ta, labels = arrays["test"]
    ui, ua = cca.transform(si.transform(ti), sa.transform(ta))
    info = {"n_components": n, "val_R@1": best, "train_samples": len(xi), "test_samples": len(labels),
            "features": {"image": xi.shape[1], "audio": xa.shape[1]}, "seconds": time.perf_counter() - started}
    return both_directions(ui, ua, labels), info


def model_results(run: Path, manager, dataset) -> dict:
    from mmcore.cli import load_run
    from mmcore_plugins.retrieval.embedding import embed

    model, _ = load_run(run, manager)
    samples = [dataset[i] for i in range(len(dataset))]
    keep = [s for s in samples if s["inputs"].get("image") and s["inputs"].get("audio")]
    vectors = embed(model, keep)
    return both_directions(vectors["head.image"], vectors["head.audio"], np.array([s["target"] for s in keep])), model


def table(results: dict) -> str:
    lines = [f"{'method':<12} {'match':<12} {'direction':<13} " + " ".join(f"{'R@' + str(k):>6}" for k in KS) + f" {'MedR':>6}"]
    for method, by_definition in results.items():
        for definition, by_direction in by_definition.items():
            for direction, m in by_direction.items():
                lines.append(f"{method:<12} {definition:<12} {direction:<13} "
                             + " ".join(f"{100 * m[f'R@{k}']:5.1f}%" for k in KS) + f" {m['MedR']:6.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "retrieval.yaml"))
    parser.add_argument("--run", help="a trained run of the config (default: train it into its run_dir unless there)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("overrides", nargs="*", help="config overrides (key.path=value)")
    args = parser.parse_args(argv)

    from mmcore.engine.config import load_config
    from mmcore.engine.trainer import Trainer, load_datasets
    from mmcore.plugin_manager import get_plugin_manager

    manager = get_plugin_manager()
    config = load_config(args.config, args.overrides)
    run = Path(args.run or config["trainer"].get("run_dir", "runs/retrieval"))
    timings = {}
    if not (run / "best" / "model.safetensors").is_file():
        started = time.perf_counter()
        config["trainer"]["run_dir"] = str(run)
        config["trainer"]["progress"] = False
        report = Trainer(config, manager=manager).fit()
        timings["train_and_evaluate_s"] = time.perf_counter() - started
        timings["trainer_reported_s"] = report["seconds"]
        print(f"trained {run} in {timings['train_and_evaluate_s']:.0f} s (data generation included when not cached)", flush=True)
    datasets = load_datasets(config, manager)
    started = time.perf_counter()
    contrastive, model = model_results(run, manager, datasets["test"])
    timings["embed_test_s"] = time.perf_counter() - started
    cca, cca_info = cca_baseline(datasets, model.processors["audio"])
    results = {"contrastive": contrastive, "CCA": cca}
    print(table(results))
    print(f"CCA: {cca_info}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "cca": cca_info, "timings": timings,
                                               "run": str(run), "config": args.config, "overrides": args.overrides}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
