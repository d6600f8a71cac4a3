"""`mmcore fit` on tabular-only tables against scikit-learn's best of logistic regression and gradient boosting.

    python benchmarks/bench_fit_tabular.py                      # wine and breast_cancer, seed 0
    python benchmarks/bench_fit_tabular.py --seeds 0 1 2        # more splits

Each data set (scikit-learn's bundled wine and breast-cancer tables) is split 70/30, stratified,
by the seed. Baselines: ``StandardScaler + LogisticRegression`` (C chosen by 5-fold
cross-validation on the training rows from {0.01, 0.1, 1, 10}) and ``GradientBoostingClassifier``
(defaults), both fitted on the training rows; the better test accuracy is the bar. ``mmcore.fit``
gets the same training rows as a DataFrame (it carves its own val split) with no options, and
is evaluated on the same test rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run(name: str, seed: int, run_root: Path) -> dict:
    import numpy as np
    from sklearn import datasets
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import mmcore

    loader = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[name]
    bunch = loader(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label"})
    frame["label"] = [bunch.target_names[i] for i in frame["label"]]
    train, test = train_test_split(frame, test_size=0.3, stratify=frame["label"], random_state=seed)
    x_train, x_test = train.drop(columns="label").to_numpy(), test.drop(columns="label").to_numpy()
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()
    lr = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
                      {"logisticregression__C": [0.01, 0.1, 1.0, 10.0]}, cv=5).fit(x_train, y_train)
    gb = GradientBoostingClassifier(random_state=seed).fit(x_train, y_train)
    scores = {"logistic_regression": float(np.mean(lr.predict(x_test) == y_test)),
              "gradient_boosting": float(np.mean(gb.predict(x_test) == y_test))}
    start = time.perf_counter()
    predictor = mmcore.fit(train.reset_index(drop=True), target="label", run_dir=run_root / f"{name}-{seed}",
                           overwrite=True, verbose=False)
    seconds = time.perf_counter() - start
    fit_accuracy = float(np.mean(np.asarray(predictor.predict(test.reset_index(drop=True))) == y_test))
    best = max(scores.values())
    return {"data": name, "seed": seed, "rows": {"train": len(train), "test": len(test)}, **scores,
            "fit": fit_accuracy, "fit_minus_best": fit_accuracy - best, "fit_seconds": seconds,
            "encoders": {s: e["name"] for s, e in predictor.config["model"]["encoders"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["wine", "breast_cancer"], choices=["wine", "breast_cancer"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--run-root", type=Path, default=Path("runs/bench_fit_tabular"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = []
    for name in args.data:
        for seed in args.seeds:
            r = run(name, seed, args.run_root)
            results.append(r)
            print(f"{name:<14} seed {seed}: logistic regression {100 * r['logistic_regression']:.1f}%, gradient boosting "
                  f"{100 * r['gradient_boosting']:.1f}%, mmcore fit {100 * r['fit']:.1f}% "
                  f"({100 * r['fit_minus_best']:+.1f} points vs the best; {r['rows']['test']} test rows; "
                  f"fit {r['fit_seconds']:.0f} s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
