"""Distillation and structured pruning on the demo, and the deploying user's table.

    python benchmarks/compress_demo.py [--root runs/compress] [--stages teacher,distill,prune,table]

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
  every model; the median over rounds is reported, ratios are against the teacher's in the same
  round). Written to ``ROOT/compress.json`` and printed as a Markdown table.

int8 rows (``mmcore export --int8``, the deployment issue) are added when that command exists.
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


def measure(root: Path, names: list[str], threads: int, rounds: int, repeats: int) -> dict[str, dict]:
    import torch

    from mmcore.cli import load_run
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.evaluation import to_device
    from mmcore.plugin_manager import get_plugin_manager

    torch.set_num_threads(threads)
    manager = get_plugin_manager()
    models, rows = {}, {}
    sample = None
    for name in names:
        run_dir = root / name
        model, config = load_run(run_dir, manager)
        model.eval()
        if sample is None:
            test = load_datasets(config, manager, splits=("test",))["test"]
            sample = next(test[i] for i in range(len(test)) if all(v is not None for v in test[i]["inputs"].values()))
        inputs, _ = to_device(model.collate([sample]), "cpu")
        models[name] = (model, inputs)
        report = json.loads((run_dir / "report.json").read_text())
        rows[name] = {"accuracy": report["test"]["accuracy"], "parameters": sum(p.numel() for p in model.parameters()),
                      "file_bytes": (run_dir / "best" / "model.safetensors").stat().st_size, "run_dir": str(run_dir)}
    times = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, (model, inputs) in models.items():
                for _ in range(5):
                    model(inputs)
                spent = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model(inputs)
                    spent.append(time.perf_counter() - start)
                times[name].append(statistics.median(spent))
    base = times[names[0]]
    for name in models:
        rows[name]["latency_ms"] = 1000 * statistics.median(times[name])
        rows[name]["speedup_vs_first"] = statistics.median(b / t for b, t in zip(base, times[name], strict=True))
    return rows


def stage_table(root: Path, amounts: list[float], threads: int, rounds: int, repeats: int, log) -> dict:
    names = ["teacher", "student_distilled", "student_alone", "audio_text_distilled", "audio_text_alone",
             *(f"pruned_{a:g}" for a in amounts)]
    names = [n for n in names if finished(root / n)]
    rows = measure(root, names, threads, rounds, repeats)
    load = os.getloadavg()
    summary = {"rows": rows, "threads": threads, "rounds": rounds, "repeats": repeats, "loadavg": load,
               "int8": "not measured: `mmcore export --int8` (the deployment issue) is not installed here"}
    (root / "compress.json").write_text(json.dumps(summary, indent=2))
    teacher = rows.get("teacher", {})
    log(f"\nbatch-1 latency with {threads} threads, median of {rounds} interleaved rounds x {repeats} forwards; "
        f"load average {load[0]:.1f}")
    log("| model | test accuracy | vs teacher | parameters | weights file | batch-1 latency | speed-up |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        delta = 100 * (r["accuracy"] - teacher.get("accuracy", r["accuracy"]))
        log(f"| {name} | {100 * r['accuracy']:.1f}% | {delta:+.1f} | {r['parameters']:,} "
            f"({teacher.get('parameters', r['parameters']) / r['parameters']:.2f}x fewer) | {r['file_bytes'] / 1024:.0f} KiB | "
            f"{r['latency_ms']:.2f} ms | {r['speedup_vs_first']:.2f}x |")
    log(f"int8: {summary['int8']}")
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
        stage_table(root, amounts, args.threads, args.rounds, args.repeats, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
