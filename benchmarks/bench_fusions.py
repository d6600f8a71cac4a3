"""The cost of every registered fusion at one width: parameters, FLOPs, forward+backward latency, peak memory.

Setting: 3 modalities of width 256 with 8 / 1 / 16 tokens (text-like, tabular-like, image-like; ragged
masks), 20% of samples missing each of the last two modalities, batch 64, fusion ``dim`` 256,
every fusion with its default options except where ``OPTIONS`` says. One step = forward + backward
of ``pooled.sum() + (tokens * mask).sum()``. This is the cost half of an accuracy-vs-cost
comparison (``mmcore compare`` gives the accuracy half).

Columns (also in each pytest-benchmark's ``extra_info``):

* ``params`` — trainable parameters.
* ``gflop`` — forward + backward FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls, attention, convolutions; FFTs and element-wise ops are not counted, so ``mcb``'s FFTs
  are missing from its figure).
* ``ms`` — median wall time of one step (CUDA: synchronised).
* ``peak_mib`` — on CUDA, ``torch.cuda.max_memory_allocated`` during a step (inputs included). On CPU
  there is no allocator statistic, so ``est_mib`` is an *estimate*: parameter + gradient bytes plus
  the bytes of the distinct tensors autograd saves for backward (``saved_tensors_hooks``).

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
LENGTHS = {"text": 8, "table": 1, "image": 16}
#: Non-default options: sizes that keep the fusions comparable at width 256.
OPTIONS = {"tensor": {"factor_dim": 16}, "mcb": {"sketch_dim": 2048}}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def fusion_names() -> list[str]:
    return mmcore.get_registry().names("fusion")


def build(name: str, device: str = DEVICE):
    """The fusion and its inputs (fixed seed): ``(fusion, {slot: Features})``."""
    info = mmcore.get_registry().get("fusion", name)
    torch.manual_seed(0)
    fusion = info.factory(input_dims={s: WIDTH for s in LENGTHS}, dim=DIM, **OPTIONS.get(name, {})).to(device).train()
    g = torch.Generator().manual_seed(0)
    present = torch.rand(BATCH, len(LENGTHS), generator=g) >= 0.2
    present[:, 0] = True  # every sample keeps at least its first modality
    feats = {
        s: random_features(BATCH, WIDTH, n, present=present[:, i], generator=g, requires_grad=True).to(device)
        for i, (s, n) in enumerate(LENGTHS.items())
    }
    return fusion, feats


def step(fusion, feats) -> None:
    """One forward + backward pass."""
    out = fusion(feats)
    (out.pooled.sum() + (out.tokens * out.mask[..., None]).sum()).backward()
    if out.pooled.is_cuda:
        torch.cuda.synchronize()


def count_flops(fusion, feats) -> int:
    with FlopCounterMode(display=False) as counter:
        step(fusion, feats)
    return counter.get_total_flops()


def estimate_memory_bytes(fusion, feats) -> int:
    """Parameters + their gradients + the distinct non-parameter storages saved for backward in one forward."""
    params = {p.untyped_storage().data_ptr() for p in fusion.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fusion(feats)
    loss = out.pooled.sum() + (out.tokens * out.mask[..., None]).sum()
    loss.backward()
    weights = sum(p.numel() * p.element_size() for p in fusion.parameters() if p.requires_grad)
    return 2 * weights + sum(saved.values())


def peak_cuda_bytes(fusion, feats) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step(fusion, feats)
    return torch.cuda.max_memory_allocated()


def measure(name: str, device: str = DEVICE, repeats: int = 10) -> dict:
    """One table row: params, GFLOP, median ms, and peak (CUDA) or estimated (CPU) MiB."""
    fusion, feats = build(name, device)
    row = {
        "fusion": name,
        "params": sum(p.numel() for p in fusion.parameters() if p.requires_grad),
        "gflop": count_flops(fusion, feats) / 1e9,
    }
    for _ in range(2):
        step(fusion, feats)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(fusion, feats)
        times.append(time.perf_counter() - start)
    row["ms"] = 1e3 * sorted(times)[len(times) // 2]
    if device == "cuda":
        row["peak_mib"] = peak_cuda_bytes(fusion, feats) / 2**20
    else:
        row["est_mib"] = estimate_memory_bytes(fusion, feats) / 2**20
    return row


@pytest.mark.parametrize("name", fusion_names())
def test_fusion_forward_backward(benchmark, name):
    fusion, feats = build(name)
    info = {
        "device": DEVICE, "batch": BATCH, "width": WIDTH, "dim": DIM, "tokens": dict(LENGTHS),
        "params": sum(p.numel() for p in fusion.parameters() if p.requires_grad),
        "flops": count_flops(fusion, feats),
    }
    if DEVICE == "cuda":
        info["peak_memory_bytes"] = peak_cuda_bytes(fusion, feats)
    else:
        info["estimated_memory_bytes"] = estimate_memory_bytes(fusion, feats)
    benchmark.extra_info.update(info)
    benchmark(step, fusion, feats)


def table(device: str = DEVICE) -> list[dict]:
    return [measure(name, device) for name in fusion_names()]


def format_table(rows: list[dict]) -> str:
    memory = "peak MiB" if rows and "peak_mib" in rows[0] else "est. MiB"
    lines = [f"{'fusion':<18} {'params':>10} {'GFLOP':>8} {'ms':>9} {memory:>9}"]
    for r in rows:
        mib = r.get("peak_mib", r.get("est_mib"))
        lines.append(f"{r['fusion']:<18} {r['params']:>10,} {r['gflop']:>8.3f} {r['ms']:>9.2f} {mib:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    print(
        f"every fusion: 3 modalities x width {WIDTH}, tokens {LENGTHS}, batch {BATCH}, dim {DIM}, "
        f"forward + backward on {DEVICE} ({torch.get_num_threads()} threads)"
    )
    print(format_table(table()))
    if DEVICE == "cpu":
        print("est. MiB: parameters + gradients + tensors saved for backward (no CPU allocator statistic)")
    print("GFLOP: FlopCounterMode (matmul/attention; FFTs and element-wise ops not counted)")


if __name__ == "__main__":
    main()
