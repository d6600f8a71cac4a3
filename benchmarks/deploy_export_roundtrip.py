"""Export round trip: every built-in fusion (and, once, every built-in encoder): train -> export -> same predictions.

For each fusion, one model holds three small encoders -- image_cnn, text_transformer, tabular_mlp
(image, text, numbers; audio and its log-mel front end come with ``--encoders all``) -- with that fusion and a 10-class classification head; its processors are fitted on example records and
it is trained for ``--steps`` (default 20) Adam steps on example records with random labels (the weights of a
run, not of an initialisation). It is exported the way ``mmcore export`` does (the same
ExportModule: front-end steps in the graph, presence flags as inputs) to torch.export (pt2), ONNX
and int8 ONNX, then run on batches of 1, 37 and 256 records whose modalities are each missing at
random (30%; every record keeps one), fed through the export's front end. Compared with the
trained eager module (PyTorch's transformer fast path off, the path the exporters trace): pt2 must
be identical, ONNX (onnxruntime, CPU) within 1e-5 on the probabilities and on the logits; int8 is
reported (argmax agreement with eager, largest probability difference) -- dynamic int8 changes the
numbers by design; its accuracy target is measured on the demo by deploy_speed.py.

Every built-in encoder is covered once more by ``--encoders all`` with one fusion (one model holding
all 11 encoders; the slow part: ~15 min here under load). A fusion sees encoders only through their
Features, so the 22 x 11 cross product (the old default, ~15 min per fusion) adds exports, not cases.

    python benchmarks/deploy_export_roundtrip.py --out benchmarks/deploy_export_roundtrip.jsonl   # 22 fusions (~3 min a fusion at load 13-18)
    python benchmarks/deploy_export_roundtrip.py --fusions concat --encoders all --out /tmp/rt_encoders.jsonl
    python benchmarks/deploy_export_roundtrip.py --fusions concat,mcb --steps 0 --out /tmp/rt.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

BATCHES = (1, 37, 256)
TOLERANCE = 1e-5
#: Small encoders of three kinds of input (image, numbers, text): the fusions' round trip, cheap enough for all 22.
CHEAP_ENCODERS = ("image_cnn", "tabular_mlp", "text_transformer")


def build(registry, fusion: str, names: list[str], seed: int = 0):
    from mmcore.model import build_model

    encoders = {}
    for info in (registry.get("encoder", n) for n in names):
        options = dict(info.example_options)
        if info.name in ("efficientnet_lite0", "image_torchvision"):
            options["image_size"] = 32  # the smallest they take: the round trip, not the picture, is measured
        encoders[info.name] = {"name": info.name, **options}
    options = dict(registry.get("fusion", fusion).example_options)
    if fusion == "tensor":
        options["factor_dim"] = 1  # (factor_dim + 1) ** 11 entries: 2048 with 11 modalities
    spec = {"encoders": encoders, "fusion": {"name": fusion, **options}, "head": {"name": "classification", "num_classes": 10}}
    torch.manual_seed(seed)
    return build_model(spec, registry).eval()


def train(model, steps: int, generator: torch.Generator, batch: int = 16) -> float:
    """``steps`` Adam steps on example records with random labels; the last loss (nan for 0 steps)."""
    from mmcore_plugins.deploy.export import example_records

    loss = float("nan")
    if steps:
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(steps):
            samples = [{"inputs": r, "target": int(torch.randint(10, (1,), generator=generator))}
                       for r in example_records(model, batch, generator)]
            collated = model.collate(samples)
            out = model(collated["inputs"], collated["targets"])
            optimiser.zero_grad()
            out.loss.backward()
            optimiser.step()
            loss = float(out.loss)
    return loss


def run_fusion(registry, fusion: str, names: list[str], work: Path, steps: int = 0) -> dict:
    from mmcore_plugins.deploy.export import (
        dynamic_shapes,
        example_records,
        front_ends,
        graph_inputs,
        plan,
        strip_metadata,
    )
    from mmcore_plugins.deploy.graph import ExportModule

    started = time.perf_counter()
    model = build(registry, fusion, names)
    generator = torch.Generator().manual_seed(1)
    model.fit_processors([{"inputs": r} for r in example_records(model, 12, generator)])
    loss = train(model, steps, generator)
    model.eval()
    trained = time.perf_counter()
    slots = plan(model)
    module = ExportModule(model, slots).eval()
    fronts = front_ends(slots, work)
    example = graph_inputs(fronts, module, example_records(model, 5, generator))
    module.probe(example, graph_inputs(fronts, module, example_records(model, 7, generator)))
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes(slots), strict=False)
    exported = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, (), dynamo=True, input_names=module.input_names,
                                         output_names=module.output_names, verbose=False)
    onnx_file = work / f"{fusion}.onnx"
    onnx_program.save(str(onnx_file))
    strip_metadata(onnx_file)
    converted = time.perf_counter()
    import onnxruntime as ort

    from mmcore_plugins.deploy.export import quantise_int8

    int8_file = work / f"{fusion}.int8.onnx"
    quantise_int8(onnx_file, int8_file)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    session8 = ort.InferenceSession(str(int8_file), providers=["CPUExecutionProvider"])
    runnable = program.module()
    row = {"fusion": fusion, "slots": len(slots), "encoders": names, "train_steps": steps, "last_loss": round(loss, 4),
           "train_s": round(trained - started, 1), "export_s": round(exported - trained, 1),
           "onnx_s": round(converted - exported, 1), "batches": {}}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    for size in BATCHES:
        records = example_records(model, size, generator)
        inputs = graph_inputs(fronts, module, records)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with torch.no_grad():
                eager = [o.numpy() for o in module(*inputs)]
                pt2 = [o.numpy() for o in runnable(*inputs)]
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        feed = {n: t.numpy() for n, t in zip(module.input_names, inputs, strict=True)}
        ort_out = session.run(module.output_names, feed)
        int8_out = session8.run(module.output_names, feed)
        logits, probs = module.output_names.index("logits"), module.output_names.index("probabilities")
        missing = 1.0 - float(np.mean([inputs[module.input_names.index(f"{s.slot}.present")].numpy()[:size].mean()
                                       for s in slots]))
        row["batches"][size] = {
            "missing": round(missing, 3),
            "pt2_identical": all(np.array_equal(a, b) for a, b in zip(eager, pt2, strict=True)),
            "onnx_logits": float(np.abs(eager[logits] - ort_out[logits]).max()),
            "onnx_probabilities": float(np.abs(eager[probs] - ort_out[probs]).max()),
            "same_argmax": bool(np.array_equal(eager[logits].argmax(-1), ort_out[logits].argmax(-1))),
            "int8_argmax_agreement": float(np.mean(eager[logits].argmax(-1) == int8_out[logits].argmax(-1))),
            "int8_probabilities": float(np.abs(eager[probs] - int8_out[probs]).max()),
        }
    row["ok"] = all(b["pt2_identical"] and b["onnx_probabilities"] <= TOLERANCE and b["onnx_logits"] <= TOLERANCE
                    for b in row["batches"].values())
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def print_table(rows: list[dict], fusions: list[str]) -> int:
    """The Markdown table of ``rows`` (one per fusion; a fusion of ``fusions`` without one: "not run"); how many passed."""
    print("\n| fusion | pt2 identical (1/37/256) | ONNX max abs diff, probabilities | ONNX max abs diff, logits | "
          "int8 argmax agreement (min) | int8 max abs diff, probabilities | train s | export s | ONNX s | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    by_name = {r["fusion"]: r for r in rows}
    for fusion in fusions:
        row = by_name.get(fusion)
        if row is None:
            print(f"| {fusion} | not run | | | | | | | | |")
            continue
        if "error" in row:
            print(f"| {fusion} | failed: {row['error']} | | | | | | | | {row['load_average']} |")
            continue
        b = {int(k): v for k, v in row["batches"].items()}
        print(f"| {fusion} | {'/'.join('yes' if b[s]['pt2_identical'] else 'NO' for s in BATCHES)} | "
              f"{max(b[s]['onnx_probabilities'] for s in BATCHES):.1e} | {max(b[s]['onnx_logits'] for s in BATCHES):.1e} | "
              f"{100 * min(b[s]['int8_argmax_agreement'] for s in BATCHES):.1f}% | {max(b[s]['int8_probabilities'] for s in BATCHES):.1e} | "
              f"{row['train_s']} | {row['export_s']} | {row['onnx_s']} | {row['load_average']} |")
    ok = sum(bool(by_name.get(f, {}).get("ok")) for f in fusions)
    encoders = sorted({e for r in rows for e in r.get("encoders", [])})
    print(f"\n{ok}/{len(fusions)} fusions round-trip ({len(by_name)} run) with the encoders {', '.join(encoders)} at batch sizes "
          f"{BATCHES} (pt2 identical, ONNX <= {TOLERANCE}, after training)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fusions", help="comma-separated fusion names (default: every built-in fusion)")
    parser.add_argument("--out", default="runs/deploy_export_roundtrip.jsonl", help="JSON lines written as it goes")
    parser.add_argument("--encoders", help="comma-separated encoder names, or 'all' for every built-in encoder "
                        f"(default: {','.join(CHEAP_ENCODERS)})")
    parser.add_argument("--steps", type=int, default=20, help="Adam steps of training before the export (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--table", help="print the table of an earlier run's JSON lines (this file) and stop")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import mmcore

    torch.set_num_threads(args.threads)
    registry = mmcore.create_plugin_manager().registry
    fusions = args.fusions.split(",") if args.fusions else sorted(i.name for i in registry if i.kind == "fusion")
    if args.table:
        rows = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]
        return 0 if print_table(rows, fusions) == len(fusions) else 1
    encoders = (sorted(i.name for i in registry if i.kind == "encoder" and i.distribution == "mmcore")
                if args.encoders == "all" else args.encoders.split(",") if args.encoders else list(CHEAP_ENCODERS))
    print(f"{len(fusions)} fusions x {len(encoders)} encoders ({', '.join(encoders)}); batches {BATCHES}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, open(args.out, "w") as log:
        for fusion in fusions:
            try:
                row = run_fusion(registry, fusion, encoders, Path(tmp), args.steps)
            except Exception as exc:  # noqa: BLE001 - a failure is a result: recorded, the next fusion runs
                row = {"fusion": fusion, "ok": False, "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
            row["load_average"] = round(os.getloadavg()[0], 1)
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps(row), flush=True)
    ok = print_table(rows, fusions)
    return 0 if ok == len(fusions) else 1


if __name__ == "__main__":
    sys.exit(main())
