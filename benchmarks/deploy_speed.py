"""Deployment speed and accuracy on the demo model: eager PyTorch vs onnxruntime fp32 vs int8.

    mmcore train configs/demo.yaml                     # the demo run (runs/demo)
    python benchmarks/deploy_speed.py --run runs/demo  # exports it (ONNX + int8) into a temporary folder

Reports, on the demo's test split (every test record, its files read from disk):

* accuracy of the eager model (``mmcore predict``'s forward pass), of the ONNX graph and of the
  int8 graph through the export's front end, and how often each agrees with eager;
* the graph files' sizes (model.onnx vs model.int8.onnx);
* batch-1 latency of the model itself, graph inputs prepared once: the eager module that is
  exported (the same computation: log-mel and normalisation inside) and the trained model's own
  forward on its processors' batch (log-mel done beforehand: a stricter baseline), against
  onnxruntime fp32 and int8 -- interleaved record by record, medians, ratios per round;
* one record end to end (files read, preprocessed, predicted): ``mmcore predict``'s path
  (``predict_output``), ``mmcore.Predictor.predict`` and the export's front end + onnxruntime; and
  the same per record in batches of 256.

The machine's load average is printed before and after: compare ratios, not absolute times,
across machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="the demo run directory (default runs/demo)")
    parser.add_argument("--export", help="an existing export of it with model.onnx and model.int8.onnx (default: export now)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and onnxruntime (default 2)")
    parser.add_argument("--records", type=int, default=40, help="test records timed one by one (default 40)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over them (default 5)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    import mmcore
    from mmcore.cli import load_run
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.evaluation import predict_output
    from mmcore_plugins.deploy import frontend
    from mmcore_plugins.deploy.export import export_model, graph_inputs, plan
    from mmcore_plugins.deploy.graph import ExportModule

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; threads {args.threads}; "
          f"torch {torch.__version__}", flush=True)
    manager = mmcore.get_plugin_manager()
    model, config = load_run(args.run, manager)
    model.eval()
    test = load_datasets(config, manager, splits=("test",))["test"]
    samples = [test[i] for i in range(len(test))]
    records = [{k: v for k, v in s["inputs"].items() if v is not None} for s in samples]
    targets = model.head.collate_targets([s["target"] for s in samples]).numpy()
    tmp = None
    if args.export is None:
        tmp = tempfile.TemporaryDirectory()
        started = time.perf_counter()
        folder = export_model(model, Path(tmp.name) / "demo", fmt="onnx", int8=True)
        print(f"exported in {time.perf_counter() - started:.0f} s", flush=True)
    else:
        folder = Path(args.export)
    fp32 = frontend.load(folder, graph="model.onnx", threads=args.threads)
    int8 = frontend.load(folder, graph="model.int8.onnx", threads=args.threads)

    # ---- accuracy on the test split
    eager_pred, fp32_pred, int8_pred = [], [], []
    for start in range(0, len(records), 64):
        chunk = records[start : start + 64]
        eager_pred += model.head.format_predictions(predict_output(model, chunk))
        fp32_pred += [r["prediction"] for r in fp32.predict(chunk)]
        int8_pred += [r["prediction"] for r in int8.predict(chunk)]
    classes = fp32.head["classes"]
    as_index = lambda values: np.array([classes.index(str(v)) if str(v) in classes else int(v) for v in values])  # noqa: E731
    e, f, q = as_index(eager_pred), as_index(fp32_pred), as_index(int8_pred)
    accuracy = {name: float((v == targets).mean()) for name, v in (("eager", e), ("onnx fp32", f), ("onnx int8", q))}
    print(f"\ntest split: {len(records)} records")
    for name, value in accuracy.items():
        print(f"  accuracy {name:<10} {100 * value:.2f}%")
    print(f"  agreement with eager: fp32 {100 * (f == e).mean():.2f}%, int8 {100 * (q == e).mean():.2f}%")
    print(f"  int8 accuracy loss: {100 * (accuracy['eager'] - accuracy['onnx int8']):.2f} points")
    sizes = {k: (folder / k).stat().st_size for k in ("model.onnx", "model.int8.onnx")}
    weights = Path(args.run) / "best" / "model.safetensors"
    print(f"  files: model.onnx {sizes['model.onnx'] / 1e6:.3f} MB, model.int8.onnx {sizes['model.int8.onnx'] / 1e6:.3f} MB "
          f"({sizes['model.onnx'] / sizes['model.int8.onnx']:.2f}x smaller); the run's weights "
          f"{weights.stat().st_size / 1e6:.3f} MB")

    # ---- batch-1 latency of the model itself (inputs prepared once)
    slots = plan(model)
    module = ExportModule(model, slots).eval()
    module.output_names = [o["name"] for o in fp32.manifest["outputs"]]
    fronts = {name: fp32.slots[name] for name in fp32.slots}
    chosen = records[: args.records]
    graph = [graph_inputs(fronts, module, [r]) for r in chosen]
    arrays = [{n: t.numpy() for n, t in zip(module.input_names, g, strict=True)} for g in graph]
    collated = [model.collate([{"inputs": r}])["inputs"] for r in chosen]
    runners = {
        "eager (exported module)": lambda i: module(*graph[i]),
        "eager (model forward)": lambda i: model(collated[i]),
        "onnxruntime fp32": lambda i: fp32.run(arrays[i]),
        "onnxruntime int8": lambda i: int8.run(arrays[i]),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    rounds: list[dict[str, float]] = []
    with torch.no_grad():
        for i in range(len(chosen)):  # warm up every path on every record
            for run in runners.values():
                run(i)
        for r in range(args.rounds):
            per: dict[str, list[float]] = {k: [] for k in runners}
            for i in range(len(chosen)):
                order = list(runners.items())
                order = order[r % len(order):] + order[: r % len(order)]  # rotate who goes first
                for name, run in order:
                    start = time.perf_counter()
                    run(i)
                    per[name].append(time.perf_counter() - start)
            for k in runners:
                times[k] += per[k]
            rounds.append({k: median_ms(v) for k, v in per.items()})
    print(f"\nbatch 1, model only ({len(chosen)} test records x {args.rounds} interleaved rounds; medians, ms):")
    for name in runners:
        print(f"  {name:<26} {median_ms(times[name]):7.2f} ms   rounds: {', '.join(f'{r[name]:.2f}' for r in rounds)}")
    for base in ("eager (exported module)", "eager (model forward)"):
        for fast in ("onnxruntime fp32", "onnxruntime int8"):
            ratios = [r[base] / r[fast] for r in rounds]
            print(f"  {fast} vs {base}: {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})")

    # ---- one record end to end, and per record in batches of 256
    from mmcore_plugins.autofit.predictor import Predictor

    predictor = Predictor(Path(args.run), model, None, config)
    paths = {
        "mmcore predict (predict_output)": lambda rows: predict_output(model, rows),
        "mmcore.Predictor.predict": lambda rows: predictor.predict(rows),
        "export + onnxruntime fp32": lambda rows: fp32.predict(rows),
        "export + onnxruntime int8": lambda rows: int8.predict(rows),
    }
    single: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, float] = dict.fromkeys(paths, 0.0)
    for _ in range(2):
        for run in paths.values():
            run(chosen[:1])
    for r in range(args.rounds):
        for i, record in enumerate(chosen):
            order = list(paths.items())
            order = order[(r + i) % len(order):] + order[: (r + i) % len(order)]
            for name, run in order:
                clock = time.process_time()
                start = time.perf_counter()
                run([record])
                single[name].append(time.perf_counter() - start)
                cpu[name] += time.process_time() - clock
    big = (records * (256 // len(records) + 1))[:256]
    batched = {}
    for name, run in paths.items():
        run(big)
        spans = []
        for _ in range(3):
            start = time.perf_counter()
            run(big)
            spans.append((time.perf_counter() - start) / len(big))
        batched[name] = median_ms(spans)
    print("\none record end to end (files read and preprocessed; medians) and per record in batches of 256; CPU time "
          "of this process per single-record prediction (all threads; what a loaded machine does not inflate):")
    for name in paths:
        print(f"  {name:<34} batch 1: {median_ms(single[name]):7.2f} ms (CPU {1000 * cpu[name] / len(single[name]):6.2f} ms)"
              f"   batch 256: {batched[name]:6.2f} ms/record")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
