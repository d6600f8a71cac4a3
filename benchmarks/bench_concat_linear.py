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

import pytest

from mmcore_kernels import bench as kb

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
