"""Features into scikit-learn: an SVM (``SVC``, RBF kernel) on `mmcore embed`'s fused vectors of a
trained classification run, against the run's own end-to-end head on the same test split.

    mmcore train configs/demo.yaml                 # or any classification config
    python benchmarks/embed_svm.py runs/demo       # embeds train/val/test, fits the SVM, prints both accuracies

It does what a user would do by hand (README): ``mmcore embed RUN --split S --out S.parquet`` for
each split, then scikit-learn on the ``fused`` column. The SVM's ``C`` is chosen on the
validation split from 0.1, 1, 10, 100 (features standardised on the training split); the head's
accuracy is the run's ``report.json`` test accuracy (its best-validation checkpoint, the one embedded).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained classification run")
    parser.add_argument("--vector", default="fused", help="which embedded vector to classify (default: fused)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from mmcore_plugins.retrieval.embedding import read_embeddings

    data = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("train", "val", "test"):
            out = Path(tmp) / f"{split}.parquet"
            subprocess.run([sys.executable, "-m", "mmcore", "embed", args.run, "--split", split, "--out", str(out)],
                           check=True, stdout=subprocess.DEVNULL)
            vectors, _, targets = read_embeddings(out)
            data[split] = (vectors[args.vector], np.asarray(targets))
    started = time.perf_counter()
    best = None
    for c in (0.1, 1.0, 10.0, 100.0):
        svm = make_pipeline(StandardScaler(), SVC(C=c, kernel="rbf")).fit(*data["train"])
        val = svm.score(*data["val"])
        if best is None or val > best[0]:
            best = (val, c, svm)
    val, c, svm = best
    svm_test = svm.score(*data["test"])
    report = json.loads((Path(args.run) / "report.json").read_text())
    head_test = report["test"]["accuracy"]
    result = {"svm_test_accuracy": svm_test, "svm_C": c, "svm_val_accuracy": val, "head_test_accuracy": head_test,
              "vector": args.vector, "dim": int(data["train"][0].shape[1]), "train": len(data["train"][1]),
              "test": len(data["test"][1]), "svm_seconds": time.perf_counter() - started}
    print(f"{args.run}: test accuracy, {result['test']} samples")
    print(f"  end-to-end head            {100 * head_test:5.1f}%")
    print(f"  SVC (RBF, C={c:g}) on {args.vector} [{result['dim']}-d]  {100 * svm_test:5.1f}%   (val {100 * val:.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
