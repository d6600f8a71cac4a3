"""Distillation and structured pruning on the demo, and the deploying user's table.

    python benchmarks/compress_demo.py [--root runs/compress] [--stages teacher,distill,prune,table]
        [--amounts 0.5,0.75] [--int8 teacher,pruned_0.5] [--threads 2] [--rounds 15] [--repeats 30]

Every step is an ordinary ``mmcore`` command (printed before it runs) writing a run directory
under ``--root``; a step whose run already finished is skipped, so the script continues where it
stopped. Steps:

* ``teacher``: ``mmcore train configs/demo.yaml`` (the shipped demo: 352,586 parameters);
* ``distill``: ``configs/demo_student.yaml`` (4.3x fewer parameters) and
  ``configs/demo_audio_text.yaml`` (no image encoder), each trained alone
  (``trainer.distill=null``) and distilled from the teacher;
* ``prune``: ``mmcore prune TEACHER --amount A`` (+ fine-tuning, ``--distill`` from the
  unpruned teacher) for each ``--amounts``;
* ``table``: test accuracy (report.json), parameters, weight file size, and batch-1 latency: the
  median forward time of one test sample that has all three modalities, every model measured in
  the same process with ``--threads`` intra-op threads, in interleaved rounds (each round times
  every model, the order rotating; the median over rounds is reported, ratios are against the
  teacher's in the same round), and the CPU time of this process per forward (all threads; other
  processes on a loaded machine inflate it far less than wall time; onnxruntime's spinning
  threads count in it). Written to ``ROOT/compress.json`` and printed as a Markdown table.
* int8 rows (the ``table`` stage, for each run in ``--int8``): ``mmcore export RUN --format onnx
  --int8 --out ROOT/exports/RUN-onnx-int8`` (skipped when that export exists); accuracy of
  ``model.int8.onnx`` through the export's front end (``mmcore serve``'s path) on every test record,
  next to the eager model's on the same records; file size of ``model.int8.onnx``; batch-1 latency
  of the graph under onnxruntime with the same threads, its inputs prepared once from the same
  sample and timed in the same interleaved rounds. The graph does more than the eager forward it is
  compared with (the log-mel spectrogram is inside it; the front end pads a batch to 2 rows, the
  second lacking every modality): the ratio is, if anything, unfavourable to int8. The export's
  fp32 graph (``model.onnx``) is timed alongside, to show how much of the gain is onnxruntime's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(command: list[str], log) -> None:
    log("$ " + " ".join(shlex.quote(c) for c in command))
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    log(f"  ({time.perf_counter() - started:.0f} s)")


def finished(run_dir: Path) -> bool:
    report = run_dir / "report.json"
    return report.is_file() and json.loads(report.read_text()).get("status") in ("completed", "early_stopping")


def mmcore(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmcore", *args]


def stage_teacher(root: Path, log) -> None:
    if not finished(root / "teacher"):
        run(mmcore("train", "configs/demo.yaml", f"trainer.run_dir={root / 'teacher'}", "trainer.progress=false"), log)


def stage_distill(root: Path, log) -> None:
    teacher = root / "teacher"
    for config, name in (("configs/demo_student.yaml", "student"), ("configs/demo_audio_text.yaml", "audio_text")):
        for mode in ("alone", "distilled"):
            run_dir = root / f"{name}_{mode}"
            if finished(run_dir):
                continue
            distill = "trainer.distill=null" if mode == "alone" else f"trainer.distill.teacher={teacher}"
            run(mmcore("train", config, distill, f"trainer.run_dir={run_dir}", "trainer.progress=false"), log)


def stage_prune(root: Path, amounts: list[float], epochs: int | None, log) -> None:
    for amount in amounts:
        out = root / f"pruned_{amount:g}"
        if finished(out):
            continue
        extra = ["--epochs", str(epochs)] if epochs else []
        run(mmcore("prune", str(root / "teacher"), "--amount", str(amount), "--out", str(out), "--distill", *extra,
                   "trainer.progress=false"), log)


def export_int8(root: Path, name: str, log) -> Path:
    out = root / "exports" / f"{name}-onnx-int8"
    if not (out / "model.int8.onnx").is_file():
        run(mmcore("export", str(root / name), "--format", "onnx", "--int8", "--out", str(out)), log)
    return out


def int8_accuracy(model, artefact, test) -> tuple[float, float, int]:
    """(int8 graph accuracy, eager accuracy) on every test record, both from the raw record."""
    from mmcore.engine.evaluation import predict_output

    samples = [test[i] for i in range(len(test))]
    records = [{k: v for k, v in s["inputs"].items() if v is not None} for s in samples]
    targets = model.head.collate_targets([s["target"] for s in samples]).tolist()
    classes = artefact.head.get("classes")
    index = lambda v: classes.index(str(v)) if classes and str(v) in classes else int(v)  # noqa: E731
    hits_int8 = hits_eager = 0
    for start in range(0, len(records), 64):
        chunk = records[start : start + 64]
        truth = targets[start : start + 64]
        eager = model.head.format_predictions(predict_output(model, chunk))
        graph = [r["prediction"] for r in artefact.predict(chunk)]
        hits_eager += sum(index(p) == t for p, t in zip(eager, truth, strict=True))
        hits_int8 += sum(index(p) == t for p, t in zip(graph, truth, strict=True))
    return hits_int8 / len(records), hits_eager / len(records), len(records)


def measure(root: Path, names: list[str], threads: int, rounds: int, repeats: int,
            int8: dict[str, Path] | None = None, log=print, batch: int = 1) -> dict[str, dict]:
    import torch

    from mmcore.cli import load_run
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.evaluation import to_device
    from mmcore.plugin_manager import get_plugin_manager

    torch.set_num_threads(threads)
    manager = get_plugin_manager()
    models, rows, configs = {}, {}, {}
    sample = None
    for name in names:
        run_dir = root / name
        model, config = load_run(run_dir, manager)
        model.eval()
        configs[name] = config
        if sample is None:
            test = load_datasets(config, manager, splits=("test",))["test"]
            sample = next(test[i] for i in range(len(test)) if all(v is not None for v in test[i]["inputs"].values()))
        inputs, _ = to_device(model.collate([sample] * batch), "cpu")
        models[name] = (model, inputs)
        report = json.loads((run_dir / "report.json").read_text())
        rows[name] = {"accuracy": report["test"]["accuracy"], "parameters": sum(p.numel() for p in model.parameters()),
                      "file_bytes": (run_dir / "best" / "model.safetensors").stat().st_size, "run_dir": str(run_dir)}
    runners = {name: (lambda m=model, i=inputs: m(i)) for name, (model, inputs) in models.items()}
    if int8:
        from mmcore_plugins.deploy import frontend

        for name, folder in int8.items():
            test = load_datasets(configs[name], manager, splits=("test",))["test"]
            artefact = frontend.load(folder, graph="model.int8.onnx", threads=threads)
            accuracy, eager, count = int8_accuracy(models[name][0], artefact, test)
            log(f"{name} int8: test accuracy {100 * accuracy:.2f}% (eager on the same {count} records {100 * eager:.2f}%)")
            record = {k: v for k, v in sample["inputs"].items() if v is not None}
            arrays = artefact.inputs([record] * batch)
            key = f"{name}+int8"
            runners[key] = lambda a=artefact, x=arrays: a.run(x)
            rows[key] = {"accuracy": accuracy, "eager_accuracy_same_records": eager,
                         "parameters": rows[name]["parameters"],
                         "file_bytes": (folder / "model.int8.onnx").stat().st_size, "export": str(folder)}
            # the fp32 graph of the same export, timed alongside: how much of int8's gain is onnxruntime's
            fp32 = frontend.load(folder, graph="model.onnx", threads=threads)
            runners[f"{name}+onnx fp32"] = lambda a=fp32, x=arrays: a.run(x)
            rows[f"{name}+onnx fp32"] = {"accuracy": rows[name]["accuracy"], "parameters": rows[name]["parameters"],
                                         "file_bytes": (folder / "model.onnx").stat().st_size, "export": str(folder),
                                         "note": "accuracy: the eager model's (max |eager - graph| ~1e-6)"}
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for r in range(rounds):
            order = list(runners.items())
            order = order[r % len(order):] + order[: r % len(order)]  # rotate who goes first
            for name, forward in order:
                for _ in range(5):
                    forward()
                spent = []
                clock = time.process_time()
                for _ in range(repeats):
                    start = time.perf_counter()
                    forward()
                    spent.append(time.perf_counter() - start)
                cpu[name].append((time.process_time() - clock) / repeats)
                times[name].append(statistics.median(spent))
    base, base_cpu = times[names[0]], cpu[names[0]]
    for name in runners:
        rows[name]["latency_ms"] = 1000 * statistics.median(times[name])
        ratios = [b / t for b, t in zip(base, times[name], strict=True)]
        rows[name]["speedup_vs_first"] = statistics.median(ratios)
        rows[name]["speedup_rounds_min_max"] = [min(ratios), max(ratios)]
        # CPU time of this process per forward (all its threads): what other processes on a loaded
        # machine inflate far less than wall time
        rows[name]["cpu_ms"] = 1000 * statistics.median(cpu[name])
        rows[name]["cpu_speedup_vs_first"] = statistics.median(b / t for b, t in zip(base_cpu, cpu[name], strict=True))
    return rows


def stage_table(root: Path, amounts: list[float], threads: int, rounds: int, repeats: int, int8: list[str],
                log, names: list[str] | None = None, batch: int = 1) -> dict:
    names = names or ["teacher", "student_distilled", "student_alone", "audio_text_distilled", "audio_text_alone",
                      *(f"pruned_{a:g}" for a in amounts)]
    names = [n for n in names if finished(root / n)]
    exports = {name: export_int8(root, name, log) for name in int8 if name in names}
    load_before = os.getloadavg()
    rows = measure(root, names, threads, rounds, repeats, exports, log, batch)
    load = os.getloadavg()
    summary = {"rows": rows, "batch": batch, "threads": threads, "rounds": rounds, "repeats": repeats, "loadavg_before": load_before,
               "loadavg": load, "int8": sorted(exports)}
    (root / "compress.json").write_text(json.dumps(summary, indent=2))
    teacher = rows.get("teacher", {})
    log(f"\nbatch-{batch} latency with {threads} threads, median of {rounds} interleaved rounds x {repeats} forwards; "
        f"load average {load_before[0]:.1f} before, {load[0]:.1f} after")
    log(f"| model | test accuracy | vs teacher | parameters | weights file | batch-{batch} latency | speed-up (rounds) "
        "| CPU time | CPU speed-up |")
    log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        delta = 100 * (r["accuracy"] - teacher.get("accuracy", r["accuracy"]))
        log(f"| {name} | {100 * r['accuracy']:.1f}% | {delta:+.1f} | {r['parameters']:,} "
            f"({teacher.get('parameters', r['parameters']) / r['parameters']:.2f}x fewer) | {r['file_bytes'] / 1024:.0f} KiB | "
            f"{r['latency_ms']:.2f} ms | {r['speedup_vs_first']:.2f}x ({r['speedup_rounds_min_max'][0]:.2f}-"
            f"{r['speedup_rounds_min_max'][1]:.2f}) | {r['cpu_ms']:.2f} ms | {r['cpu_speedup_vs_first']:.2f}x |")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/compress")
    parser.add_argument("--stages", default="teacher,distill,prune,table")
    parser.add_argument("--amounts", default="0.5", help="pruning amounts, comma-separated")
    parser.add_argument("--prune-epochs", type=int, default=None, help="fine-tuning epochs (default: mmcore prune's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1, help="copies of the sample per forward (default 1)")
    parser.add_argument("--int8", default="teacher,pruned_0.5",
                        help="runs exported with `mmcore export --int8` and measured as int8 rows (comma-separated; "
                             "empty: none)")
    parser.add_argument("--models", default=None,
                        help="the table's runs, comma-separated, the first the reference (default: every finished one)")
    args = parser.parse_args(argv)
    root = (ROOT / args.root).resolve() if not Path(args.root).is_absolute() else Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    amounts = [float(a) for a in args.amounts.split(",") if a.strip()]
    stages = [s.strip() for s in args.stages.split(",")]

    def log(text: str) -> None:
        print(text, flush=True)

    if "teacher" in stages:
        stage_teacher(root, log)
    if "distill" in stages:
        stage_distill(root, log)
    if "prune" in stages:
        stage_prune(root, amounts, args.prune_epochs, log)
    if "table" in stages:
        int8 = [n.strip() for n in args.int8.split(",") if n.strip()]
        models = [n.strip() for n in args.models.split(",")] if args.models else None
        stage_table(root, amounts, args.threads, args.rounds, args.repeats, int8, log, models, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
