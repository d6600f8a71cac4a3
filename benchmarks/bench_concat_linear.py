"""pytest-benchmark suite: ``mmcore_kernels.concat_linear`` vs ``torch.cat`` + ``nn.Linear`` vs
per-segment ``addmm``.

    python -m pytest benchmarks/bench_concat_linear.py --benchmark-only
    MMCORE_BENCH_FULL=1 python -m pytest benchmarks/bench_concat_linear.py   # M=8192 on CPU

Shapes: M=8192 rows, segments (768, 512, 256), N in {128, 256, 1024}; forward and
forward+backward. CPU defaults to M=2048 and fp32; CUDA runs fp16 and adds ``mmcore-triton`` (the
Triton kernel even where auto dispatch would choose cuBLAS), which is what tunes
``mmcore_kernels._dispatch.concat_linear_prefers_triton``. This suite is also where the CPU
fallback's method (``reference.CONCAT_LINEAR_DEFAULT_METHOD``: ``addmm``) was chosen from.
"""

from __future__ import annotations

import kernel_bench as kb  # benchmarks/kernel_bench.py (pytest puts this folder on sys.path)
import pytest

DEVICE = kb.bench_device()
CASES = kb.concat_linear_cases(device=DEVICE)
PROVIDERS = [p for p in kb.CONCAT_LINEAR_PROVIDERS if DEVICE.type == "cuda" or p != "mmcore-triton"]


@pytest.mark.parametrize("mode", kb.MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_concat_linear(benchmark, case, provider, mode):
    prepared = kb.make_concat_linear_fn(case, provider, mode, DEVICE)
    baseline = kb.baseline_ms(
        ("concat_linear", case, mode),
        lambda: kb.make_concat_linear_fn(case, "cat+linear", mode, DEVICE),
        DEVICE,
    )
    kb.run_pytest_benchmark(
        benchmark,
        prepared,
        DEVICE,
        mode=mode,
        group=f"concat_linear {case.id} {mode}",
        baseline=baseline,
    )


# ------------------------------------------------------------------------------ the CPU fallback's rule
#: (rows, segment widths) of the sweep that chose ``reference.CONCAT_LINEAR_ADDMM_FROM``.
FALLBACK_SWEEP = [(128, (64, 64)), (128, (256,) * 3), (128, (768, 512, 256)), (8192, (64, 64)), (2048, (256,) * 3),
                  (2048, (768, 512, 256)), (8192, (256,) * 3), (8192, (768, 512, 256))]


def fallback_sweep(n: int = 256) -> list[dict]:
    """Time of ``cat`` + ``linear`` / time of per-segment ``addmm`` (forward; forward + backward), interleaved medians."""
    import statistics
    import time

    import torch

    from mmcore_kernels.reference import concat_linear_reference

    def median_ratio(a, b, repeats: int) -> float:
        for _ in range(3):
            a(), b()
        ratios = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a()
            t1 = time.perf_counter()
            b()
            ratios.append((t1 - t0) / (time.perf_counter() - t1))
        return statistics.median(ratios)

    rows = []
    for m, widths in FALLBACK_SWEEP:
        weight = torch.randn(n, sum(widths), requires_grad=True)
        bias = torch.randn(n, requires_grad=True)
        xs = [torch.randn(m, w, requires_grad=True) for w in widths]
        grad = torch.randn(m, n)

        def forward(method, xs=xs, weight=weight, bias=bias):
            def run():
                with torch.no_grad():
                    concat_linear_reference(xs, weight, bias, method=method)
            return run

        def training(method, xs=xs, weight=weight, bias=bias, grad=grad):
            return lambda: concat_linear_reference(xs, weight, bias, method=method).backward(grad)

        repeats = 20 if m * sum(widths) > 2e6 else 80
        rows.append({"rows": m, "widths": widths, "elements": m * sum(widths),
                     "forward": median_ratio(forward("cat"), forward("addmm"), repeats),
                     "forward_backward": median_ratio(training("cat"), training("addmm"), repeats)})
    return rows


if __name__ == "__main__":
    print("cat+linear time / per-segment addmm time (> 1: addmm faster), CPU fp32, N = 256")
    for r in fallback_sweep():
        print(f"  {r['elements']:>9,} elements  {r['rows']:>5} x {'+'.join(map(str, r['widths'])):<14}"
              f"  forward {r['forward']:.2f}  forward+backward {r['forward_backward']:.2f}")
