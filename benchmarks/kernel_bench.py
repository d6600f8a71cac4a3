"""Benchmarks of the mmcore_kernels ops against their alternatives.

``python benchmarks/kernel_bench.py [--full] [--ops cross_attention concat_linear] [--modes fwd fwd+bwd]``
(or ``mmcore bench`` in a source checkout) prints one table; :func:`run` returns the rows as dicts.
The pytest-benchmark suites beside it (``bench_cross_attention.py``, ``bench_concat_linear.py``) and
``gpu_check.py`` use the same cases and providers from this module. It lives in ``benchmarks/``, not
in the installed ``mmcore_kernels`` package: benchmarks are the repository's, not the library's.

Providers. ``cross_attention``: ``mmcore`` (the public op, auto backend), ``sdpa``
(``F.scaled_dot_product_attention`` with the same boolean key mask; which SDPA backend actually
ran is recorded), ``naive`` (softmax(QK^T)V with the full score matrix). ``concat_linear``:
``mmcore`` (auto backend), ``cat+linear`` (``F.linear(torch.cat(xs))``), ``addmm`` (per-segment
``addmm`` on weight views); on CUDA also ``mmcore-triton`` (the Triton kernel even where auto would
pick cuBLAS). Baselines for the ratio column: ``sdpa`` and ``cat+linear``.

Timing. CUDA: ``triton.testing.do_bench`` (median, ms), plus peak memory of one fwd+bwd. CPU: the
median of repeated ``perf_counter`` runs. CPU runs use scaled-down shapes unless ``full=True`` or
``MMCORE_BENCH_FULL=1`` (the full shapes take minutes per case on a small CPU).

FLOP counts use only the *real* keys (``sum(kv_lens)``), since the kernels skip padding: the rate is
work done per second, comparable across providers. fwd+bwd counts 3.5x the forward for attention
(the backward recomputes ``QK^T`` and does four more GEMMs) and 3x for concat_linear.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import torch
import torch.nn.functional as F

from mmcore_kernels import reference

__all__ = [
    "ATTENTION_PROVIDERS",
    "CONCAT_LINEAR_PROVIDERS",
    "MODES",
    "AttentionCase",
    "ConcatLinearCase",
    "attention_cases",
    "bench_device",
    "concat_linear_cases",
    "full_size_requested",
    "make_attention_fn",
    "make_concat_linear_fn",
    "measure",
    "run",
    "run_pytest_benchmark",
    "sdpa_backend_name",
]

MODES = ("fwd", "fwd+bwd")
ATTENTION_PROVIDERS = ("mmcore", "sdpa", "naive")
CONCAT_LINEAR_PROVIDERS = ("mmcore", "mmcore-triton", "cat+linear", "addmm")
OPS = ("cross_attention", "concat_linear")


def full_size_requested(full: bool | None = None) -> bool:
    if full is not None:
        return bool(full)
    return os.environ.get("MMCORE_BENCH_FULL", "0").strip().lower() in ("1", "true", "yes", "on")


def bench_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _bench_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


# ------------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionCase:
    name: str
    batch: int
    heads: int
    lq: int
    lk: int
    head_dim: int
    padded: bool  # ~30% of keys are padding, given as kv_lens

    @property
    def id(self) -> str:
        return f"{self.name}{'-pad30' if self.padded else ''}"

    def kv_lens(self, device: torch.device) -> torch.Tensor | None:
        if not self.padded:
            return None
        # Ragged lengths from 100% down to 40% of Lk (mean 70%: ~30% padding).
        frac = torch.linspace(1.0, 0.4, self.batch) if self.batch > 1 else torch.tensor([0.7])
        return (frac * self.lk).round().clamp(min=1).to(torch.int32).to(device)

    def real_keys(self) -> int:
        lens = self.kv_lens(torch.device("cpu"))
        return self.batch * self.lk if lens is None else int(lens.sum())

    def flops(self, mode: str) -> float:
        fwd = 4.0 * self.heads * self.lq * self.head_dim * self.real_keys()
        return fwd if mode == "fwd" else 3.5 * fwd

    def bytes(self, mode: str, itemsize: int) -> float:
        q = self.batch * self.lq * self.heads * self.head_dim
        kv = self.batch * self.lk * self.heads * self.head_dim
        fwd = (2 * q + 2 * kv) * itemsize  # read q, k, v; write o
        return (
            fwd if mode == "fwd" else fwd + (4 * q + 4 * kv) * itemsize
        )  # + read q,o,dO,k,v; write dq,dk,dv


_ATTENTION_FULL = [
    ("text->image", 32, 8, 77, 197, 64),
    ("image->text", 32, 8, 197, 77, 64),
    ("audio", 32, 8, 128, 500, 64),
    ("long", 8, 8, 2048, 2048, 128),
]
# CPU default: same sequence lengths where affordable, small batch; the long case at 1024.
_ATTENTION_CPU = [
    ("text->image", 2, 8, 77, 197, 64),
    ("image->text", 2, 8, 197, 77, 64),
    ("audio", 2, 8, 128, 500, 64),
    ("long", 1, 8, 1024, 1024, 128),
]


def attention_cases(full: bool | None = None, device: torch.device | None = None) -> list[AttentionCase]:
    device = device or bench_device()
    table = _ATTENTION_FULL if (device.type == "cuda" or full_size_requested(full)) else _ATTENTION_CPU
    return [AttentionCase(*row, padded=p) for row in table for p in (False, True)]


@dataclass(frozen=True)
class ConcatLinearCase:
    rows: int
    widths: tuple[int, ...]
    out_features: int
    bias: bool = True

    @property
    def id(self) -> str:
        return f"M{self.rows}-K{'+'.join(map(str, self.widths))}-N{self.out_features}"

    def flops(self, mode: str) -> float:
        fwd = 2.0 * self.rows * sum(self.widths) * self.out_features
        return fwd if mode == "fwd" else 3.0 * fwd

    def bytes(self, mode: str, itemsize: int) -> float:
        k = sum(self.widths)
        fwd = (self.rows * k + self.out_features * k + self.rows * self.out_features) * itemsize
        return fwd if mode == "fwd" else 3 * fwd


def concat_linear_cases(
    full: bool | None = None, device: torch.device | None = None
) -> list[ConcatLinearCase]:
    device = device or bench_device()
    rows = 8192 if (device.type == "cuda" or full_size_requested(full)) else 2048
    return [ConcatLinearCase(rows, (768, 512, 256), n) for n in (128, 256, 1024)]


# ------------------------------------------------------------------------------------------------
# Callables
# ------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A benchmark callable plus what the report needs to know about it."""

    fn: Callable[[], object]
    flops: float
    bytes: float
    info: dict = field(default_factory=dict)


def _attention_inputs(case: AttentionCase, device, dtype, requires_grad):
    gen = torch.Generator(device="cpu").manual_seed(0)
    hd = case.heads * case.head_dim

    # Shaped as projection outputs: [B, L, H*D] viewed as [B, L, H, D] (no copy).
    def make(length):
        t = torch.randn(case.batch, length, hd, generator=gen).to(device=device, dtype=dtype)
        return t.view(case.batch, length, case.heads, case.head_dim).requires_grad_(requires_grad)

    return make(case.lq), make(case.lk), make(case.lk)


def _sdpa(q, k, v, kv_lens):
    mask = None
    if kv_lens is not None:
        lk = k.shape[1]
        mask = (torch.arange(lk, device=q.device)[None, :] < kv_lens[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def _attention_forward(provider: str) -> Callable:
    if provider == "mmcore":
        from mmcore_kernels import cross_attention

        return lambda q, k, v, kv_lens: cross_attention(q, k, v, kv_lens=kv_lens)
    if provider == "sdpa":
        return _sdpa
    if provider == "naive":
        return lambda q, k, v, kv_lens: reference.cross_attention_naive(q, k, v, kv_lens=kv_lens)
    raise ValueError(f"unknown cross_attention provider {provider!r}; expected one of {ATTENTION_PROVIDERS}")


def sdpa_backend_name(fn: Callable[[], object]) -> str:
    """Which SDPA implementation ``fn`` ends up running, read from the profiler's op names."""
    names = {
        "_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
        "_scaled_dot_product_flash_attention": "flash",
        "_scaled_dot_product_efficient_attention": "efficient",
        "_scaled_dot_product_cudnn_attention": "cudnn",
        "_scaled_dot_product_attention_math": "math",
        "_scaled_dot_product_fused_attention_overrideable": "overrideable",
    }
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    seen = {evt.key.split("::")[-1] for evt in prof.key_averages()}
    found = [label for op, label in names.items() if op in seen]
    return ", ".join(found) if found else "none"


def make_attention_fn(case: AttentionCase, provider: str, mode: str, device=None, dtype=None) -> Prepared:
    device = device or bench_device()
    dtype = dtype or _bench_dtype(device)
    forward = _attention_forward(provider)
    q, k, v = _attention_inputs(case, device, dtype, requires_grad=(mode != "fwd"))
    kv_lens = case.kv_lens(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    info = {"shape": f"B={case.batch} H={case.heads} Lq={case.lq} Lk={case.lk} D={case.head_dim}"}
    if provider in ("sdpa", "mmcore"):
        info["sdpa_backend"] = sdpa_backend_name(lambda: forward(q, k, v, kv_lens))
    if mode == "fwd":

        def fn():
            with torch.no_grad():
                return forward(q, k, v, kv_lens)

    else:
        grad = torch.randn(case.batch, case.lq, case.heads, case.head_dim, device=device, dtype=dtype)

        def fn():
            q.grad = k.grad = v.grad = None
            forward(q, k, v, kv_lens).backward(grad)

    return Prepared(fn, case.flops(mode), case.bytes(mode, itemsize), info)


def make_concat_linear_fn(
    case: ConcatLinearCase, provider: str, mode: str, device=None, dtype=None
) -> Prepared:
    device = device or bench_device()
    dtype = dtype or _bench_dtype(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    grad_on = mode != "fwd"
    xs = [
        torch.randn(case.rows, w, generator=gen).to(device, dtype).requires_grad_(grad_on)
        for w in case.widths
    ]
    k = sum(case.widths)
    weight = (torch.randn(case.out_features, k, generator=gen) / math.sqrt(k)).to(device, dtype)
    weight.requires_grad_(grad_on)
    bias = (
        torch.zeros(case.out_features, device=device, dtype=dtype, requires_grad=grad_on)
        if case.bias
        else None
    )

    if provider in ("mmcore", "mmcore-triton"):
        from mmcore_kernels import concat_linear

        chosen = "triton" if provider == "mmcore-triton" else None

        def forward():
            return concat_linear(xs, weight, bias, backend=chosen)

    elif provider == "cat+linear":

        def forward():
            return reference.concat_linear_reference(xs, weight, bias, method="cat")

    elif provider == "addmm":

        def forward():
            return reference.concat_linear_reference(xs, weight, bias, method="addmm")

    else:
        raise ValueError(
            f"unknown concat_linear provider {provider!r}; expected one of {CONCAT_LINEAR_PROVIDERS}"
        )

    if mode == "fwd":

        def fn():
            with torch.no_grad():
                return forward()

    else:
        grad = torch.randn(case.rows, case.out_features, device=device, dtype=dtype)
        params = [*xs, weight] + ([bias] if bias is not None else [])

        def fn():
            for p in params:
                p.grad = None
            forward().backward(grad)

    itemsize = torch.empty((), dtype=dtype).element_size()
    return Prepared(fn, case.flops(mode), case.bytes(mode, itemsize), {"shape": case.id})


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------


def measure(
    fn: Callable[[], object], device: torch.device, *, min_time: float = 0.3, max_reps: int = 50
) -> float:
    """Median milliseconds per call: ``do_bench`` on CUDA, repeated ``perf_counter`` on CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()  # warm-up (allocator, lazy init, one-time dispatch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak extra CUDA memory (MiB) of one call, above what was allocated before it; None on CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


_BASELINES: dict[tuple, float] = {}


def baseline_ms(key: tuple, make_baseline: Callable[[], Prepared], device: torch.device) -> float:
    """Median ms of a baseline provider, measured once per ``key`` per process (shared by the
    pytest-benchmark tests of one case, which each report their ratio to it)."""
    if key not in _BASELINES:
        _BASELINES[key] = measure(make_baseline().fn, device)
    return _BASELINES[key]


def run_pytest_benchmark(
    benchmark,
    prepared: Prepared,
    device: torch.device,
    *,
    mode: str,
    group: str,
    baseline: float | None = None,
) -> None:
    """Time ``prepared.fn`` with the pytest-benchmark fixture and fill ``benchmark.extra_info``.

    pytest-benchmark's own rounds give its table (on CUDA each call is followed by a synchronize,
    so the wall time is the GPU time). ``extra_info`` gets the median of :func:`measure`
    (``do_bench`` on CUDA), TFLOP/s, GB/s, the ratio to the baseline (baseline ms / ms, > 1 =
    faster), and for fwd+bwd the peak extra CUDA memory.
    """
    fn = prepared.fn
    if device.type == "cuda":

        def timed():
            fn()
            torch.cuda.synchronize()

    else:
        timed = fn
    benchmark.group = group
    benchmark(timed)
    if getattr(benchmark, "disabled", False):
        return  # --benchmark-disable: ran once as a smoke test, no numbers to report
    ms = measure(fn, device)
    info = {
        **prepared.info,
        "device": device.type,
        "ms_median": ms,
        "timer": "triton.testing.do_bench median" if device.type == "cuda" else "perf_counter median",
        "tflops": prepared.flops / (ms * 1e-3) / 1e12,
        "gbps": prepared.bytes / (ms * 1e-3) / 1e9,
    }
    if baseline is not None:
        info["baseline_ms"] = baseline
        info["ratio_to_baseline"] = baseline / ms
    if mode != "fwd":
        info["peak_mem_mb"] = peak_memory_mb(fn, device)
    benchmark.extra_info.update(info)


def _row(op, case_id, mode, provider, prepared: Prepared, ms: float, device, dtype) -> dict:
    row = {
        "op": op,
        "case": case_id,
        "mode": mode,
        "provider": provider,
        "device": device.type,
        "dtype": str(dtype).replace("torch.", ""),
        "ms": ms,
        "tflops": prepared.flops / (ms * 1e-3) / 1e12,
        "gbps": prepared.bytes / (ms * 1e-3) / 1e9,
        **prepared.info,
    }
    return row


def run(
    full: bool = False,
    ops: Sequence[str] = OPS,
    file: TextIO | None = sys.stdout,
    *,
    modes: Sequence[str] = MODES,
) -> list[dict]:
    """Run the comparison table; print it to ``file`` (None: print nothing) and return the rows.

    Each row: op, case, mode, provider, device, dtype, ms, tflops, gbps, ratio (baseline ms /
    this ms; > 1 means faster than the baseline), peak_mem_mb (CUDA fwd+bwd), sdpa_backend
    (attention providers that call SDPA), shape.
    """
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; expected a subset of {list(OPS)}")
    bad_modes = [m for m in modes if m not in MODES]
    if bad_modes:
        raise ValueError(f"unknown modes {bad_modes}; expected a subset of {list(MODES)}")
    device = bench_device()
    dtype = _bench_dtype(device)
    full = full_size_requested(full or None)
    rows: list[dict] = []
    work: list[tuple[str, object, Sequence[str], Callable, str]] = []
    if "cross_attention" in ops:
        for case in attention_cases(full, device):
            work.append(("cross_attention", case, ATTENTION_PROVIDERS, make_attention_fn, "sdpa"))
    if "concat_linear" in ops:
        providers = CONCAT_LINEAR_PROVIDERS if device.type == "cuda" else ("mmcore", "cat+linear", "addmm")
        for case in concat_linear_cases(full, device):
            work.append(("concat_linear", case, providers, make_concat_linear_fn, "cat+linear"))
    for op, case, providers, make, baseline in work:
        for mode in modes:
            group = []
            for provider in providers:
                try:
                    prepared = make(case, provider, mode, device, dtype)
                    ms = measure(prepared.fn, device)
                    row = _row(op, case.id, mode, provider, prepared, ms, device, dtype)
                    if mode != "fwd":
                        row["peak_mem_mb"] = peak_memory_mb(prepared.fn, device)
                    del prepared
                except torch.cuda.OutOfMemoryError:  # the naive provider on the long case
                    row = {
                        "op": op,
                        "case": case.id,
                        "mode": mode,
                        "provider": provider,
                        "ms": float("nan"),
                        "error": "out of memory",
                    }
                    torch.cuda.empty_cache()
                group.append(row)
            base = next((r["ms"] for r in group if r["provider"] == baseline), float("nan"))
            for r in group:
                r["ratio"] = base / r["ms"] if r["ms"] == r["ms"] and r["ms"] > 0 else float("nan")
            rows.extend(group)
            if file is not None:
                print(f"... {op} {case.id} {mode} done", file=sys.stderr, flush=True)
    if file is not None:
        print(format_table(rows), file=file, flush=True)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    headers = [
        "op",
        "case",
        "mode",
        "provider",
        "ms",
        "TFLOP/s",
        "GB/s",
        "x base",
        "peak MiB",
        "sdpa backend",
    ]
    lines = []
    for r in rows:
        peak = r.get("peak_mem_mb")
        lines.append(
            [
                r["op"],
                r["case"],
                r["mode"],
                r["provider"],
                f"{r['ms']:.3f}",
                f"{r.get('tflops', float('nan')):.3f}",
                f"{r.get('gbps', float('nan')):.1f}",
                f"{r.get('ratio', float('nan')):.2f}",
                "-" if peak is None else f"{peak:.0f}",
                r.get("sdpa_backend", r.get("error", "")),
            ]
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    if rows:
        r0 = rows[0]
        out.append(
            f"device={r0.get('device', '?')} dtype={r0.get('dtype', '?')}; 'x base' = baseline ms / ms "
            "(baseline: sdpa for cross_attention, cat+linear for concat_linear)"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/kernel_bench.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--full", action="store_true", help="full-size shapes on CPU too (slow)")
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args(argv)
    run(full=args.full, ops=args.ops, modes=args.modes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
