"""`mmcore fit` against a scikit-learn baseline on the fit benchmark data set (benchmarks/fit_data.py).

    python benchmarks/fit_data.py data/fit_digits            # once (needs flite)
    python benchmarks/bench_fit.py data/fit_digits           # baseline + `mmcore fit` with no options

Baseline: logistic regression on an early fusion of every column of the same rows: the 64 pixels,
log-mel statistics of the audio (mean and standard deviation of 40 mel bands over time, 16 kHz),
the hint as a bag of words, the ink number and the scanner one-hot, plus a "missing" indicator
per modality (missing pixels / statistics are zeros); standardised; C chosen on the val split
from {0.01, 0.1, 1, 10}, then refitted on train + val. Then ``mmcore fit DATA/manifest.csv
--target digit`` runs with no other option, and both test accuracies and the fit's wall time
(data generation excluded) are printed, and written to ``--out`` as JSON.

Issue 27's cases (``--case``; DATA is then a folder written by ``benchmarks/fit_tables.py``, its
``table.csv`` with a split column): ``digits32`` (the digits upscaled to 32 px, target ``digit``),
``products`` (Fashion-MNIST product photos with a noisy description, price, brand, date and id,
target ``category``) and ``generated`` (10,000 / 100,000 generated rows, target ``shape``). Each runs
scikit-learn's best of logistic regression and gradient boosting on the same table
(``benchmarks/fit_baseline.py``) and ``mmcore fit --time-limit LIMIT``, and prints accuracy,
baseline, the margin (target: >= 3 points), the limit and the wall time (target: <= 1.1x the
limit) and the machine's 1-minute load before and after; ``--hog N`` keeps N busy-looping
processes running during the fit (a busy machine), e.g.::

    python benchmarks/fit_tables.py products /work/fit_data/products
    python benchmarks/bench_fit.py /work/fit_data/products --case products --time-limit 10m --out products.json
    python benchmarks/bench_fit.py /work/fit_data/products --case products --time-limit 10m --hog 2 --out products_hog.json

The other checks run ``mmcore fit`` unchanged on tables made from the same rows
(``--task regression``: target ``ink``; ``--task multilabel``: target ``tags`` = parity|size;
``--task pretrained``: 64 px RGB image + hint, where the pretrained encoders are chosen); any
other option is passed on to ``mmcore fit`` (e.g. ``--time-limit 4m``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def load_rows(data: Path) -> list[dict]:
    from mmcore_plugins.io.tables import read_table

    return read_table(data / "manifest.csv")


def _logmel_stats(path: Path, processor) -> np.ndarray:
    mel = processor(str(path))  # [n_mels, T], standardised per utterance
    return np.concatenate([mel.mean(1).numpy(), mel.std(1).numpy()])


def features(rows: list[dict], data: Path, vectorizer) -> np.ndarray:
    from PIL import Image

    from mmcore_plugins.encoders.audio import LogMelProcessor

    processor = LogMelProcessor(sample_rate=16000, n_mels=40)
    scanners = sorted({r["scanner"] for r in rows})
    out = []
    for r in rows:
        if r["image"]:
            with Image.open(data / r["image"]) as img:
                pixels = np.asarray(img.convert("L"), dtype=np.float32).ravel() / 255.0
            image = np.concatenate([pixels, [1.0]])
        else:
            image = np.zeros(65)
        audio = np.concatenate([_logmel_stats(data / r["audio"], processor), [1.0]]) if r["audio"] else np.zeros(81)
        hint = vectorizer.transform([r["hint"] or ""]).toarray()[0]
        number = [float(r["ink"])]
        scanner = [float(r["scanner"] == s) for s in scanners]
        out.append(np.concatenate([image, audio, hint, [float(bool(r["hint"]))], number, scanner]))
    return np.asarray(out, dtype=np.float64)


def baseline(data: Path) -> dict:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = load_rows(data)
    by = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    vectorizer = CountVectorizer(binary=True).fit([r["hint"] for r in by["train"] if r["hint"]])
    x = {s: features(by[s], data, vectorizer) for s in by}
    y = {s: np.array([int(r["digit"]) for r in by[s]]) for s in by}
    scores = {}
    for c in (0.01, 0.1, 1.0, 10.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(x["train"], y["train"])
        scores[c] = float((model.predict(x["val"]) == y["val"]).mean())
    best_c = max(scores, key=scores.get)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=best_c, max_iter=3000))
    model.fit(np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]]))
    return {"C": best_c, "val_accuracy_by_C": scores, "test_accuracy": float((model.predict(x["test"]) == y["test"]).mean()),
            "test_rows": len(y["test"])}


def run_fit(table: Path, target: str, run_dir: Path, extra: list[str]) -> dict:
    command = ["mmcore", "fit", str(table), "--target", target, "--run-dir", str(run_dir), "--overwrite", *extra]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    summary = json.loads((run_dir / "fit_summary.json").read_text())
    return {"command": " ".join(command), "wall_seconds": seconds, "test": summary.get("test", {}), "summary": summary}


def derived_table(data: Path, task: str) -> tuple[Path, str]:
    """The other checks' tables, made from the same rows (written into DATA/derived/):

    * ``regression``: target ``ink`` (a numeric column), from every other column;
    * ``multilabel``: target ``tags`` = the digit's parity and size (``even|small``, ``odd|large``, ...),
      the ``digit`` column dropped;
    * ``pretrained``: image (the digit upscaled to 64 px, RGB) + hint only, target ``digit`` -- the
      case where ``fit`` picks the pretrained EfficientNet-Lite0 and MiniLM encoders.
    """
    import csv

    rows = load_rows(data)
    out = data / "derived"
    out.mkdir(exist_ok=True)
    if task == "regression":
        return data / "manifest.csv", "ink"
    if task == "multilabel":
        table = []
        for r in rows:
            digit = int(r.pop("digit"))
            r["tags"] = f"{'even' if digit % 2 == 0 else 'odd'}|{'small' if digit < 5 else 'large'}"
            r["image"] = f"../{r['image']}" if r["image"] else ""
            r["audio"] = f"../{r['audio']}" if r["audio"] else ""
            table.append(r)
        target = "tags"
    elif task == "pretrained":
        from PIL import Image

        (out / "images64").mkdir(exist_ok=True)
        table = []
        for r in rows:
            image = ""
            if r["image"]:
                with Image.open(data / r["image"]) as img:
                    big = img.convert("RGB").resize((64, 64), Image.BILINEAR)
                image = f"images64/{Path(r['image']).name}"
                big.save(out / image)
            table.append({"image": image, "hint": r["hint"], "digit": r["digit"], "split": r["split"]})
        target = "digit"
    else:
        raise SystemExit(f"unknown task {task!r}")
    path = out / f"{task}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return path, target


CASES = {"digits32": "digit", "products": "category", "generated": "shape"}


def _hogs(n: int) -> list:
    """``n`` processes that spin on a CPU each (niced like the fit: a machine shared with other work)."""
    import subprocess as sp

    return [sp.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_case(data: Path, case: str, run_dir: Path, fit_args: list[str], hog: int, baseline_file: Path | None = None) -> dict:
    import os

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fit_baseline import baseline as sklearn_best

    table, target = data / "table.csv", CASES[case]
    start = time.perf_counter()
    if baseline_file is not None and baseline_file.is_file():  # computed before on the same table
        base = json.loads(baseline_file.read_text())
    else:
        base = sklearn_best(table, target)
        if baseline_file is not None:
            baseline_file.write_text(json.dumps(base, indent=2))
    print(f"baseline ({case}): logistic regression {100 * base['logistic_regression']:.1f}%, gradient boosting "
          f"{100 * base['gradient_boosting']:.1f}% ({time.perf_counter() - start:.0f} s)", flush=True)
    limit = next((fit_args[i + 1] for i, a in enumerate(fit_args[:-1]) if a == "--time-limit"), "10m")
    hogs = _hogs(hog)
    try:
        load_before = os.getloadavg()[0]
        fit = run_fit(table, target, run_dir, fit_args)
        load_after = os.getloadavg()[0]
    finally:
        for h in hogs:
            h.kill()
    from mmcore_plugins.autofit.choose import parse_duration

    accuracy, seconds = fit["test"].get("accuracy"), fit["wall_seconds"]
    result = {"case": case, "table": str(table), "limit_s": parse_duration(limit), "hog_processes": hog,
              "load_1min_before": load_before, "load_1min_after": load_after, "cpus": os.cpu_count(),
              "baseline": base, "fit": fit, "accuracy": accuracy, "baseline_best": base["best"],
              "margin_points": None if accuracy is None else 100 * (accuracy - base["best"]),
              "wall_over_limit": seconds / parse_duration(limit)}
    print(f"mmcore fit ({case}): test accuracy {100 * accuracy:.1f}% vs scikit-learn's best {100 * base['best']:.1f}% "
          f"({result['margin_points']:+.1f} points; target >= +3); wall {seconds:.0f} s of a {limit} limit "
          f"({result['wall_over_limit']:.2f}x; target <= 1.1x); load {load_before:.1f} -> {load_after:.1f}"
          + (f" with {hog} CPU hogs" if hog else ""), flush=True)
    summary = fit["summary"]
    grown = summary.get("epochs_grown") or []
    print(f"epochs: planned {summary.get('epochs_planned')}, grown to {summary.get('epochs_final')} "
          f"(after epochs {', '.join(str(g['after_epoch']) for g in grown) or 'none'}), run {summary.get('epochs_run')}, "
          f"best {summary.get('best_epoch')}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="folder written by benchmarks/fit_data.py")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench_fit"))
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    parser.add_argument("--skip-fit", action="store_true", help="only the baseline")
    parser.add_argument("--task", default="digit", choices=["digit", "regression", "multilabel", "pretrained"],
                        help="digit: the main benchmark (with the baseline); the others: the other checks")
    parser.add_argument("--case", choices=sorted(CASES), help="issue 27's cases: DATA from benchmarks/fit_tables.py")
    parser.add_argument("--hog", type=int, default=0, help="busy-looping processes during the fit (--case only)")
    parser.add_argument("--baseline", type=Path, help="--case: the baseline's JSON (read if it exists, else written)")
    args, fit_args = parser.parse_known_args()  # anything else goes to `mmcore fit` (e.g. --time-limit 4m)
    args.fit_args = [a for a in fit_args if a != "--"]
    if args.case:
        result = run_case(args.data, args.case, args.run_dir, args.fit_args, args.hog, args.baseline)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))
        return
    if args.task != "digit":
        table, target = derived_table(args.data, args.task)
        fit = run_fit(table, target, args.run_dir, args.fit_args)
        print(f"mmcore fit ({args.task}, target {target}): test {json.dumps(fit['test'])}, wall time "
              f"{fit['wall_seconds']:.0f} s", flush=True)
        if args.out:
            args.out.write_text(json.dumps({"task": args.task, "fit": fit}, indent=2))
        return
    start = time.perf_counter()
    base = baseline(args.data)
    print(f"baseline (logistic regression, C={base['C']}): test accuracy {100 * base['test_accuracy']:.1f}% "
          f"on {base['test_rows']} rows ({time.perf_counter() - start:.0f} s)", flush=True)
    result = {"baseline": base}
    if not args.skip_fit:
        fit = run_fit(args.data / "manifest.csv", "digit", args.run_dir, args.fit_args)
        accuracy = fit["test"].get("accuracy")
        result["fit"] = fit
        print(f"mmcore fit: test accuracy {100 * accuracy:.1f}%  ({100 * (accuracy - base['test_accuracy']):+.1f} points "
              f"over the baseline), wall time {fit['wall_seconds']:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
