"""Intra-op threads on a busy machine (issue 27, "load-proof defaults"): which setting never loses?

    python benchmarks/bench_threads.py [--hogs 0,1,2] [--repeats 3] [--out threads.json]

For each number of busy-looping "hog" processes (the other work on a shared machine), the same
training steps -- fit's small image CNN (32 px, batch 32) and a tabular MLP, forward + backward +
AdamW -- are timed in a fresh process for each setting, the settings alternated within each repeat:

* ``1``: ``torch.set_num_threads(1)``;
* ``2``: two threads, OpenMP's default wait policy (threads spin while waiting);
* ``2-passive``: two threads with ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported:
  waiting threads sleep instead of spinning);
* ``2-spin10k``: two threads, ``GOMP_SPINCOUNT=10000`` (spin briefly, then sleep).

Printed: the median ms per step of each, and each setting's ratio to the best at that load. fit
chooses one thread on a machine whose 1-minute load leaves less than one core free
(:func:`mmcore_plugins.autofit.budget.choose_threads`); this is the measurement behind it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STEP = r"""
import os, sys, time, json
import torch
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
from mmcore.plugin_manager import get_plugin_manager
reg = get_plugin_manager().registry
cnn = reg.get("encoder", "image_cnn").factory(dim=64, image_size=32, channels=1, width=32)
mlp = reg.get("encoder", "tabular_mlp").factory(num_features=8, dim=64, hidden=[128], columns=[str(i) for i in range(8)])
params = list(cnn.parameters()) + list(mlp.parameters())
opt = torch.optim.AdamW(params, lr=1e-3)
x = {"pixels": torch.randn(32, 1, 32, 32), "present": torch.ones(32, dtype=torch.bool)}
def step():
    loss = cnn(x).pooled.pow(2).mean()
    loss.backward(); opt.step(); opt.zero_grad()
for _ in range(3):
    step()
times = []
deadline = time.perf_counter() + float(sys.argv[2])
while time.perf_counter() < deadline or len(times) < 5:
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps({"median_ms": 1000 * sorted(times)[len(times) // 2], "steps": len(times)}))
"""

SETTINGS = {"1": ({}, 1), "2": ({}, 2), "2-passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
            # libgomp's middle way: spin briefly (10k iterations) before sleeping
            "2-spin10k": ({"GOMP_SPINCOUNT": "10000"}, 2)}


def run(setting: str, seconds: float) -> float:
    extra, threads = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | extra
    out = subprocess.run([sys.executable, "-c", STEP, str(threads), str(seconds)], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hogs", default="0,1,2", help="comma-separated numbers of busy-looping processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per run")
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    for hogs in (int(h) for h in args.hogs.split(",")):
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
        try:
            time.sleep(1.0)
            load = os.getloadavg()[0]
            samples: dict[str, list[float]] = {s: [] for s in SETTINGS}
            for _ in range(args.repeats):
                for setting in SETTINGS:  # alternated: a change of the machine's load hits every setting alike
                    samples[setting].append(run(setting, args.seconds))
        finally:
            for p in procs:
                p.kill()
        medians = {s: statistics.median(v) for s, v in samples.items()}
        best = min(medians.values())
        row = {"hogs": hogs, "load_1min": load, "cpus": os.cpu_count(), "median_ms": medians,
               "ratio_to_best": {s: m / best for s, m in medians.items()}, "samples_ms": samples}
        results.append(row)
        print(f"hogs {hogs} (load {load:.1f}): " + ", ".join(f"{s} {m:.1f} ms ({m / best:.2f}x)" for s, m in medians.items()),
              flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
