"""Time of ``explain`` (exact per-modality Shapley values) for one record and for a batch, beside a plain prediction.

    python benchmarks/bench_explain.py                 # the demo model (3 slots) and a 4-slot tabular model
    python benchmarks/bench_explain.py --threads 2     # torch intra-op threads (default: torch's)

Target: one record with M <= 4 modalities in < 50 ms on 2 CPU cores, eager. Measured from raw inputs
(file paths / text / numbers) to the Shapley values, as ``mmcore explain`` and ``Predictor.explain``
do it: processing and collating the record, the encoders once, then the ``2^M`` coalitions through
the fusion and head in one batched pass. Weights do not change the time, so the models are freshly
initialised (the demo's from ``configs/demo.yaml``, its processors fitted on 64 training samples).
Each case alternates explain and ``predict_output`` on the same record (one untimed call each,
then ``--repeats`` timed ones), medians; the ratio is explain / predict.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def demo_model():
    from mmcore.engine.config import load_config
    from mmcore.engine.datasets import load_datasets
    from mmcore.model import build_model
    from mmcore.plugin_manager import get_plugin_manager

    manager = get_plugin_manager()
    config = load_config(ROOT / "configs" / "demo.yaml")
    data = load_datasets(config, manager, splits=("train", "test"))
    torch.manual_seed(0)
    model = build_model(config["model"], manager.registry)
    model.fit_processors([data["train"][i] for i in range(64)])
    records = [dict(data["test"][i]["inputs"]) for i in range(256)]
    full = next(r for r in records if all(v is not None for v in r.values()))  # every modality: 2^3 coalitions matter
    return model.eval(), full, records


def tabular_model(slots: int = 4):
    from mmcore.model import build_model

    torch.manual_seed(0)
    spec = {"encoders": {f"m{i}": {"name": "tabular_mlp", "num_features": 16, "dim": 64} for i in range(slots)},
            "fusion": {"name": "gated", "dim": 128}, "head": {"name": "classification", "num_classes": 10}}
    model = build_model(spec)
    g = torch.Generator().manual_seed(0)
    records = [{f"m{i}": torch.randn(16, generator=g).tolist() for i in range(slots)} for _ in range(256)]
    model.fit_processors([{"inputs": r} for r in records])
    return model.eval(), records[0], records


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmcore.engine.evaluation import predict_output
    from mmcore_plugins.explain.attribution import explain_samples

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    print("| model | slots | explain, 1 record (ms) | predict, 1 record (ms) | ratio | explain, 256 records (ms per record) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, make in (("demo (image_cnn, audio_cnn, text_transformer; gated)", demo_model),
                       ("4 x tabular_mlp; gated", tabular_model)):
        model, record, records = make()
        explain_ms, predict_ms = [], []
        for _ in range(args.rounds):
            explain_ms.append(median_ms(lambda: explain_samples(model, [record]), args.repeats))  # noqa: B023
            predict_ms.append(median_ms(lambda: predict_output(model, [record]), args.repeats))  # noqa: B023
        e, p = statistics.median(explain_ms), statistics.median(predict_ms)
        batch = median_ms(lambda: explain_samples(model, records, batch_size=256), 3) / len(records)  # noqa: B023
        print(f"| {name} | {len(model.slots)} | {e:.1f} (rounds: {', '.join(f'{x:.1f}' for x in explain_ms)}) | {p:.1f} | "
              f"{e / p:.2f} | {batch:.2f} |", flush=True)


if __name__ == "__main__":
    main()
