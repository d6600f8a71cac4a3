"""pytest-benchmark suite: ``mmcore_kernels.cross_attention`` vs SDPA (same mask) vs naive math.

    python -m pytest benchmarks/bench_cross_attention.py --benchmark-only
    MMCORE_BENCH_FULL=1 python -m pytest benchmarks/bench_cross_attention.py   # full shapes on CPU

Shapes: text->image (B=32, H=8, Lq=77, Lk=197, D=64), image->text (Lq=197, Lk=77), audio
(Lq=128, Lk=500), long (Lq=Lk=2048, D=128, B=8), each unmasked and with ~30% key padding given as
``kv_lens``; forward and forward+backward. On CPU the default shapes are scaled down (small batch;
long at 1024), see ``kernel_bench.py``. CUDA runs fp16, CPU fp32. ``extra_info`` holds the
do_bench median (CUDA), TFLOP/s, GB/s, ratio to SDPA, peak memory (fwd+bwd) and which SDPA
backend ran (for ``sdpa`` and, on the torch path, ``mmcore``).
"""

from __future__ import annotations

import kernel_bench as kb  # benchmarks/kernel_bench.py (pytest puts this folder on sys.path)
import pytest

DEVICE = kb.bench_device()
CASES = kb.attention_cases(device=DEVICE)


@pytest.mark.parametrize("mode", kb.MODES)
@pytest.mark.parametrize("provider", kb.ATTENTION_PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cross_attention(benchmark, case, provider, mode):
    prepared = kb.make_attention_fn(case, provider, mode, DEVICE)
    baseline = kb.baseline_ms(
        ("cross_attention", case, mode), lambda: kb.make_attention_fn(case, "sdpa", mode, DEVICE), DEVICE
    )
    kb.run_pytest_benchmark(
        benchmark,
        prepared,
        DEVICE,
        mode=mode,
        group=f"cross_attention {case.id} {mode}",
        baseline=baseline,
    )
