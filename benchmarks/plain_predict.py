"""The plain script the predict cold-start benchmark compares ``mmcore predict`` with (issue 26):
predictions for a small CSV from a run's saved model, written by hand with PyTorch and safetensors.

    python benchmarks/plain_predict.py RUN_DIR TABLE.csv

What it does, as a user would write it: ``json.load`` of ``best/model.json``, ``mmcore.build_model``
of its spec (the same network, as :mod:`plain_loop` uses), ``safetensors.torch.load_file`` and
``load_state_dict``, the processors' saved state, ``csv.DictReader`` for the rows (the scale table's
columns: image, text, x1, x2), one batch through the model's own ``collate``, softmax, one JSON line a
row. Nothing is validated: no size check of model.json against the weights, no file checks, no
run-directory lock -- what differs from ``mmcore predict`` is exactly the framework around it.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("table", type=Path)
    args = parser.parse_args(argv)

    import torch
    from safetensors.torch import load_file

    import mmcore

    folder = args.run_dir / "best"
    meta = json.loads((folder / "model.json").read_text())
    model = mmcore.build_model(meta["spec"])
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    for slot, state in meta["processors"].items():
        model.processors[slot].load_state_dict(state)
    model.eval()
    with args.table.open(newline="", encoding="utf-8") as fh:
        samples = [{"inputs": {"image": row["image"], "text": row["text"], "numbers": [float(row["x1"]), float(row["x2"])]}}
                   for row in csv.DictReader(fh)]
    classes = meta["spec"]["head"].get("classes")
    with torch.no_grad():
        probabilities = model(model.collate(samples)["inputs"]).logits.softmax(-1)
    for i, p in enumerate(probabilities.tolist()):
        best = max(range(len(p)), key=p.__getitem__)
        print(json.dumps({"row": i, "prediction": classes[best] if classes else best}))


if __name__ == "__main__":
    main()
