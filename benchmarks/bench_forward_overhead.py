"""Eager forward overhead at small batches: the same trained runs through two versions of mmcore's code, side by side.

What ``mmcore.Predictor``, ``mmcore serve`` and the pruning benchmark measure is one record's eager forward
(batch 1), where a few hundred small operators (casts, mask multiplies, unsqueezes) cost as much as the
convolutions. This script loads each run (``mmcore.cli.load_run``) in two long-lived worker processes, one
importing mmcore from this checkout ("after") and one from ``--before`` (a git ref, archived to a temporary
folder, default ``main``), and alternates them round by round, so that a busy machine slows both alike.

Per run, thread count and batch it reports:

* ops per forward: aten operators the profiler records (all of them, and the top-level calls mmcore issues);
* CPU time per forward (``time.process_time``: steadier than wall time under load) and wall time, the median
  over the rounds, with the after/before ratio;
* the largest difference between the two versions' logits (must be <= 1e-6: the change is not allowed to
  change results);
* with ``--train``, a training step's forward + backward at batch 32 (train mode: dropout and augmentation on)
  in CPU / wall ms: the same code runs in training, which must not get slower.

Batch 1 is one test record with every modality present; batch 32 is the first 32 test records (the demo's
text is missing from ~60% of them, so the masked paths run).

    python benchmarks/bench_forward_overhead.py                       # teacher and pruned_0.5, vs main
    python benchmarks/bench_forward_overhead.py --rounds 9 --train           # and a training step at batch 32
    python benchmarks/bench_forward_overhead.py --before HEAD~3 --runs /path/to/run
    python benchmarks/bench_forward_overhead.py --components          # every registered encoder / fusion: same outputs?
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ["/work/tune_runs/teacher", "/work/tune_runs/pruned_0.5"]
PACKAGES = {"mmcore": "mmcore", "mmcore_plugins": "plugins", "mmcore_kernels": "kernels"}


# ---------------------------------------------------------------------- worker (one version of the code)
def _import_from(tree: Path) -> None:
    """Make ``import mmcore`` (and the plugins) load from ``tree`` rather than the installed checkout."""
    import importlib.abc
    import importlib.util

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            top = fullname.split(".")[0]
            if top not in PACKAGES:
                return None
            where = tree / PACKAGES[top] / Path(*fullname.split(".")[1:])
            for candidate in (where / "__init__.py", where.with_suffix(".py")):
                if candidate.exists():
                    return importlib.util.spec_from_file_location(fullname, candidate)
            return None

    sys.meta_path.insert(0, Finder())


def _worker(tree: str | None) -> None:
    if tree:
        _import_from(Path(tree))
    import torch
    from torch.profiler import profile

    from mmcore.cli import load_run
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.evaluation import to_device
    from mmcore.plugin_manager import get_plugin_manager

    manager = get_plugin_manager()
    loaded = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the library prints stays off the protocol
    for line in sys.stdin:
        request = json.loads(line)
        run, batch, threads, count = request["run"], request["batch"], request["threads"], request.get("count", 0)
        if run not in loaded:
            model, config = load_run(Path(run), manager)
            model.eval()
            test = load_datasets(config, manager, splits=("test",))["test"]
            samples = [test[i] for i in range(len(test))]
            full = next(s for s in samples if all(v is not None for v in s["inputs"].values()))
            loaded[run] = (model, {1: to_device(model.collate([full]), "cpu"),
                                   32: to_device(model.collate(samples[:32]), "cpu")})
        model, batches = loaded[run]
        inputs, targets = batches[batch]
        torch.set_num_threads(threads)
        reply = {"module": str(Path(sys.modules["mmcore"].__file__).parent)}
        if request.get("train"):  # one training step's forward and backward (dropout, augmentation on)
            model.train()
            torch.manual_seed(0)
            for _ in range(2):
                model(inputs, targets).loss.backward()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(count):
                model(inputs, targets).loss.backward()
            reply["cpu_ms"] = (time.process_time() - cpu) / count * 1e3
            reply["wall_ms"] = (time.perf_counter() - wall) / count * 1e3
            model.zero_grad(set_to_none=True)
            model.eval()
            out.write(json.dumps(reply) + "\n")
            out.flush()
            continue
        with torch.inference_mode():
            for _ in range(3):
                logits = model(inputs).logits
            if request.get("ops"):
                with profile() as prof:
                    model(inputs)
                events = [e for e in prof.events() if e.name.startswith("aten::")]
                reply["ops"] = len(events)
                reply["top_ops"] = sum(1 for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
                reply["logits"] = logits.tolist()
            if count:
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(count):
                    model(inputs)
                reply["cpu_ms"] = (time.process_time() - cpu) / count * 1e3
                reply["wall_ms"] = (time.perf_counter() - wall) / count * 1e3
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ---------------------------------------------------------------------- every registered component, both versions
def _components(tree: str | None, path: str) -> None:
    """Each registered encoder (``example_options``, seeded) on batches of its processor's examples -- one record,
    three, three with one missing -- in eval and train mode (dropout seeded) and under bf16 autocast, and each fusion on seeded features
    with every modality present and with missing modalities and padding; the outputs saved to ``path``."""
    if tree:
        _import_from(Path(tree))
    import torch

    from mmcore import Features
    from mmcore.plugin_manager import get_registry

    registry, out = get_registry(), {}
    for name in registry.names("encoder"):
        info = registry.get("encoder", name)
        try:
            torch.manual_seed(0)
            encoder = info.factory(**(info.example_options or {}))
            processor = encoder.processor()
            generator = torch.Generator().manual_seed(1)
            items = [processor(processor.example(generator)) for _ in range(3)]
        except Exception as exc:  # noqa: BLE001 (an encoder whose files are not installed here: reported, skipped)
            print(f"skipped encoder {name}: {exc}", file=sys.stderr)
            continue
        for label, batch in {"one": items[:1], "three": items, "three, one missing": [items[0], None, items[2]]}.items():
            for mode in ("eval", "train", "eval, bf16 autocast"):
                encoder.train(mode == "train")
                torch.manual_seed(5)
                try:
                    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled="autocast" in mode):
                        f = encoder(processor.collate(batch))
                except ValueError as exc:  # batch norm in train mode refuses one record
                    print(f"skipped encoder {name} ({label}, {mode}): {exc}", file=sys.stderr)
                    continue
                out[f"encoder {name}, {label}, {mode}"] = (f.tokens, f.mask, f.pooled, f.present)
    dims, generator, sets = {"a": 16, "b": 8, "c": 12}, torch.Generator().manual_seed(2), {}
    for label, present in {"all present": [[1, 1, 1]] * 3, "some missing": [[1, 0, 1], [0, 1, 1], [1, 1, 0]]}.items():
        lengths = [5, 5, 5] if label == "all present" else [5, 3, 1]
        mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
        sets[label] = {s: (torch.randn(3, 5, d, generator=generator), mask, torch.tensor(present[i], dtype=torch.bool))
                       for i, (s, d) in enumerate(dims.items())}
    for name in registry.names("fusion"):
        info = registry.get("fusion", name)
        torch.manual_seed(0)
        fusion = info.factory(input_dims=dims, **(info.example_options or {})).eval()
        for label, tensors in sets.items():
            with torch.no_grad():
                f = fusion({s: Features.from_tokens(*t) for s, t in tensors.items()})
            out[f"fusion {name}, {label}"] = (f.tokens, f.mask, f.pooled, f.present)
    torch.save(out, path)


def _compare_components(before: Path, tmp: Path) -> float:
    import torch

    paths = {k: tmp / f"{k}.pt" for k in ("before", "after")}
    for k, tree in (("before", str(before)), ("after", None)):
        subprocess.run([sys.executable, __file__, "--components-worker", str(paths[k])] + (["--tree", tree] if tree else []),
                       check=True)
    outputs = {k: torch.load(p) for k, p in paths.items()}
    if outputs["before"].keys() != outputs["after"].keys():
        raise SystemExit(f"different outputs: {sorted(set(outputs['before']) ^ set(outputs['after']))}")
    worst = 0.0
    for key, tensors in outputs["before"].items():
        for a, b in zip(tensors, outputs["after"][key], strict=True):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise SystemExit(f"{key}: {a.dtype} {list(a.shape)} became {b.dtype} {list(b.shape)}")
            worst = max(worst, (a.double() - b.double()).abs().max().item() if a.numel() else 0.0)
    print(f"# components: {len(outputs['before'])} outputs of every registered encoder and fusion, largest difference {worst:.2e}")
    return worst


# ---------------------------------------------------------------------- parent (alternates the two)
class Worker:
    def __init__(self, tree: str | None) -> None:
        command = [sys.executable, __file__, "--worker"] + (["--tree", tree] if tree else [])
        env = dict(os.environ, OMP_NUM_THREADS="2")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("a worker died; see its messages above")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def _archive(ref: str, into: Path) -> Path:
    """``git archive ref`` of this repository unpacked in ``into``."""
    tar = into / "before.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(tar), ref], check=True)
    with tarfile.open(tar) as archive:
        archive.extractall(into / "tree", filter="data")
    return into / "tree"


def _compare(workers: dict[str, Worker], args: argparse.Namespace, **ask) -> float:
    """One configuration, the two versions alternated round by round; prints its row, returns the logit difference."""
    diff = 0.0
    if ask["train"]:
        ops = "training step (forward + backward)"
    else:
        probe = {k: w.ask(ops=True, **ask) for k, w in workers.items()}
        diff = max(abs(a - b) for ra, rb in zip(probe["before"]["logits"], probe["after"]["logits"], strict=True)
                   for a, b in zip(ra, rb, strict=True))
        ops = (f"{probe['before']['ops']} ({probe['before']['top_ops']}) -> "
               f"{probe['after']['ops']} ({probe['after']['top_ops']})")
    timing = {k: w.ask(count=3, **ask) for k, w in workers.items()}
    count = max(3, int(args.ms / max(timing["before"]["cpu_ms"], 1e-3)))
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    wall: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for k in ("before", "after") if r % 2 == 0 else ("after", "before"):
            got = workers[k].ask(count=count, **ask)
            cpu[k].append(got["cpu_ms"])
            wall[k].append(got["wall_ms"])
    c = {k: statistics.median(v) for k, v in cpu.items()}
    w = {k: statistics.median(v) for k, v in wall.items()}
    print(f"{Path(ask['run']).name} | {ask['batch']} | {ask['threads']} | {ops} | {c['before']:.3f} -> {c['after']:.3f} "
          f"({c['after'] / c['before']:.2f}) | {w['before']:.3f} -> {w['after']:.3f} ({w['after'] / w['before']:.2f}) | "
          f"{'' if ask['train'] else f'{diff:.2e}'}", flush=True)
    return diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--components-worker", help=argparse.SUPPRESS)
    parser.add_argument("--components", action="store_true",
                        help="only compare the outputs of every registered encoder and fusion (seeded), no timing")
    parser.add_argument("--before", default="main", help="git ref of the code to compare with (default main)")
    parser.add_argument("--runs", nargs="+", default=RUNS, help="run folders to load (read only)")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds per configuration")
    parser.add_argument("--ms", type=float, default=300.0, help="about this much CPU time per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--train", action="store_true", help="also time a training step (forward + backward) at batch 32")
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.tree)
        return 0
    if args.components_worker:
        _components(args.tree, args.components_worker)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        before = _archive(args.before, Path(tmp))
        if args.components:
            return 0 if _compare_components(before, Path(tmp)) <= 1e-6 else 1
        workers = {"before": Worker(str(before)), "after": Worker(None)}
        print(f"# load average at start: {os.getloadavg()}; before = {args.before}, after = working tree {ROOT}")
        print("run | batch | threads | ops before -> after (top-level) | CPU ms/forward before -> after (ratio) | "
              "wall ms before -> after (ratio) | max |logit diff|")
        worst = 0.0
        configs = [(run, batch, threads, train) for run in args.runs for batch in args.batches for threads in args.threads
                   for train in ((False, True) if args.train and batch > 1 else (False,))]
        try:
            for run, batch, threads, train in configs:
                worst = max(worst, _compare(workers, args, run=run, batch=batch, threads=threads, train=train))
        finally:
            for worker in workers.values():
                worker.close()
        print(f"# load average at end: {os.getloadavg()}; largest logit difference {worst:.2e}")
        return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
