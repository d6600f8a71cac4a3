"""``mmcore tune`` on the demo: 20 trials, killed with SIGKILL mid-study and resumed.

    python benchmarks/tune_demo.py [--out runs/tune_demo] [--trials 20] [--kill-at 3] [--no-kill]

1. ``mmcore tune configs/demo.yaml --space configs/demo_space.yaml --trials 20 --out OUT`` starts;
   while trial ``--kill-at`` is training (it has a checkpoint, no report yet) the process is killed
   with SIGKILL;
2. the same command runs again and finishes the study;
3. checks and numbers: the study holds trials 0..19 once each (Optuna's storage and the trial
   folders), every pruned trial stopped at the end of the epoch its pruner judged it dominated
   (``epochs_run`` = ``pruned_after_epoch``; the median rule of Optuna's MedianPruner is
   recomputed from the stored intermediate values and must agree), and the best trial's test
   accuracy against the shipped demo config's: trial 0 (the config as given, trained in the same
   study), a run of ``configs/demo.yaml`` (``--baseline``, e.g. benchmarks/compress_demo.py's
   teacher) or else the README's 95.1%. Wall time of both invocations.

Results go to ``OUT/benchmark.json`` and are printed. Re-running continues a finished study (no
new trials) and re-checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: README, "Demo results": the shipped config's test accuracy (gated fusion, seed 0).
README_DEMO_ACCURACY = 0.951


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/tune_demo")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kill-at", type=int, default=3, help="kill the study while this trial trains")
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument("--baseline", help="a finished run of configs/demo.yaml (its test accuracy is the bar)")
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    command = [sys.executable, "-m", "mmcore", "tune", "configs/demo.yaml", "--space", "configs/demo_space.yaml",
               "--trials", str(args.trials), "--out", str(out)]
    print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
    wall = 0.0
    killed = False
    victim = out / f"trial-{args.kill_at:03d}"
    # a study resumed from an earlier session is killed too, as long as the victim trial has not run yet
    if not args.no_kill and not (victim / "report.json").exists():
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT)
        while process.poll() is None:
            if (victim / "last" / "model.safetensors").is_file() and not (victim / "report.json").exists():
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed = True
                break
            time.sleep(0.2)
        wall += time.perf_counter() - started
        print(f"killed with SIGKILL while trial {args.kill_at} trained ({wall:.0f} s in)" if killed
              else "the study ended before it could be killed", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    wall += time.perf_counter() - started
    report = check(out, args.trials, args.baseline)
    report.update(wall_seconds=wall, killed=killed, kill_at=args.kill_at if killed else None, loadavg=os.getloadavg(),
                  command=" ".join(command[1:]))
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "pruned"}, indent=2))
    return 0


def check(out: Path, trials: int, baseline_run: str | None) -> dict:
    import optuna

    study = optuna.load_study(study_name="mmcore-tune", storage=f"sqlite:///{out / 'study.db'}")
    numbers = [t.number for t in study.trials]
    folders = sorted(p.name for p in out.glob("trial-*") if p.is_dir())
    summary = json.loads((out / "study.json").read_text())
    by_number = {t["number"]: t for t in summary["trials"]}
    pruned = []
    for t in study.trials:
        if t.state.name != "PRUNED":
            continue
        info = by_number[t.number]
        # Optuna's median rule, recomputed (PercentilePruner at 50, maximising): at the step it was
        # pruned, the trial's best value so far is below the median of the earlier complete trials'
        # best values up to that step.
        step = max(t.intermediate_values)

        def best_until(trial, step=step):
            return max(v for s, v in trial.intermediate_values.items() if s <= step)

        earlier = [best_until(o) for o in study.trials
                   if o.number < t.number and o.state.name == "COMPLETE" and step in o.intermediate_values]
        pruned.append({"trial": t.number, "pruned_after_epoch": info.get("pruned_after_epoch"), "epochs_run": info.get("epochs_run"),
                       "best_value": best_until(t), "median_of_earlier": statistics.median(earlier) if earlier else None})
    best = by_number[summary["best"][0]]
    baseline = next((t for t in summary["trials"] if t.get("baseline")), None)
    bar = README_DEMO_ACCURACY
    bar_source = "README (configs/demo.yaml, seed 0)"
    if baseline_run:  # a finished run of configs/demo.yaml given with --baseline
        bar = json.loads((Path(baseline_run) / "report.json").read_text())["test"]["accuracy"]
        bar_source = str(baseline_run)
    elif baseline and baseline.get("test"):  # trial 0: the shipped config trained inside the study
        bar = baseline["test"]["accuracy"]
        bar_source = f"trial {baseline['number']} (configs/demo.yaml as shipped, trained in the study)"
    states = [t.state.name for t in study.trials]
    return {
        "trials": len(numbers), "numbers_once_each": numbers == list(range(trials)),
        "trial_folders_once_each": folders == [f"trial-{n:03d}" for n in range(trials)],
        "states": {s: states.count(s) for s in sorted(set(states))},
        "pruned_stopped_at_the_judged_epoch": all(p["pruned_after_epoch"] == p["epochs_run"] for p in pruned),
        "pruned_below_the_median": all(p["median_of_earlier"] is not None and p["best_value"] < p["median_of_earlier"] for p in pruned),
        "pruned": pruned,
        "best_trial": best["number"], "best_params": best["params"], "best_val_accuracy": best["values"][0],
        "best_test_accuracy": best["test"]["accuracy"], "bar_test_accuracy": bar, "bar": bar_source,
        "best_minus_bar_points": 100 * (best["test"]["accuracy"] - bar),
        "baseline_trial_test_accuracy": baseline["test"]["accuracy"] if baseline and baseline.get("test") else None,
        "best_minus_baseline_trial_points": 100 * (best["test"]["accuracy"] - baseline["test"]["accuracy"])
        if baseline and baseline.get("test") else None,
        "test_accuracy_of_every_trial": {t["number"]: t.get("test", {}).get("accuracy") for t in summary["trials"]},
    }


if __name__ == "__main__":
    raise SystemExit(main())
