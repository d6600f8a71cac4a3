"""scikit-learn's best on a table of files: the bar `mmcore fit` must clear by 3 points (issue 27).

    python benchmarks/fit_baseline.py TABLE.csv --target COL [--out baseline.json]

The table has a ``split`` column (train / val / test). Each column's kind comes from fit's own
column inference (so both sides read the same columns the same way; ignored columns -- ids -- are
left out of both), then every column becomes features:

* image: grey pixels at the image's own size, at most 32 x 32 (bilinear), in [0, 1];
* audio: mean and standard deviation of 40 log-mel bands (16 kHz) over time;
* text: a binary bag of words (scikit-learn's CountVectorizer, at most 2000 words seen twice in train);
* numeric: the number; date: days since the earliest, year, month, weekday, hour;
* categorical: one-hot of the 50 most frequent training values;
* an empty or unreadable cell: zeros (numbers: the training median) and a per-column "missing" flag.

Models: ``StandardScaler + LogisticRegression`` (C chosen on the val split from {0.01, 0.1, 1, 10})
and ``HistGradientBoostingClassifier`` (scikit-learn's gradient boosting for large tables; defaults,
early stopping on its own 10% when over 10,000 rows), each refitted on train + val and scored on
test; the better is the bar. Regression targets: Ridge (alpha on val) and HistGradientBoostingRegressor, by MSE.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _columns(rows: list[dict], target: str, base: Path) -> list[Any]:
    from mmcore_plugins.autofit.infer import infer_columns

    infos = infer_columns(rows, target=target, base=base, overrides={"split": "ignore"} if "split" in rows[0] else None)
    return [i for i in infos if i.role == "input"]


def _image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L")
        side = min(32, max(img.size))
        if img.size != (side, side):
            img = img.resize((side, side), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32).ravel() / 255.0


class Featurizer:
    """Fitted on the training rows; ``transform(rows) -> [N, F]`` float32."""

    def __init__(self, infos: list[Any], base: Path) -> None:
        self.infos, self.base = infos, base

    def fit(self, rows: list[dict]) -> Featurizer:
        from sklearn.feature_extraction.text import CountVectorizer

        from mmcore_plugins.autofit.infer import as_number

        self.state: dict[str, Any] = {}
        for info in self.infos:
            values = [r.get(info.name) for r in rows]
            if info.kind == "numeric":
                known = [x for x in (as_number(v) for v in values) if x is not None]
                self.state[info.name] = float(np.median(known)) if known else 0.0
            elif info.kind == "categorical":
                counts: dict[str, int] = {}
                for v in values:
                    if v not in (None, ""):
                        counts[str(v)] = counts.get(str(v), 0) + 1
                self.state[info.name] = sorted(counts, key=lambda k: -counts[k])[:50]
            elif info.kind == "text":
                texts = [str(v) for v in values if v not in (None, "")]
                self.state[info.name] = CountVectorizer(binary=True, max_features=2000, min_df=2).fit(texts or ["empty"])
            elif info.kind == "image":
                first = next(self._path(v) for v in values if self._path(v) is not None)
                self.state[info.name] = _image(first).size
        return self

    def _path(self, value: Any) -> Path | None:
        if not isinstance(value, str) or not value.strip():
            return None
        path = self.base / value
        return path if path.is_file() else None

    def transform(self, rows: list[dict]) -> np.ndarray:
        from mmcore_plugins.autofit import dates
        from mmcore_plugins.autofit.infer import as_number

        blocks = []
        for info in self.infos:
            values = [r.get(info.name) for r in rows]
            if info.kind == "numeric":
                x = [as_number(v) for v in values]
                blocks.append(np.array([[self.state[info.name] if v is None else v, v is None] for v in x], dtype=np.float32))
            elif info.kind == "categorical":
                cats = self.state[info.name]
                blocks.append(np.array([[str(v) == c for c in cats] for v in values], dtype=np.float32))
            elif info.kind == "date":
                out = []
                for v in values:
                    p = dates.date_parts(v, info.details["format"], origin=info.details["origin"], with_time=True)
                    out.append([0, 0, 0, 0, 0, 1] if p is None else
                               [p.get("days", 0), p.get("year", 0), float(p.get("month", 0)), float(p.get("weekday", 0)), p.get("hour", 0), 0])
                blocks.append(np.array(out, dtype=np.float32))
            elif info.kind == "text":
                texts = ["" if v in (None, "") else str(v) for v in values]
                bag = self.state[info.name].transform(texts).toarray().astype(np.float32)
                blocks.append(np.concatenate([bag, np.array([[t == ""] for t in texts], dtype=np.float32)], axis=1))
            elif info.kind == "image":
                size = self.state[info.name]
                out = []
                for v in values:
                    path = self._path(v)
                    out.append(np.concatenate([_image(path), [0.0]]) if path is not None else np.concatenate([np.zeros(size), [1.0]]))
                blocks.append(np.asarray(out, dtype=np.float32))
            elif info.kind == "audio":
                from mmcore_plugins.encoders.audio import LogMelProcessor

                processor = LogMelProcessor(sample_rate=16000, n_mels=40)
                out = []
                for v in values:
                    path = self._path(v)
                    if path is None:
                        out.append(np.concatenate([np.zeros(80), [1.0]]))
                    else:
                        mel = processor(str(path))
                        out.append(np.concatenate([mel.mean(1).numpy(), mel.std(1).numpy(), [0.0]]))
                blocks.append(np.asarray(out, dtype=np.float32))
        return np.concatenate(blocks, axis=1)


def baseline(table: Path, target: str) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mmcore_plugins.autofit.infer import as_number, infer_target
    from mmcore_plugins.io.tables import read_table

    start = time.perf_counter()
    rows = [r for r in read_table(table) if r.get(target) not in (None, "")]
    base = table.resolve().parent
    by = {s: [r for r in rows if str(r.get("split")).strip().lower() == s] for s in ("train", "val", "test")}
    infos = _columns(rows, target, base)
    featurizer = Featurizer(infos, base).fit(by["train"])
    x = {s: featurizer.transform(by[s]) for s in by}
    task = infer_target(target, [r[target] for r in rows]).kind
    if task == "regression":
        y = {s: np.array([as_number(r[target]) for r in by[s]]) for s in by}
    else:
        y = {s: np.array([str(r[target]).strip() for r in by[s]]) for s in by}
    both_x, both_y = np.concatenate([x["train"], x["val"]]), np.concatenate([y["train"], y["val"]])
    out: dict[str, Any] = {"table": str(table), "target": target, "task": task, "features": int(x["train"].shape[1]),
                           "rows": {s: len(by[s]) for s in by}, "columns": {i.name: i.kind for i in infos}}
    if task == "regression":
        scores = {}
        for alpha in (0.1, 1.0, 10.0, 100.0):
            model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x["train"], y["train"])
            scores[alpha] = float(np.mean((model.predict(x["val"]) - y["val"]) ** 2))
        alpha = min(scores, key=scores.get)
        ridge = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(both_x, both_y)
        hgb = HistGradientBoostingRegressor(random_state=0).fit(both_x, both_y)
        out.update(ridge_alpha=alpha, ridge_mse=float(np.mean((ridge.predict(x["test"]) - y["test"]) ** 2)),
                   gradient_boosting_mse=float(np.mean((hgb.predict(x["test"]) - y["test"]) ** 2)))
        out["best_mse"] = min(out["ridge_mse"], out["gradient_boosting_mse"])
    else:
        scores = {}
        for c in (0.01, 0.1, 1.0, 10.0):
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(x["train"], y["train"])
            scores[c] = float(np.mean(model.predict(x["val"]) == y["val"]))
        c = max(scores, key=scores.get)
        lr = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(both_x, both_y)
        hgb = HistGradientBoostingClassifier(random_state=0).fit(both_x, both_y)
        out.update(logistic_regression_C=c, logistic_regression_val_by_C=scores,
                   logistic_regression=float(np.mean(lr.predict(x["test"]) == y["test"])),
                   gradient_boosting=float(np.mean(hgb.predict(x["test"]) == y["test"])))
        out["best"] = max(out["logistic_regression"], out["gradient_boosting"])
    out["seconds"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("--target", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = baseline(args.table, args.target)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
