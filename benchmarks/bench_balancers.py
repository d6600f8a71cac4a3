"""Modality balancers against plain fusion, over seeds: the demo (audio-dominant) and a balanced control.

    python benchmarks/bench_balancers.py                       # the demo, 3 seeds, every method (hours on 2 cores)
    python benchmarks/bench_balancers.py --suite control       # breast_cancer split into 3 modalities, 10 seeds (minutes)
    python benchmarks/bench_balancers.py --suite demo --methods plain ogm_ge --seeds 0 1 2
    python benchmarks/bench_balancers.py --suite fit --fit-data data/fit_digits   # after benchmarks/fit_data.py

Methods: ``plain`` (the config as it is: joint training of its fusion, ``gated`` in both suites), each registered balancer with its
default options (``trainer.balancer: NAME``; ``NAME:key=value,...`` sets options), and
``unimodal_ensemble`` (the head ``mmcore fit`` uses: one classifier per modality on its own loss,
the config's fusion kept). Every run is the suite's config with ``trainer.seed`` = the seed (model
initialisation and data order; the data set itself is fixed), trained to the end; the test
accuracy is the best-validation checkpoint's. Per method the script prints and writes (``--out``,
Markdown beside it): the mean test accuracy, its standard deviation over seeds, a 95% t-interval,
the mean difference from ``plain`` over the same seeds with its paired 95% t-interval, and the
image (``--probe-slot``) encoder's linear-probe accuracy on the val split (from the run's
``report["diagnostics"]``, :mod:`mmcore.engine.diagnostics`) with its difference from ``plain``.

Results are appended to ``--out`` (JSON) as each run finishes; running again skips the (method,
seed) pairs already there (``--fresh`` starts over), so a long sweep can be stopped and resumed.
``--jobs N`` runs N seeds at once, each in its own process with one intra-op thread (their
results go to ``<out>.seed<N>.json`` and are merged into ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Two-sided 95% Student-t quantiles by degrees of freedom (normal beyond 30).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
       25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    if df in T95:
        return T95[df]
    below = [k for k in T95 if k <= df]
    return T95[max(below)] if df <= 30 else 1.96


def interval(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, sample standard deviation, 95% CI low, high) of ``values`` (t-interval; NaN spread for one value)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = statistics.stdev(values)
    half = t95(n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


SUITES = {
    "demo": {"config": ROOT / "configs" / "demo.yaml", "seeds": [0, 1, 2], "probe_slot": "image"},
    # The balanced control: breast-cancer measurements in three groups of ten (mean, error, worst), as
    # configs/tabular.yaml, whose modalities are informative in similar measure.
    # configs/tabular.yaml, whose modalities are informative in similar measure; with the demo's fusion (gated).
    "control": {"config": ROOT / "configs" / "tabular.yaml", "seeds": list(range(10)), "probe_slot": "worst",
                "overrides": ["model.fusion={name: gated, dim: 64}"]},
}
#: The ``mmcore fit`` benchmark (benchmarks/fit_data.py): ``mmcore fit``'s own config for the table (its
#: ``unimodal_ensemble`` head), against a plain fused model (``gated`` fusion + classification head, fit's
#: choice for multi-modal targets without the ensemble) with and without each balancer. The test split's
#: voices were never heard in training.
SUITES["fit"] = {"config": None, "seeds": [0, 1, 2], "probe_slot": "image", "data": ROOT / "data" / "fit_digits"}
FIT_EPOCHS = 40
METHODS = ["plain", "ogm_ge", "agm", "gblend", "mmpareto", "mla", "unimodal_ensemble"]


def fit_config(data: Path, run_dir: Path) -> dict:
    """``mmcore fit DATA/manifest.csv --target digit``'s config (run once; read back when it exists), its
    epochs fixed to ``FIT_EPOCHS`` (fit sizes them from a measured step time, which a loaded machine
    would change) and its early stopping kept."""
    import subprocess

    from mmcore.engine.config import load_config

    run = run_dir / "fit" / "mmcore-fit"
    if not (run / "config.yaml").is_file():
        # (only its config is used: a short time limit, since the epochs are fixed below anyway)
        command = ["mmcore", "fit", str(data / "manifest.csv"), "--target", "digit", "--run-dir", str(run), "--overwrite",
                   "--time-limit", "2m"]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    config = load_config(run / "config.yaml")  # a run's own config: its data.jsonl is read where the run is
    config["trainer"]["epochs"] = FIT_EPOCHS
    return config


def plain_fused(config: dict) -> dict:
    """The fit suite's plain fused model: ``gated`` fusion (128) + a classification head with the ensemble's
    classes and label smoothing, modality dropout 0.3 (what fit chooses for a fused head)."""
    config = copy.deepcopy(config)
    head = config["model"]["head"]
    config["model"]["fusion"] = {"name": "gated", "dim": 128}
    config["model"]["head"] = {"name": "classification", **{k: head[k] for k in ("classes", "num_classes") if k in head},
                               "label_smoothing": head.get("label_smoothing", 0.1)}
    config["trainer"]["modality_dropout"] = 0.3
    return config


def method_config(base: dict, method: str, seed: int, run_dir: Path, suite: str = "demo") -> dict:
    """The suite's config for one (method, seed)."""
    config = copy.deepcopy(base)
    name, _, raw = method.partition(":")
    if suite == "fit" and name != "unimodal_ensemble":  # the fit config has the ensemble: every other method is fused
        config = plain_fused(config)
    trainer = config.setdefault("trainer", {})
    trainer.update(seed=seed, run_dir=str(run_dir), progress=False, tensorboard=False, plots=False, diagnostics=True)
    if name == "unimodal_ensemble" and suite == "fit":
        pass  # fit's own config as it is
    elif name == "unimodal_ensemble":
        head = config["model"]["head"]
        config["model"]["head"] = {"name": "unimodal_ensemble", **{k: head[k] for k in ("num_classes", "classes") if k in head},
                                   "label_smoothing": head.get("label_smoothing", 0.1)}
    elif name != "plain":
        options = {}
        for item in filter(None, raw.split(",")):
            key, _, value = item.partition("=")
            options[key] = json.loads(value) if value[:1] in "-0123456789[{tfn" else value
        trainer["balancer"] = {"name": name, **options}
    return config


def run_one(config: dict) -> dict:
    from mmcore.engine.trainer import Trainer

    start = time.perf_counter()
    report = Trainer(config, overwrite=True).fit()
    diagnostics = report.get("diagnostics") or {}
    return {"test": report["test"], "best_epoch": report["best_epoch"], "seconds": time.perf_counter() - start,
            "probe": diagnostics.get("probe", {}), "removed": diagnostics.get("removed", {}),
            "alone": diagnostics.get("alone", {}), "full_val": diagnostics.get("full"),
            "grad_share_last": {k: (v[-1] if v else None) for k, v in diagnostics.get("grad_share", {}).items()},
            "diagnostics_seconds": diagnostics.get("seconds")}


def summarise(results: list[dict], methods: list[str], probe_slot: str, metric: str = "accuracy") -> tuple[list[dict], str]:
    """Per-method rows and a Markdown table."""
    by = {(r["method"], r["seed"]): r for r in results}
    base = {seed: r for (m, seed), r in by.items() if m == "plain"}
    rows = []
    for method in methods:
        runs = sorted((r for (m, _), r in by.items() if m == method), key=lambda r: r["seed"])
        if not runs:
            continue
        acc = [100 * r["test"][metric] for r in runs]
        probe = [100 * r["probe"].get(probe_slot) for r in runs if r["probe"].get(probe_slot) is not None]
        paired = [100 * (r["test"][metric] - base[r["seed"]]["test"][metric]) for r in runs if r["seed"] in base]
        paired_probe = [100 * (r["probe"][probe_slot] - base[r["seed"]]["probe"][probe_slot]) for r in runs
                        if r["seed"] in base and r["probe"].get(probe_slot) is not None
                        and base[r["seed"]]["probe"].get(probe_slot) is not None]
        mean, sd, lo, hi = interval(acc)
        row = {"method": method, "seeds": [r["seed"] for r in runs], "accuracy": acc, "mean": mean, "sd": sd, "ci": [lo, hi],
               "probe_mean": statistics.fmean(probe) if probe else None,
               "seconds_mean": statistics.fmean(r["seconds"] for r in runs)}
        if method != "plain" and paired:
            d_mean, d_sd, d_lo, d_hi = interval(paired)
            row.update(diff_mean=d_mean, diff_sd=d_sd, diff_ci=[d_lo, d_hi])
        if method != "plain" and paired_probe:
            row["probe_diff_mean"] = statistics.fmean(paired_probe)
        rows.append(row)

    def fmt(x, spec=".2f"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)

    lines = [f"| method | seeds | test {metric} % (mean) | sd | 95% CI | minus plain (paired) | 95% CI of the difference | "
             f"{probe_slot} probe % | probe minus plain | s per run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {len(r['seeds'])} | {fmt(r['mean'])} | {fmt(r['sd'])} | "
                     f"[{fmt(r['ci'][0])}, {fmt(r['ci'][1])}] | {fmt(r.get('diff_mean'), '+.2f')} | "
                     + (f"[{fmt(r['diff_ci'][0], '+.2f')}, {fmt(r['diff_ci'][1], '+.2f')}]" if "diff_ci" in r else "-")
                     + f" | {fmt(r['probe_mean'], '.1f')} | {fmt(r.get('probe_diff_mean'), '+.1f')} | {fmt(r['seconds_mean'], '.0f')} |")
    return rows, "\n".join(lines)


def run_parallel(args: argparse.Namespace, seeds: list[int], out: Path, results: list[dict]) -> list[dict]:
    """Each seed in a process of its own (``--jobs`` at a time, one intra-op thread each: on a shared or
    small machine two threads per process oversubscribe the cores), then every result merged."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pending, running, parts = list(seeds), [], []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            part = out.with_name(f"{out.stem}.seed{seed}.json")
            if args.fresh:
                part.unlink(missing_ok=True)
            command = [sys.executable, __file__, "--suite", args.suite, "--methods", *args.methods, "--seeds", str(seed),
                       "--out", str(part), "--run-dir", str(args.run_dir), *(["--probe-slot", args.probe_slot] if args.probe_slot else []),
                       *(["--fit-data", str(args.fit_data)] if args.fit_data else []),
                       *args.overrides]
            log = part.with_suffix(".log").open("a")
            running.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
            parts.append(part)
        time.sleep(5)
        for item in list(running):
            if item[0].poll() is not None:
                item[1].close()
                running.remove(item)
                if item[0].returncode:
                    print(f"a worker failed (exit {item[0].returncode}); see {item[1].name}", flush=True)
    merged = {(r["method"], r["seed"]): r for r in results}
    for part in parts:
        if part.exists():
            merged.update({(r["method"], r["seed"]): r for r in json.loads(part.read_text())["runs"]})
    return list(merged.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="demo")
    parser.add_argument("--methods", nargs="+", default=METHODS, help="plain, unimodal_ensemble, or a balancer "
                                                                      "(NAME or NAME:key=value,...)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="trainer.seed values (default: the suite's)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default benchmarks/results/balancers_<suite>.json)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench_balancers"))
    parser.add_argument("--fit-data", type=Path, default=None, help="the fit suite's folder from benchmarks/fit_data.py "
                                                                     "(default data/fit_digits)")
    parser.add_argument("--probe-slot", default=None, help="the encoder whose probe accuracy is tabulated")
    parser.add_argument("--fresh", action="store_true", help="ignore results already in --out")
    parser.add_argument("--summary-only", action="store_true", help="print the table from --out, run nothing")
    parser.add_argument("--merge", type=Path, nargs="+", default=[], help="add the runs of these result files (e.g. "
                                                                          "from separate processes) to --out first")
    parser.add_argument("--jobs", type=int, default=1, help="run the seeds in this many processes at once (each with "
                                                             "one intra-op thread), then merge their results into --out")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides for every run")
    args = parser.parse_args()
    from mmcore.engine.config import load_config

    suite = SUITES[args.suite]
    seeds = args.seeds or suite["seeds"]
    probe_slot = args.probe_slot or suite["probe_slot"]
    out = args.out or ROOT / "benchmarks" / "results" / f"balancers_{args.suite}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = [] if args.fresh or not out.exists() else json.loads(out.read_text())["runs"]
    if args.suite == "fit":
        from mmcore.engine.config import apply_overrides

        base = apply_overrides(fit_config(args.fit_data or suite["data"], args.run_dir), args.overrides)
    else:
        base = load_config(suite["config"], [*suite.get("overrides", []), *args.overrides])
    if args.merge:
        merged = {(r["method"], r["seed"]): r for r in results}
        for part in args.merge:
            merged.update({(r["method"], r["seed"]): r for r in json.loads(part.read_text())["runs"]})
        results = list(merged.values())
    done = {(r["method"], r["seed"]) for r in results}
    if args.jobs > 1 and not args.summary_only:
        results = run_parallel(args, seeds, out, results)
    elif not args.summary_only:
        for seed in seeds:  # seeds outermost: an interrupted sweep has every method at the same seeds
            for method in args.methods:
                if (method, seed) in done:
                    continue
                run_dir = args.run_dir / args.suite / method.replace(":", "_").replace(",", "_") / f"seed{seed}"
                print(f"[{time.strftime('%H:%M:%S')}] {args.suite} {method} seed {seed} ...", flush=True)
                result = run_one(method_config(base, method, seed, run_dir, args.suite))
                result.update(method=method, seed=seed)
                results.append(result)
                print(f"    test accuracy {100 * result['test']['accuracy']:.2f}%, {probe_slot} probe "
                      f"{100 * (result['probe'].get(probe_slot) or math.nan):.1f}%, {result['seconds']:.0f} s", flush=True)
                out.write_text(json.dumps({"suite": args.suite, "config": str(suite["config"]), "overrides": args.overrides,
                                           "runs": results}, indent=1))
    methods = list(dict.fromkeys([*args.methods, *(r["method"] for r in results)]))
    rows, table = summarise(results, methods, probe_slot)
    print(table)
    out.with_suffix(".md").write_text(table + "\n")
    out.write_text(json.dumps({"suite": args.suite, "config": str(suite["config"]), "overrides": args.overrides,
                               "runs": results, "summary": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
