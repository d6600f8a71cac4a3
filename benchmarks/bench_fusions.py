"""The cost of every registered fusion at the same width: parameters, FLOPs, latency, memory.

Setting: 3 modalities of width 256 with 16 / 1 / 49 tokens (text-like, tabular-like, image-like),
batch 64, fusion dim 256, forward + backward. This is the cost half of an accuracy-vs-cost
comparison (``mmcore compare`` gives the accuracy half).

    python -m pytest benchmarks/bench_fusions.py --benchmark-only     # latency per fusion
    python benchmarks/bench_fusions.py                                # the whole table
"""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mmcore
from mmcore.testing import random_features

BATCH, WIDTH, DIM = 64, 256, 256
LENGTHS = {"text": 16, "table": 1, "image": 49}
OPTIONS = {"tensor": {"factor_dim": 16}, "mcb": {"sketch_dim": 2048}}


def fusion_names() -> list[str]:
    return mmcore.get_registry().names("fusion")


def build(name: str, device: str = "cpu"):
    info = mmcore.get_registry().get("fusion", name)
    torch.manual_seed(0)
    fusion = info.factory(input_dims={s: WIDTH for s in LENGTHS}, dim=DIM, **OPTIONS.get(name, {})).to(device)
    g = torch.Generator().manual_seed(0)
    present = torch.rand(BATCH, len(LENGTHS), generator=g) < 0.8
    present[:, 0] = True
    feats = {
        s: random_features(BATCH, WIDTH, n, present=present[:, i], generator=g, requires_grad=True).to(device)
        for i, (s, n) in enumerate(LENGTHS.items())
    }
    return fusion, feats


def step(fusion, feats) -> None:
    out = fusion(feats)
    (out.pooled.sum() + out.tokens.sum()).backward()


@pytest.mark.parametrize("name", fusion_names())
def test_fusion_forward_backward(benchmark, name):
    fusion, feats = build(name)
    params = sum(p.numel() for p in fusion.parameters())
    with FlopCounterMode(display=False) as counter:
        step(fusion, feats)
    benchmark.extra_info.update({"params": params, "flops": counter.get_total_flops(), "batch": BATCH, "dim": DIM})
    benchmark(step, fusion, feats)


def table(device: str = "cpu", repeats: int = 10) -> list[dict]:
    rows = []
    for name in fusion_names():
        fusion, feats = build(name, device)
        with FlopCounterMode(display=False) as counter:
            step(fusion, feats)
        for _ in range(2):
            step(fusion, feats)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(fusion, feats)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        times.sort()
        rows.append({
            "fusion": name,
            "params": sum(p.numel() for p in fusion.parameters()),
            "gflops": counter.get_total_flops() / 1e9,
            "ms": 1e3 * times[len(times) // 2],
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        })
    return rows


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"every fusion: 3 modalities x width {WIDTH}, tokens {LENGTHS}, batch {BATCH}, dim {DIM}, fwd+bwd on {device}")
    print(f"{'fusion':<18} {'params':>10} {'GFLOP':>8} {'ms':>9} {'peak MiB':>9}")
    for r in table(device):
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        print(f"{r['fusion']:<18} {r['params']:>10,} {r['gflops']:>8.3f} {r['ms']:>9.2f} {peak:>9}")


if __name__ == "__main__":
    main()
