"""One prepared GPU check of mmcore_kernels (issue 17): environment, ceilings, correctness,
benchmarks, one training step and a speed-up plot, in one call, within a fixed time budget.

Usage::

    OUT=/some/dir bash benchmarks/gpu_check.sh [options]     # installs the project, then runs this
    python benchmarks/gpu_check.py [--out DIR] [--dry-run] [--stages env,ceilings,...]
                                   [--budget SECONDS] [--stage-budget NAME=SECONDS ...] [--rounds N]

On the device tool (one NVIDIA H200; the tool sets ``$OUT``), the whole check is one call::

    run(command="bash benchmarks/gpu_check.sh", timeout_s=540)

It ends within ``--budget`` seconds (default 480 s, the install included when started through
``gpu_check.sh``), which leaves room in a 15-minute lease for one shorter rerun, e.g.
``bash benchmarks/gpu_check.sh --stages benchmarks,plot --budget 240`` issued while the machine is
still warm (30 s). Everything lands in ``$OUT`` (or ``--out``), four files, under the tool's limit of
eight: ``gpu_check.json`` (every number), ``gpu_check.log`` (install + every stage's output,
Triton's autotuning choices included), ``gpu_check_table.txt`` (the table printed last) and
``gpu_check_speedup.png`` (speed-up vs sequence length per op, for the README).

Stages, in order, each in its own subprocess with its own time budget (``STAGE_BUDGET_S``), capped
by what is left of the global budget. A stage also checks the time between shapes and skips (and
lists) what no longer fits; one that overruns is killed and reported with the rows it had
finished; one that raises is reported. Neither is fatal: later stages still run.

1. ``env``: device name, capability, SM count, memory, L2, driver, CUDA/cuDNN/torch/triton
   versions, clocks (read-only ``nvidia-smi`` queries; nothing on the card is changed).
2. ``ceilings``: a bf16 8192^3 matrix product (TFLOP/s) and a 2 GiB device-to-device copy (GB/s,
   bytes read + written), random data, medians; the benchmark rows are set against these.
3. ``compile``: fills Triton's on-disk cache with every kernel build the later stages use, in
   parallel processes (one per core), by running small "mirror" problems (same dtypes, masks,
   head dims, schedule classes and integer divisibility) through the real launchers. Autotuning
   compiles every config of a list on first use (24 kernels for a long attention at D = 64),
   ~1-2 s each: serially, inside the timed stages, that would eat their budgets.
4. ``correctness``: ``cross_attention`` and ``concat_linear`` forced to the Triton backend, bf16
   and fp16, on the large shapes (B=32, H=12, Lq up to 2048, Lk up to 4096, D in {64, 80, 128},
   ragged ``kv_lens``, bool key masks, all-masked samples), forward and every gradient, against
   float64 references. The comparison is the kernel tests' own (``tests/kernels``:
   ``reference_grads``, ``make_mask``, ``assert_close`` with their per-dtype ``TOL``), plus the
   relative Frobenius error ``|a - ref| / |ref|`` against ``REL_ERR_MAX``. Every floating tensor
   the launchers allocate (``torch.empty`` / ``Tensor.new_empty``) is filled with NaN for the
   checked run (after one warm-up run that compiles and autotunes), so an element a kernel fails
   to write shows up as NaN anywhere in the full batch. The float64 reference of a B=32 attention
   would need ~26 GB per score matrix, so it is computed on the samples ``REF_SAMPLES`` (first,
   second, last: the all-masked samples are among them); attention is independent per sample, so
   those slices of out, dq, dk, dv are exact references for the same slices of the full run.
5. ``benchmarks``: ``cross_attention`` (Triton) vs SDPA forced to each backend (flash, efficient,
   cudnn, math; the best that runs is the baseline, and which one it was is recorded, as is the
   backend SDPA picks by itself) vs naive softmax(QK^T)V; unmasked and masked (~30% padding, as
   ``kv_lens`` for mmcore and the same bool mask for SDPA); forward and forward+backward; a
   short-query forward (Lq = 1, 4, 16); ``concat_linear`` (auto and forced Triton) vs cat +
   Linear and per-segment addmm for N in {64, 128, 256, 1024, 4096}. Times are
   ``triton.testing.do_bench`` medians (CUDA events; it clears L2 before every repetition) after
   one untimed warm-up call (compilation, autotuning); providers alternate within a case and the
   case is measured ``--rounds`` times (default 2): the spread between rounds is the noise floor
   for the ratios. TFLOP/s and GB/s count the minimum work (real keys only, each tensor moved
   once); peak memory is ``torch.cuda.max_memory_allocated`` over one call, above the inputs.
6. ``training``: one training step (forward, backward, fused AdamW) of a fusion model built from
   the project's own plugins: ``cross_attention`` fusion (197 image tokens attend to 77 text
   tokens with ragged padding; D=768, 12 heads) -> ``concat`` fusion (``concat_linear``) with the
   text's pooled vector -> linear classifier, batch 64, bf16 autocast as the trainer runs it.
   Backends: ``triton`` (kernels forced), ``auto`` (what users get), ``torch`` (SDPA and cat/addmm).
   The three start from the same weights; their first losses and gradients are compared.
7. ``plot``: ``gpu_check_speedup.png`` from the benchmark rows.

``--dry-run`` runs every code path on the CPU in about 35 s of CPU time: tiny shapes, CPU tensors, the
real Triton kernels under ``TRITON_INTERPRET=1`` (fp32 and fp16 only: the interpreter has no bf16
dot), ``perf_counter`` medians instead of CUDA events. Its numbers measure nothing; they only
prove the script runs. ``tests/kernels/test_gpu_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("env", "ceilings", "compile", "correctness", "benchmarks", "training", "plot")
#: Seconds per stage on the GPU (each also capped by what is left of ``--budget``). They sum to
#: 450 s: the 480 s budget less ~30 s for the install.
STAGE_BUDGET_S = {
    "env": 25, "ceilings": 30, "compile": 70, "correctness": 110, "benchmarks": 150, "training": 45, "plot": 20,
}
#: Per stage in ``--dry-run`` (generous: the CPU here is small and shared).
DRY_STAGE_BUDGET_S = {
    "env": 60, "ceilings": 60, "compile": 90, "correctness": 120, "benchmarks": 120, "training": 90, "plot": 60,
}
GLOBAL_BUDGET_S = 480.0
#: ``do_bench`` warm-up and repetition time (ms) per measurement: ~40 ms of repetitions gives
#: hundreds of samples of a 0.1 ms kernel; ~45 cases x ~8 providers x 2 rounds must fit in 150 s.
DO_BENCH_MS = (10, 40)
#: A stage stops starting new shapes this long before its kill time (one shape's compile + runs).
STAGE_MARGIN_S = 15.0
OUT_FILES = {
    "json": "gpu_check.json",
    "log": "gpu_check.log",
    "table": "gpu_check_table.txt",
    "png": "gpu_check_speedup.png",
}
#: Largest allowed relative Frobenius error ``|a - ref| / |ref|`` per dtype name (METHOD.md: bf16
#: operands land between 1e-3 and 1e-2, fp16 ~8x tighter, fp32 far under 1e-3). The elementwise
#: check is the kernel tests' ``assert_close`` with their ``TOL``.
REL_ERR_MAX = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}
#: Samples of a batch whose float64 reference is computed (negative = from the end).
REF_SAMPLES = (0, 1, -1)
#: Training step: first-step loss and gradient agreement between backends (relative error).
TRAIN_REL_ERR_MAX = {"float32": 1e-3, "bfloat16": 5e-2}
#: Targets from issue 17: (min ratio) [moonshot].
TARGETS = {
    "masked_fwd_bwd_vs_sdpa": (1.5, 2.0),
    "short_query_fwd_vs_best_sdpa": (1.0, 1.2),
    "short_query_fwd_pct_copy_bw": (70.0, 85.0),
    "concat_fwd_bwd_n_le_256": (1.3, None),
    "concat_never_below": (0.95, None),
}


# ------------------------------------------------------------------------------------------------
# Stage plumbing (child side)
# ------------------------------------------------------------------------------------------------


class Recorder:
    """A stage's results, rewritten atomically after every item so a killed stage keeps its rows."""

    def __init__(self, stage: str, path: Path, deadline: float) -> None:
        self.path = path
        self.deadline = deadline
        self.t0 = time.time()
        self.data: dict = {"stage": stage, "status": "running", "items": [], "skipped": []}
        self.flush()

    def time_left(self) -> float:
        return self.deadline - time.time()

    def add(self, item: dict) -> None:
        self.data["items"].append(item)
        self.flush()

    def skip(self, label: str, why: str) -> None:
        self.data["skipped"].append({"item": label, "why": why})
        self.flush()

    def finish(self, status: str, **extra) -> None:
        self.data.update(extra)
        self.data["status"] = status
        self.flush()

    def flush(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self.t0, 3)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_json_default))
        os.replace(tmp, self.path)


def _json_default(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return str(obj)


@dataclass
class Ctx:
    """What every stage needs: device, dtypes, timer, where to write."""

    dry: bool
    out: Path
    scratch: Path
    rounds: int
    device: object = None  # torch.device, set once torch is imported
    log_lines: list = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def median_ms(self, fn: Callable[[], object]) -> float:
        """Median ms of ``fn`` (warmed up by the caller): CUDA-event ``do_bench`` (L2 cleared before
        each repetition) on CUDA, ``perf_counter`` around synchronous calls on the CPU."""
        if self.cuda:
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=DO_BENCH_MS[0], rep=DO_BENCH_MS[1], return_mode="median"))
        times: list[float] = []
        for _ in range(2):  # the dry run only proves the path runs
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    def peak_mib(self, fn: Callable[[], object]) -> float | None:
        """Peak CUDA memory of one call above what was allocated before it (MiB); None on CPU."""
        import torch

        if not self.cuda:
            return None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)

    def first_call_s(self, fn: Callable[[], object]) -> float:
        """Run ``fn`` once (compile, autotune, lazy init) and return the wall time in seconds."""
        t0 = time.perf_counter()
        fn()
        self.sync()
        return round(time.perf_counter() - t0, 3)

    def free(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"


def _load_test_module(filename: str):
    """A module of tests/kernels by path (tests/ is not a package): its helpers are the reference."""
    path = ROOT / "tests" / "kernels" / filename
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------
# Stage 1: environment
# ------------------------------------------------------------------------------------------------


def _run_quiet(cmd: list[str], timeout: float = 15.0) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


_SMI_FIELDS = (
    "name", "driver_version", "pstate", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
    "power.draw", "power.limit", "temperature.gpu", "memory.total", "memory.used",
)


def stage_env(ctx: Ctx, rec: Recorder) -> str:
    import torch

    info: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "dry_run": ctx.dry,
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as exc:  # a broken triton install is a finding, not a crash
        info["triton"] = f"unavailable ({_error_text(exc)})"
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["allow_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            l2_cache_mib=round(getattr(props, "L2_cache_size", 0) / 2**20, 1) or None,
            device_count=torch.cuda.device_count(),
        )
        smi = _run_quiet(["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader"])
        if smi:
            values = [v.strip() for v in smi.splitlines()[0].split(",")]
            info["nvidia_smi"] = dict(zip(_SMI_FIELDS, values, strict=False))
            info["driver"] = info["nvidia_smi"].get("driver_version")
        else:
            try:
                import pynvml

                pynvml.nvmlInit()
                info["driver"] = pynvml.nvmlSystemGetDriverVersion()
                handle = pynvml.nvmlDeviceGetHandleByIndex(0)
                info["clocks_mhz"] = {
                    "sm": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                    "sm_max": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
                    "mem": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
                }
            except Exception as exc:
                info["driver"] = f"unknown ({_error_text(exc)})"
    else:
        info.update(device=f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
                    sm_count=None, driver=None)
    import mmcore_kernels

    info["mmcore_kernels_path"] = str(Path(mmcore_kernels.__file__).parent)
    info["available_backends"] = mmcore_kernels.available_backends(ctx.device)
    info["git_commit"] = _run_quiet(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    info["git_dirty_files"] = len((_run_quiet(["git", "-C", str(ROOT), "status", "--porcelain"]) or "").splitlines())
    rec.data["info"] = info
    rec.add({"name": "environment", "ok": True})
    return "ok"


# ------------------------------------------------------------------------------------------------
# Stage 2: ceilings
# ------------------------------------------------------------------------------------------------


def _matmul_ceiling(ctx: Ctx, n: int, dtype) -> dict:
    import torch

    g = torch.Generator(device=ctx.device).manual_seed(1)
    a = torch.randn(n, n, device=ctx.device, dtype=dtype, generator=g)  # random data: zeros run faster
    b = torch.randn(n, n, device=ctx.device, dtype=dtype, generator=g)
    c = torch.empty(n, n, device=ctx.device, dtype=dtype)

    def matmul():
        torch.mm(a, b, out=c)

    ctx.first_call_s(matmul)
    runs = [ctx.median_ms(matmul) for _ in range(max(1, ctx.rounds))]
    return {"name": "matmul", "shape": f"{n}x{n}x{n}", "dtype": _dtype_name(dtype), "ms_runs": runs,
            "tflops": 2.0 * n**3 / (min(runs) * 1e-3) / 1e12}


def stage_ceilings(ctx: Ctx, rec: Recorder) -> str:
    import torch

    rec.add(_matmul_ceiling(ctx, 256 if ctx.dry else 8192, torch.float32 if ctx.dry else torch.bfloat16))
    ctx.free()
    nbytes = (8 if ctx.dry else 2048) * 2**20
    g = torch.Generator(device=ctx.device).manual_seed(2)
    src = torch.randn(nbytes // 2, device=ctx.device, dtype=torch.bfloat16 if ctx.cuda else torch.float16,
                      generator=g)
    dst = torch.empty_like(src)

    def copy_():
        dst.copy_(src)

    ctx.first_call_s(copy_)
    runs = [ctx.median_ms(copy_) for _ in range(max(1, ctx.rounds))]
    best = min(runs)
    rec.add({
        "name": "copy", "bytes": nbytes, "ms_runs": runs,
        "gbps": 2.0 * nbytes / (best * 1e-3) / 1e9,  # bytes read + bytes written
    })
    return "ok"


# ------------------------------------------------------------------------------------------------
# Stage 4: correctness
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def poisoned_allocations() -> Iterator[dict]:
    """Fill every floating tensor made by ``torch.empty`` / ``Tensor.new_empty`` with NaN.

    The Triton launchers allocate their outputs (out, lse, dq, dk, dv, delta, concat_linear's Y and
    dW) that way; with the poison, an element a kernel does not write stays NaN instead of holding
    whatever the allocator's memory held. ``counter["tensors"]`` says how many were poisoned (0
    would mean the check saw nothing).
    """
    import torch

    counter = {"tensors": 0}
    orig_empty, orig_new_empty = torch.empty, torch.Tensor.new_empty

    def _poison(t):
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            t.fill_(float("nan"))
            counter["tensors"] += 1
        return t

    def empty(*args, **kwargs):
        return _poison(orig_empty(*args, **kwargs))

    def new_empty(self, *args, **kwargs):
        return _poison(orig_new_empty(self, *args, **kwargs))

    torch.empty = empty
    torch.Tensor.new_empty = new_empty
    try:
        yield counter
    finally:
        torch.empty = orig_empty
        torch.Tensor.new_empty = orig_new_empty


@dataclass(frozen=True)
class AttnCheck:
    dtype: str
    b: int
    h: int
    lq: int
    lk: int
    d: int
    mask: str  # one of the tests' MASKS: none, kv_lens, kpm, both, all_masked

    @property
    def label(self) -> str:
        return f"attn {self.dtype} B{self.b} H{self.h} Lq{self.lq} Lk{self.lk} D{self.d} {self.mask}"


@dataclass(frozen=True)
class ConcatCheck:
    dtype: str
    lead: tuple
    widths: tuple
    n: int
    bias: bool = True
    strided: bool = False

    @property
    def label(self) -> str:
        lead = "x".join(map(str, self.lead))
        widths = "+".join(map(str, self.widths))
        return f"concat {self.dtype} M{lead} K{widths} N{self.n}{' strided' if self.strided else ''}"


def correctness_cases(dry: bool) -> list:
    """Most important first: a stage short of time drops the tail. Every D, both half dtypes, every
    mask kind and every schedule class (long/long, short queries, short keys) appear."""
    if dry:
        half, full = "float16", "float32"
        return [
            AttnCheck(full, 3, 2, 33, 70, 64, "kv_lens"),
            AttnCheck(half, 3, 2, 7, 70, 80, "all_masked"),
            AttnCheck(half, 2, 2, 20, 9, 128, "both"),
            ConcatCheck(half, (40,), (48, 32, 16), 64),
            ConcatCheck(full, (2, 9), (13, 31, 5, 17, 9, 3, 8, 8, 4, 5), 40, strided=True),
        ]
    bf, fp = "bfloat16", "float16"
    return [
        AttnCheck(bf, 32, 12, 2048, 4096, 128, "kv_lens"),
        AttnCheck(fp, 32, 12, 2048, 4096, 64, "all_masked"),
        AttnCheck(bf, 32, 12, 1024, 4096, 80, "both"),
        ConcatCheck(bf, (8192,), (768, 512, 256), 4096),
        ConcatCheck(fp, (8192,), (768, 512, 256), 64, strided=True),
        AttnCheck(fp, 32, 12, 16, 4096, 128, "none"),
        AttnCheck(bf, 32, 12, 1, 4096, 64, "all_masked"),
        AttnCheck(fp, 32, 12, 197, 77, 80, "kv_lens"),
        AttnCheck(bf, 32, 12, 77, 197, 64, "kpm"),
        AttnCheck(fp, 32, 12, 2048, 2048, 80, "none"),
        ConcatCheck(bf, (64, 197), (768, 768), 768),
        ConcatCheck(fp, (4096,), (33, 1, 65, 127, 256, 64), 1024),
        # 10 segments: three chained launches, the middle one accumulating in place in the
        # fp32 workspace (what an autotuner re-running configs on the first call would break).
        ConcatCheck(bf, (2048,), (64, 64, 64, 64, 32, 32, 32, 32, 16, 48), 256),
    ]


def _compare(name: str, actual, expected, dtype, assert_close=None) -> dict:
    """Metrics of one tensor against its float64 reference, and the tests' elementwise verdict
    (skipped when ``assert_close`` is None: the relative error alone, computed on the device)."""
    import torch

    a = actual.detach().double()
    e = expected.detach().double().to(a.device)
    diff = a - e
    ref_norm = float(torch.linalg.vector_norm(e))
    rel = float(torch.linalg.vector_norm(diff)) / ref_norm if ref_norm > 0 else float(torch.linalg.vector_norm(diff))
    scale = max(1.0, float(e.abs().max())) if e.numel() else 1.0
    result = {
        "tensor": name,
        "rel_err": rel,
        "max_abs_err_over_scale": float(diff.abs().max()) / scale if e.numel() else 0.0,
        "rel_err_max": REL_ERR_MAX[_dtype_name(dtype)],
    }
    if assert_close is None:
        result["elementwise"] = "not checked"
    else:
        try:
            assert_close(actual, expected, dtype, name)
            result["elementwise"] = "pass"
        except AssertionError as exc:
            result["elementwise"] = "FAIL: " + " ".join(str(exc).split())[:300]
    elementwise_ok = assert_close is None or result["elementwise"] == "pass"
    result["ok"] = elementwise_ok and rel <= result["rel_err_max"]  # a NaN rel_err fails too
    return result


def _first_call_verdict(item: dict, names, first_got, want, pick, dtype) -> None:
    """The warm-up call compiles and autotunes: the autotuner runs every config on the real output
    buffers, so a kernel that accumulates into its output would be wrong on that call only.
    Its results are checked too (relative error; the poisoned run gets the full check)."""
    import torch

    item["first_call_nan_counts"] = {n: int(torch.isnan(t).sum()) for n, t in zip(names, first_got, strict=True)}
    item["first_call_tensors"] = [_compare(n, pick(a), w, dtype) for n, a, w in zip(names, first_got, want, strict=True)]
    item["first_call_ok"] = not any(item["first_call_nan_counts"].values()) and all(
        t["ok"] for t in item["first_call_tensors"])


def _check_attention(ctx: Ctx, case: AttnCheck, seed: int, tests) -> dict:
    import torch

    import mmcore_kernels as mk

    dtype = getattr(torch, case.dtype)
    dev = ctx.device
    g = torch.Generator(device=dev).manual_seed(seed)
    # The layouts the fusion block hands the kernel: q a view of a [B, Lq, H*D] projection, k and v
    # slices of one fused [B, Lk, 2, H, D] key/value projection (strided, not contiguous).
    q = torch.randn(case.b, case.lq, case.h * case.d, device=dev, dtype=dtype, generator=g)
    q = q.view(case.b, case.lq, case.h, case.d)
    kv = torch.randn(case.b, case.lk, 2, case.h, case.d, device=dev, dtype=dtype, generator=g)
    k, v = kv[:, :, 0], kv[:, :, 1]
    grad_out = torch.randn(case.b, case.lq, case.h, case.d, device=dev, dtype=dtype, generator=g)
    kv_lens, kpm = tests.make_mask(case.mask, case.b, case.lk, dev, seed=seed)

    def run():
        qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
        out = mk.cross_attention(qq, kk, vv, kv_lens=kv_lens, key_padding_mask=kpm, backend="triton")
        out.backward(grad_out)
        return out.detach(), qq.grad, kk.grad, vv.grad

    t0 = time.perf_counter()
    first_got = run()
    ctx.sync()
    first = round(time.perf_counter() - t0, 3)
    with poisoned_allocations() as counter:
        got = run()
        ctx.sync()
    item: dict = {"first_call_s": first, "poisoned_tensors": counter["tensors"], "seed": seed}
    names = ("out", "dq", "dk", "dv")
    # Unwritten elements anywhere in the full batch (not only the reference samples) stay NaN.
    item["nan_counts"] = {n: int(torch.isnan(t).sum()) for n, t in zip(names, got, strict=True)}
    samples = sorted({i % case.b for i in REF_SAMPLES})
    item["ref_samples"] = samples
    idx = torch.tensor(samples, device=dev)

    def pick(t):
        return None if t is None else t.index_select(0, idx)

    want = tests.reference_grads(pick(q), pick(k), pick(v), pick(kv_lens), pick(kpm), pick(grad_out))
    item["tensors"] = [
        _compare(n, pick(a), w, dtype, tests.assert_close) for n, a, w in zip(names, got, want, strict=True)
    ]
    _first_call_verdict(item, names, first_got, want, pick, dtype)
    if case.mask == "all_masked":
        # The tests' make_mask leaves sample 0 (kv_lens = 0) and the last sample (mask all False)
        # without keys: their output and every gradient must be exactly zero.
        dead = [0] + ([case.b - 1] if case.b > 1 else [])
        item["all_masked_exact_zero"] = all(int(torch.count_nonzero(t[i])) == 0 for t in got for i in dead)
    else:
        item["all_masked_exact_zero"] = None
    item["ok"] = (
        counter["tensors"] > 0
        and not any(item["nan_counts"].values())
        and all(t["ok"] for t in item["tensors"])
        and item["all_masked_exact_zero"] is not False
        and item["first_call_ok"]
    )
    return item


def _check_concat(ctx: Ctx, case: ConcatCheck, seed: int, tests) -> dict:
    import torch
    import torch.nn.functional as F

    import mmcore_kernels as mk

    dtype = getattr(torch, case.dtype)
    xs, w, b = tests.make(case.lead, case.widths, case.n, dtype, ctx.device, bias=case.bias, seed=seed,
                          strided=case.strided)
    grad = torch.randn(*case.lead, case.n, generator=torch.Generator().manual_seed(seed + 1)).to(ctx.device, dtype)

    def run():
        xs_t = [x.detach().requires_grad_() for x in xs]
        w_t = w.detach().requires_grad_()
        b_t = None if b is None else b.detach().requires_grad_()
        out = mk.concat_linear(xs_t, w_t, b_t, backend="triton")
        out.backward(grad)
        return [out.detach(), *(x.grad for x in xs_t), w_t.grad] + ([b_t.grad] if b is not None else [])

    t0 = time.perf_counter()
    first_got = run()
    ctx.sync()
    first = round(time.perf_counter() - t0, 3)
    with poisoned_allocations() as counter:
        got = run()
        ctx.sync()
    xs_r = [x.detach().double().requires_grad_() for x in xs]
    w_r = w.detach().double().requires_grad_()
    b_r = None if b is None else b.detach().double().requires_grad_()
    ref = F.linear(torch.cat(xs_r, -1), w_r, b_r)
    ref.backward(grad.double())
    want = [ref.detach(), *(x.grad for x in xs_r), w_r.grad] + ([b_r.grad] if b is not None else [])
    names = ["out", *(f"dX[{i}]" for i in range(len(xs))), "dW"] + (["db"] if b is not None else [])
    item: dict = {"first_call_s": first, "poisoned_tensors": counter["tensors"], "seed": seed}
    item["nan_counts"] = {n: int(torch.isnan(t).sum()) for n, t in zip(names, got, strict=True)}
    item["tensors"] = [_compare(n, a, r, dtype, tests.assert_close) for n, a, r in zip(names, got, want, strict=True)]
    _first_call_verdict(item, names, first_got, want, lambda t: t, dtype)
    item["ok"] = (
        counter["tensors"] > 0
        and not any(item["nan_counts"].values())
        and all(t["ok"] for t in item["tensors"])
        and item["first_call_ok"]
    )
    return item


def stage_correctness(ctx: Ctx, rec: Recorder) -> str:
    attn_tests = _load_test_module("test_cross_attention_triton.py")
    concat_tests = _load_test_module("test_concat_linear_triton.py")
    rec.data["tolerances"] = {
        "rel_err_max": REL_ERR_MAX,
        "elementwise_attention": {_dtype_name(k): v for k, v in attn_tests.TOL.items()},
        "elementwise_concat_linear": {_dtype_name(k): v for k, v in concat_tests.TOL.items()},
        "note": "elementwise: |a - ref| <= atol * max(1, max|ref|) + rtol * |ref| (tests/kernels TOL)",
    }
    failed = False
    cases = correctness_cases(ctx.dry)
    for i, case in enumerate(cases):
        if rec.time_left() <= 0:
            for rest in cases[i:]:
                rec.skip(rest.label, "stage time budget")
            return "partial"
        seed = 1000 + 17 * i  # fresh inputs per case
        t0 = time.perf_counter()
        try:
            if isinstance(case, AttnCheck):
                item = _check_attention(ctx, case, seed, attn_tests)
            else:
                item = _check_concat(ctx, case, seed, concat_tests)
        except Exception as exc:
            item = {"ok": False, "error": _error_text(exc), "traceback": traceback.format_exc()[-2000:]}
        item.update(name=case.label, seconds=round(time.perf_counter() - t0, 3))
        failed |= not item["ok"]
        rec.add(item)
        ctx.free()
    return "fail" if failed else "ok"


# ------------------------------------------------------------------------------------------------
# Stage 5: benchmarks
# ------------------------------------------------------------------------------------------------

SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")


@dataclass(frozen=True)
class AttnBench:
    group: str  # "sweep", "multimodal", "short_query"
    b: int
    h: int
    lq: int
    lk: int
    d: int
    masked: bool
    mode: str  # "fwd" | "fwd+bwd"

    @property
    def label(self) -> str:
        return f"B{self.b} H{self.h} Lq{self.lq} Lk{self.lk} D{self.d}"

    def kv_lens_list(self) -> list[int]:
        # ~30% padding: lengths from 100% down to 40% of Lk (mean 70%), as kernel_bench.py does.
        if not self.masked:
            return [self.lk] * self.b
        if self.b == 1:
            return [max(1, round(0.7 * self.lk))]
        return [max(1, round((1.0 - 0.6 * i / (self.b - 1)) * self.lk)) for i in range(self.b)]

    def flops(self) -> float:
        # QK^T and PV on the real keys; the backward does 2.5x the forward's matmul work.
        fwd = 4.0 * self.h * self.lq * self.d * sum(self.kv_lens_list())
        return fwd if self.mode == "fwd" else 3.5 * fwd

    def bytes(self, itemsize: int) -> float:
        # Minimum traffic: q, o (and dO, dq) once; the real rows of k, v (and dk, dv) once.
        q = self.b * self.lq * self.h * self.d
        kv = sum(self.kv_lens_list()) * self.h * self.d
        fwd = 2 * q + 2 * kv
        return itemsize * (fwd if self.mode == "fwd" else fwd + 3 * q + 4 * kv)  # + dO, o, q read; dq, dk, dv


@dataclass(frozen=True)
class ConcatBench:
    rows: int
    widths: tuple
    n: int
    mode: str

    @property
    def label(self) -> str:
        return f"M{self.rows} K{'+'.join(map(str, self.widths))} N{self.n}"

    def flops(self) -> float:
        fwd = 2.0 * self.rows * sum(self.widths) * self.n
        return fwd if self.mode == "fwd" else 3.0 * fwd

    def bytes(self, itemsize: int) -> float:
        k = sum(self.widths)
        fwd = self.rows * k + self.n * k + self.rows * self.n
        return itemsize * (fwd if self.mode == "fwd" else 3 * fwd)


def benchmark_cases(dry: bool) -> list:
    """Short queries and concat_linear first (cheap, each holds a target), then the multimodal
    attention shapes, then the sequence-length sweep (the PNG's x axis), shortest first."""
    modes = ("fwd", "fwd+bwd")
    cases: list = []
    if dry:
        b, h, d, sweep, multimodal, short_lk = 2, 1, 16, (32, 64), [], 64
        rows, ns, widths = 32, (16, 48), (16, 8)
        short_lq = (1, 4)
    else:
        b, h, d, sweep, multimodal, short_lk = 32, 12, 64, (256, 512, 1024, 2048, 4096), [(77, 197), (197, 77)], 4096
        rows, ns, widths = 8192, (64, 128, 256, 1024, 4096), (768, 512, 256)
        short_lq = (1, 4, 16)
    for lq in short_lq:
        for masked in (False, True):
            cases.append(AttnBench("short_query", b, h, lq, short_lk, 128 if not dry else d, masked, "fwd"))
    for n in ns:
        for mode in modes:
            cases.append(ConcatBench(rows, widths, n, mode))
    for lq, lk in multimodal:
        for masked in (True, False):
            for mode in modes:
                cases.append(AttnBench("multimodal", b, h, lq, lk, d, masked, mode))
    # One series at a time, the target's (masked fwd+bwd) first: time running out cuts whole series.
    for masked, mode in ((True, "fwd+bwd"), (False, "fwd"), (True, "fwd"), (False, "fwd+bwd")):
        for lk in sweep:
            cases.append(AttnBench("sweep", b, h, lk // 2, lk, d, masked, mode))
    return cases


def _attention_providers(case: AttnBench, q, k, v, kv_lens, kpm, sdpa_mask) -> list[tuple]:
    """(name, forward fn returning [B, Lq, H, D], context factory, kind)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import mmcore_kernels as mk
    from mmcore_kernels import reference

    lens = kv_lens if case.masked else None

    def mmcore_fwd():
        return mk.cross_attention(q, k, v, kv_lens=lens, backend="triton")

    def mmcore_kpm_fwd():
        return mk.cross_attention(q, k, v, key_padding_mask=kpm, backend="triton")

    def sdpa_fwd():
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=sdpa_mask)
        return out.transpose(1, 2)

    def naive_fwd():
        return reference.cross_attention_naive(q, k, v, kv_lens=lens)

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": getattr(SDPBackend, "CUDNN_ATTENTION", None),
        "math": SDPBackend.MATH,
    }
    providers = [("mmcore", mmcore_fwd, contextlib.nullcontext, "mmcore")]
    if case.masked:
        providers.append(("mmcore[mask]", mmcore_kpm_fwd, contextlib.nullcontext, "mmcore"))
    for name in SDPA_BACKENDS:
        backend = backends[name]
        if backend is None:
            continue

        def forced(backend=backend):
            return sdpa_kernel([backend])

        providers.append((f"sdpa[{name}]", sdpa_fwd, forced, "sdpa"))
    providers.append(("naive", naive_fwd, contextlib.nullcontext, "naive"))
    return providers


def _bench_attention(ctx: Ctx, case: AttnBench, seed: int) -> dict:
    import torch
    from kernel_bench import sdpa_backend_name  # benchmarks/kernel_bench.py, beside this script

    dtype = torch.float32 if ctx.dry else torch.bfloat16
    dev = ctx.device
    g = torch.Generator(device=dev).manual_seed(seed)
    grad_on = case.mode != "fwd"
    q, k, v = (
        torch.randn(case.b, length, case.h, case.d, device=dev, dtype=dtype, generator=g).requires_grad_(grad_on)
        for length in (case.lq, case.lk, case.lk)
    )
    grad = torch.randn(case.b, case.lq, case.h, case.d, device=dev, dtype=dtype, generator=g)
    kv_lens = torch.tensor(case.kv_lens_list(), device=dev, dtype=torch.int32)
    kpm = torch.arange(case.lk, device=dev)[None, :] < kv_lens[:, None]
    # Built once, outside the timed region, as a model builds it once per batch.
    sdpa_mask = kpm[:, None, None, :] if case.masked else None
    providers = _attention_providers(case, q, k, v, kv_lens, kpm, sdpa_mask)
    itemsize = torch.empty((), dtype=dtype).element_size()
    # SDPA left to choose runs one of the forced backends: which one is read off the profiler
    # rather than timed again.
    # (Probed on forward cases only: the profiler costs ~0.1 s, and fwd+bwd runs the same choice.)
    sdpa_auto = next(p[1] for p in providers if p[0].startswith("sdpa["))
    probe = (lambda: sdpa_backend_name(sdpa_auto)) if case.mode == "fwd" else None
    return _bench_providers(ctx, case, providers, (q, k, v), grad, case.flops(), case.bytes(itemsize),
                            sdpa_probe=probe)


def _concat_providers(case: ConcatBench, xs, w, bias) -> list[tuple]:
    import mmcore_kernels as mk
    from mmcore_kernels import reference

    return [
        ("mmcore", lambda: mk.concat_linear(xs, w, bias), contextlib.nullcontext, "mmcore"),
        ("mmcore-triton", lambda: mk.concat_linear(xs, w, bias, backend="triton"), contextlib.nullcontext,
         "mmcore"),
        ("cat+linear", lambda: reference.concat_linear_reference(xs, w, bias, method="cat"),
         contextlib.nullcontext, "baseline"),
        ("addmm", lambda: reference.concat_linear_reference(xs, w, bias, method="addmm"),
         contextlib.nullcontext, "other"),
    ]


def _bench_concat(ctx: Ctx, case: ConcatBench, seed: int) -> dict:
    import torch

    dtype = torch.float32 if ctx.dry else torch.bfloat16
    dev = ctx.device
    g = torch.Generator(device=dev).manual_seed(seed)
    grad_on = case.mode != "fwd"
    k = sum(case.widths)
    xs = [torch.randn(case.rows, wd, device=dev, dtype=dtype, generator=g).requires_grad_(grad_on)
          for wd in case.widths]
    w = (torch.randn(case.n, k, device=dev, dtype=dtype, generator=g) / math.sqrt(k)).requires_grad_(grad_on)
    bias = torch.randn(case.n, device=dev, dtype=dtype, generator=g).requires_grad_(grad_on)
    grad = torch.randn(case.rows, case.n, device=dev, dtype=dtype, generator=g)
    providers = _concat_providers(case, xs, w, bias)
    itemsize = torch.empty((), dtype=dtype).element_size()
    item = _bench_providers(ctx, case, providers, (*xs, w, bias), grad, case.flops(), case.bytes(itemsize))
    from mmcore_kernels import _dispatch

    item["auto_picks_triton"] = ctx.cuda and _dispatch.concat_linear_prefers_triton(
        case.rows, case.n, list(case.widths), dtype)
    return item


def _bench_providers(ctx: Ctx, case, providers, leaves, grad, flops, nbytes, sdpa_probe=None) -> dict:
    """Time every provider of one case, alternating providers, ``ctx.rounds`` rounds."""
    import torch

    def timed_fn(forward):
        if case.mode == "fwd":
            def fn():
                with torch.no_grad():
                    return forward()
        else:
            def fn():
                for t in leaves:
                    t.grad = None
                forward().backward(grad)
        return fn

    rows: dict[str, dict] = {}
    first_out = None
    # Every provider must compute the same function (a fast wrong baseline would flatter nobody):
    # its output against the first provider's (mmcore, checked in the correctness stage).
    agree_max = 2 * REL_ERR_MAX[_dtype_name(grad.dtype)]
    for name, forward, context, kind in providers:
        row = {"provider": name, "kind": kind}
        fn = timed_fn(forward)
        try:
            with context():
                row["first_call_s"] = ctx.first_call_s(fn)
                row["peak_mib"] = ctx.peak_mib(fn)
                with torch.no_grad():
                    out = forward().float()
            if first_out is None:
                first_out = out
            else:
                rel = float(torch.linalg.vector_norm(out - first_out) / torch.linalg.vector_norm(first_out))
                row["rel_err_vs_" + providers[0][0]] = rel
                if not rel <= agree_max:  # NaN fails too
                    row["error"] = f"wrong result: rel err {rel:.2e} vs {providers[0][0]} (> {agree_max:.0e})"
            del out
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of memory"
            ctx.free()
        except Exception as exc:  # e.g. an SDPA backend that does not take this mask/shape/device
            row["error"] = "unsupported: " + _error_text(exc) if "sdpa[" in name else _error_text(exc)
        rows[name] = row
    for _ in range(max(1, ctx.rounds)):
        for name, forward, context, _kind in providers:
            row = rows[name]
            if "error" in row:
                continue
            try:
                with context():
                    row.setdefault("ms_runs", []).append(ctx.median_ms(timed_fn(forward)))
            except Exception as exc:
                row["error"] = _error_text(exc)
                ctx.free()
    for row in rows.values():
        runs = row.get("ms_runs")
        if runs and "error" not in row:
            ms = statistics.median(runs)
            row["ms"] = ms
            row["spread"] = (max(runs) / min(runs) - 1.0) if len(runs) > 1 else None
            row["tflops"] = flops / (ms * 1e-3) / 1e12
            row["gbps"] = nbytes / (ms * 1e-3) / 1e9
    item: dict = {"providers": list(rows.values()), "flops": flops, "bytes": nbytes}
    if sdpa_probe is not None:
        try:
            item["sdpa_auto_backend"] = sdpa_probe()
        except Exception as exc:
            item["sdpa_auto_backend"] = f"unknown ({_error_text(exc)})"
    sdpa_ok = [r for r in rows.values() if r["kind"] == "sdpa" and "ms" in r]
    if sdpa_ok:
        best = min(sdpa_ok, key=lambda r: r["ms"])
        item["baseline"] = best["provider"]
        item["baseline_ms"] = best["ms"]
    elif "cat+linear" in rows and "ms" in rows["cat+linear"]:
        item["baseline"] = "cat+linear"
        item["baseline_ms"] = rows["cat+linear"]["ms"]
    for row in rows.values():
        if "ms" in row and item.get("baseline_ms"):
            row["x_baseline"] = item["baseline_ms"] / row["ms"]
        naive = rows.get("naive")
        if "ms" in row and naive and "ms" in naive:
            row["x_naive"] = naive["ms"] / row["ms"]
    return item


def stage_benchmarks(ctx: Ctx, rec: Recorder) -> str:
    import torch

    rec.data["dtype"] = "float32" if ctx.dry else "bfloat16"
    rec.data["timer"] = "perf_counter median (dry run)" if not ctx.cuda else \
        f"triton.testing.do_bench median (CUDA events, L2 cleared per rep), warmup={DO_BENCH_MS[0]}ms " \
        f"rep={DO_BENCH_MS[1]}ms"
    rec.data["rounds"] = ctx.rounds
    cases = benchmark_cases(ctx.dry)

    def describe(case) -> str:
        masked = f" {'masked' if case.masked else 'unmasked'}" if isinstance(case, AttnBench) else ""
        return f"{'attn' if isinstance(case, AttnBench) else 'concat'} {case.label} {case.mode}{masked}"

    for i, case in enumerate(cases):
        label = describe(case)
        if rec.time_left() <= 0:
            for rest in cases[i:]:
                rec.skip(describe(rest), "stage time budget")
            return "partial"
        t0 = time.perf_counter()
        try:
            if isinstance(case, AttnBench):
                item = _bench_attention(ctx, case, seed=2000 + i)
                item.update(op="cross_attention", group=case.group, masked=case.masked, lq=case.lq, lk=case.lk,
                            d=case.d, b=case.b, h=case.h)
            else:
                item = _bench_concat(ctx, case, seed=2000 + i)
                item.update(op="concat_linear", group="concat", masked=False, n=case.n, rows=case.rows)
        except Exception as exc:
            item = {"error": _error_text(exc), "traceback": traceback.format_exc()[-2000:],
                    "op": "cross_attention" if isinstance(case, AttnBench) else "concat_linear"}
        item.update(name=label, case=case.label, mode=case.mode, seconds=round(time.perf_counter() - t0, 3))
        rec.add(item)
        del item
        ctx.free()
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats()
    return "ok"


# ------------------------------------------------------------------------------------------------
# Stage 3 ("compile"): fill Triton's on-disk kernel cache in parallel
# ------------------------------------------------------------------------------------------------
#
# Each autotuned kernel set compiles every config of its list on first use: 24 kernels for a
# long-sequence attention with D = 64 (8 configs each of fwd, dK/dV, dQ), 12 for D = 80/128, 7
# for concat_linear; about 1-2 s each (one sm_90 forward compiled in 1.2-2.3 s through Triton's
# ptxas on a 2-core CPU). Serially, inside the timed stages, that would eat their budgets. The
# compiled binaries depend on the dtypes, the constexprs (D, which masks) and Triton's
# specialisation of integer arguments (== 1, divisible by 16), not on the sizes; so small
# "mirror" problems with the same dtypes, masks, schedule class and divisibility, run through the
# real launchers in parallel processes, compile exactly the kernels the later stages need. Those
# stages then find them in the cache (autotuning there still benchmarks the configs on their own
# shapes; the mirrors' tuning results are for other keys and are never reused).


def _mirror(length: int, short_limit: int) -> int:
    """A small length with the same schedule class and integer specialisation as ``length``."""
    if length <= short_limit:
        return length  # short sides use one tile of next_pow2(length): keep the length itself
    return short_limit + (16 if length % 16 == 0 else 17)


def warm_specs(dry: bool) -> list[dict]:
    """The distinct kernel builds of the correctness, benchmark and training stages, as mirrors."""
    specs: dict[tuple, dict] = {}

    def attn(dtype, h, lq, lk, d, kv_lens, kpm, bwd):
        spec = {"op": "attn", "dtype": dtype, "b": 2, "h": h, "lq": _mirror(lq, 64), "lk": _mirror(lk, 128),
                "d": d, "kv_lens": kv_lens, "kpm": kpm, "bwd": bwd}
        key = tuple(v for k, v in spec.items() if k != "bwd")
        if key in specs:
            specs[key]["bwd"] |= bwd
        else:
            specs[key] = spec

    def concat(dtype, rows, widths, n, bias, strided):
        # N only matters through its divisibility (one build serves every N that is a multiple of 16).
        spec = {"op": "concat", "dtype": dtype, "rows": _mirror(rows, 16), "widths": list(widths),
                "n": _mirror(n, 16), "bias": bias, "strided": strided}
        specs.setdefault(tuple(map(str, spec.values())), spec)

    for case in correctness_cases(dry):
        if isinstance(case, AttnCheck):
            # The tests' make_mask: kv_lens int64 for these kinds; a bool mask for kpm/both, and
            # for all_masked when B > 1 (the mirror has B = 2, as every real case has B > 1).
            has_lens = case.mask in ("kv_lens", "both", "all_masked")
            attn(case.dtype, case.h, case.lq, case.lk, case.d, "int64" if has_lens else None,
                 case.mask in ("kpm", "both", "all_masked"), True)
        else:
            concat(case.dtype, math.prod(case.lead), case.widths, case.n, case.bias, case.strided)
    dtype = "float32" if dry else "bfloat16"
    for case in benchmark_cases(dry):
        if isinstance(case, AttnBench):
            bwd = case.mode != "fwd"
            attn(dtype, case.h, case.lq, case.lk, case.d, "int32" if case.masked else None, False, bwd)
            if case.masked:
                attn(dtype, case.h, case.lq, case.lk, case.d, None, True, bwd)
        else:
            concat(dtype, case.rows, case.widths, case.n, True, False)
    # The training step's attention: image queries (197) on text keys (77), mask + int32 lengths;
    # its concat fusion gets LayerNorm outputs, which autocast leaves in fp32.
    if dry:
        attn("float32", 2, 9, 5, 16, None, True, True)
    else:
        attn("bfloat16", 12, 197, 77, 64, "int32", True, True)
        concat("float32", 64, (768, 768), 768, True, False)
    return list(specs.values())


def _warm_one(spec: dict) -> dict:
    """Run one mirror through the public ops with backend="triton" (a worker process)."""
    import torch

    import mmcore_kernels as mk

    t0 = time.perf_counter()
    result = dict(spec)
    try:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, spec["dtype"])
        if spec["op"] == "attn":
            b, h, d = spec["b"], spec["h"], spec["d"]
            q = torch.randn(b, spec["lq"], h, d, device=dev, dtype=dtype, requires_grad=spec["bwd"])
            k, v = (torch.randn(b, spec["lk"], h, d, device=dev, dtype=dtype, requires_grad=spec["bwd"])
                    for _ in range(2))
            lens = spec["kv_lens"]
            kv_lens = torch.full((b,), spec["lk"], device=dev, dtype=getattr(torch, lens)) if lens else None
            kpm = torch.ones(b, spec["lk"], device=dev, dtype=torch.bool) if spec["kpm"] else None
            out = mk.cross_attention(q, k, v, kv_lens=kv_lens, key_padding_mask=kpm, backend="triton")
            if spec["bwd"]:
                out.backward(torch.randn_like(out))
        else:
            xs = []
            for w in spec["widths"]:
                x = torch.randn(spec["rows"], w + (3 if spec["strided"] else 0), device=dev, dtype=dtype)
                xs.append(x[:, 1 : w + 1] if spec["strided"] else x)
            weight = torch.randn(spec["n"], sum(spec["widths"]), device=dev, dtype=dtype)
            bias = torch.randn(spec["n"], device=dev, dtype=dtype) if spec["bias"] else None
            mk.concat_linear(xs, weight, bias, backend="triton")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        result["ok"] = True
    except Exception as exc:
        result.update(ok=False, error=_error_text(exc))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["name"] = spec["op"] + " " + " ".join(f"{k}={v}" for k, v in spec.items() if k != "op")
    return result


def stage_compile(ctx: Ctx, rec: Recorder) -> str:
    import multiprocessing

    specs = warm_specs(ctx.dry)
    # Compiling is single-threaded CPU work (ptxas): one process per core, two cores left over.
    workers = max(1, min(len(specs), 2 if ctx.dry else 14, (os.cpu_count() or 2) - 2))
    rec.data["workers"] = workers
    rec.data["specs"] = len(specs)
    done: set[int] = set()
    failed = False
    # spawn: CUDA cannot be used in a forked child; each worker imports torch and compiles on its own.
    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        pending = {i: pool.apply_async(_warm_one, (spec,)) for i, spec in enumerate(specs)}
        while pending:
            for i in [i for i, r in pending.items() if r.ready()]:
                item = pending.pop(i).get()
                failed |= not item["ok"]
                done.add(i)
                rec.add(item)
            if pending and rec.time_left() <= 0:
                for i in sorted(pending):
                    rec.skip(f"{specs[i]['op']} {specs[i]}", "stage time budget")
                pool.terminate()
                return "partial"
            time.sleep(0.2)
    finally:
        pool.terminate()
        pool.join()
    return "fail" if failed else "ok"


# ------------------------------------------------------------------------------------------------
# Stage 6: one training step
# ------------------------------------------------------------------------------------------------


def _fusion_model(dim: int, heads: int, classes: int):
    """cross_attention fusion (image queries, text keys) -> concat fusion with the text's pooled
    vector (concat_linear) -> linear classifier: the project's own plugins."""
    import torch
    from torch import nn

    from mmcore_plugins.fusions.attention import CrossAttentionFusion
    from mmcore_plugins.fusions.concat import ConcatFusion

    class FusionModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attend = CrossAttentionFusion({"image": dim, "text": dim}, dim=dim, heads=heads, layers=1,
                                               query="image")
            self.combine = ConcatFusion({"fused": dim, "text": dim}, dim=dim)
            self.classifier = nn.Linear(dim, classes)

        def forward(self, image, text) -> torch.Tensor:
            fused = self.attend({"image": image, "text": text})
            combined = self.combine({"fused": fused, "text": text})
            return self.classifier(combined.pooled)

    return FusionModel()


def stage_training(ctx: Ctx, rec: Recorder) -> str:
    import torch
    import torch.nn.functional as F

    import mmcore_kernels as mk
    from mmcore import Features

    if ctx.dry:
        batch, n_image, n_text, dim, heads, dtype, steps = 2, 9, 5, 32, 2, torch.float32, 1
    else:
        batch, n_image, n_text, dim, heads, dtype, steps = 64, 197, 77, 768, 12, torch.bfloat16, 10
    classes = 10
    dev = ctx.device
    rec.data["setup"] = {
        "model": "CrossAttentionFusion(image queries -> text keys, 1 layer) -> ConcatFusion -> Linear",
        "batch": batch, "image_tokens": n_image, "text_tokens": n_text, "dim": dim, "heads": heads,
        "dtype": _dtype_name(dtype) + (" autocast, fp32 weights" if ctx.cuda else ""),
        "optimizer": "AdamW" + (" (fused)" if ctx.cuda else ""), "timed_steps_per_round": steps,
    }
    g = torch.Generator(device=dev).manual_seed(5)
    torch.manual_seed(5)
    base = _fusion_model(dim, heads, classes).to(dev)
    image = torch.randn(batch, n_image, dim, device=dev, generator=g)
    text = torch.randn(batch, n_text, dim, device=dev, generator=g)
    lengths = torch.randint(max(1, n_text // 4), n_text + 1, (batch,), device=dev, generator=g)
    text_mask = torch.arange(n_text, device=dev)[None, :] < lengths[:, None]
    labels = torch.randint(0, classes, (batch,), device=dev, generator=g)
    image_f = Features.from_tokens(image)
    text_f = Features.from_tokens(text, text_mask)
    from mmcore_kernels import _dispatch
    from mmcore_kernels.cross_attention_op import triton_cross_attention_unsupported

    probe = torch.empty(batch, n_image, heads, dim // heads, device=dev, dtype=dtype)
    rec.data["setup"]["auto_attention_backend"] = _dispatch.resolve_backend(
        "cross_attention", "auto", dev, lambda: triton_cross_attention_unsupported(probe))

    def autocast():
        return torch.autocast("cuda", dtype=dtype) if ctx.cuda else contextlib.nullcontext()

    variants = ("torch", "auto", "triton")  # "torch" first: the reference of the agreement check
    models = {name: copy.deepcopy(base) for name in variants}
    opts = {name: torch.optim.AdamW(models[name].parameters(), lr=1e-4, fused=ctx.cuda) for name in variants}

    def step(name: str) -> torch.Tensor:
        model, opt = models[name], opts[name]
        opt.zero_grad(set_to_none=True)
        with mk.backend(name), autocast():
            loss = F.cross_entropy(model(image_f, text_f).float(), labels)
        loss.backward()
        opt.step()
        return loss

    # Same weights, same batch: the first loss and gradients of every variant against "torch".
    # A variant that raises is reported and left out; the others still run.
    first: dict = {}
    broken: dict[str, str] = {}
    for name in variants:
        model = models[name]
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        try:
            with mk.backend(name), autocast():
                loss = F.cross_entropy(model(image_f, text_f).float(), labels)
            loss.backward()
            ctx.sync()
        except Exception as exc:
            broken[name] = _error_text(exc)
            rec.add({"name": f"first step {name}", "kind": "agreement", "ok": False, "error": broken[name],
                     "traceback": traceback.format_exc()[-2000:]})
            continue
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
        first[name] = (float(loss), grads, round(time.perf_counter() - t0, 3))
    tol = TRAIN_REL_ERR_MAX[_dtype_name(dtype)]
    agree = not broken
    if "torch" in first:
        ref_loss, ref_grads, _ = first["torch"]
        for name in variants:
            if name not in first:
                continue
            loss, grads, secs = first[name]
            rel = float(torch.linalg.vector_norm(grads - ref_grads) / torch.linalg.vector_norm(ref_grads))
            ok = math.isfinite(loss) and abs(loss - ref_loss) <= tol * max(1.0, abs(ref_loss)) and rel <= tol
            agree &= ok
            rec.add({"name": f"first step {name}", "kind": "agreement", "loss": loss, "loss_torch": ref_loss,
                     "grad_rel_err_vs_torch": rel, "tolerance": tol, "ok": ok, "first_call_s": secs})
    del first
    running = [name for name in variants if name not in broken]
    for name in running:  # warm-up (compile, autotune, allocator)
        for _ in range(1 if ctx.dry else 2):
            step(name)
    ctx.sync()
    times: dict[str, list[float]] = {name: [] for name in running}
    for _ in range(max(1, ctx.rounds)):
        if rec.time_left() <= 0:
            rec.skip("further rounds", "stage time budget")
            break
        for name in running:  # variants alternate, each round
            for _ in range(steps):
                if ctx.cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    step(name)
                    end.record()
                    end.synchronize()
                    times[name].append(start.elapsed_time(end))
                else:
                    t0 = time.perf_counter()
                    step(name)
                    times[name].append((time.perf_counter() - t0) * 1e3)
    torch_ms = statistics.median(times["torch"]) if times.get("torch") else None
    for name in running:
        if not times[name]:
            continue
        ms = statistics.median(times[name])
        rec.add({"name": f"train step {name}", "kind": "timing", "variant": name, "ms": ms,
                 "ms_min": min(times[name]), "steps": len(times[name]),
                 "x_torch": torch_ms / ms if torch_ms else None,
                 "peak_mib": ctx.peak_mib(lambda name=name: step(name))})
    return "ok" if agree else "fail"


# ------------------------------------------------------------------------------------------------
# Stage 7: plot
# ------------------------------------------------------------------------------------------------


def _read_stage(scratch: Path, name: str) -> dict | None:
    path = scratch / f"stage_{name}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _provider(item: dict, name: str) -> dict:
    return next((p for p in item.get("providers", []) if p["provider"] == name), {})


def stage_plot(ctx: Ctx, rec: Recorder) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = _read_stage(ctx.scratch, "benchmarks")
    items = [i for i in (bench or {}).get("items", []) if "providers" in i]
    if not items:
        rec.data["note"] = "no benchmark rows to plot"
        return "skipped"
    env = (_read_stage(ctx.scratch, "env") or {}).get("info", {})
    panels = [
        ("cross_attention (sweep, Lq = Lk/2)", "sweep", "lk", "Lk (keys)", "best SDPA"),
        ("cross_attention short-query forward", "short_query", "lq", "Lq (queries)", "best SDPA"),
        ("concat_linear (solid: auto dispatch, dashed: Triton forced)", "concat", "n", "N (output features)",
         "cat + Linear"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2))
    drawn = 0
    for ax, (title, group, xkey, xlabel, base) in zip(axes, panels, strict=True):
        series: dict[tuple, list] = {}
        for item in items:
            if item.get("group") != group or not item.get("baseline_ms"):
                continue
            for provider in ("mmcore", "mmcore-triton"):
                ratio = _provider(item, provider).get("x_baseline")
                if ratio is not None:
                    key = (f"{item['mode']}{' masked' if item.get('masked') else ''}", provider)
                    series.setdefault(key, []).append((item[xkey], ratio))
        colors: dict[str, str] = {}
        for (label, provider), points in sorted(series.items()):
            points.sort()
            color = colors.setdefault(label, f"C{len(colors)}")
            forced = provider != "mmcore"
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=color,
                    linestyle="--" if forced else "-", label=None if forced else label)
            drawn += 1
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log", base=2)
        xs = sorted({p[0] for points in series.values() for p in points})
        if xs:
            ax.set_xticks(xs)
            ax.set_xticklabels([str(x) for x in xs], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"speed-up vs {base} (x)")
        if series:
            ax.legend(fontsize=8)
    where = env.get("device", "?")
    suffix = "DRY RUN on CPU (interpreter): not a measurement" if ctx.dry else \
        f"torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, {bench.get('dtype', '')}"
    fig.suptitle(f"mmcore_kernels speed-up, {where}; {suffix}", fontsize=10)
    fig.tight_layout()
    path = ctx.out / OUT_FILES["png"]
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rec.add({"name": "speedup plot", "path": str(path), "series": drawn})
    return "ok"


STAGE_FUNCS = {
    "env": stage_env,
    "ceilings": stage_ceilings,
    "compile": stage_compile,
    "correctness": stage_correctness,
    "benchmarks": stage_benchmarks,
    "training": stage_training,
    "plot": stage_plot,
}


def run_stage_child(args: argparse.Namespace) -> int:
    """Entry of a stage subprocess: run one stage, record it, never raise."""
    scratch = Path(args.scratch)
    rec = Recorder(args.stage, scratch / f"stage_{args.stage}.json", float(args.deadline))
    ctx = Ctx(dry=args.dry_run, out=Path(args.out), scratch=scratch, rounds=args.rounds)
    print(f"[{args.stage}] start (dry_run={args.dry_run}, {rec.time_left():.0f}s to its soft deadline)", flush=True)
    try:
        if args.stage not in ("plot", "compile"):  # these two never touch a tensor themselves
            import torch

            ctx.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            if not ctx.dry and not ctx.cuda and args.stage != "env":
                rec.finish("error", error="CUDA is not available (run with --dry-run on a CPU machine)")
                return 0
        status = STAGE_FUNCS[args.stage](ctx, rec)
        rec.finish(status)
    except Exception as exc:
        traceback.print_exc()
        rec.finish("error", error=_error_text(exc), traceback=traceback.format_exc()[-3000:])
    print(f"[{args.stage}] {rec.data['status']} in {rec.data['elapsed_s']:.1f}s", flush=True)
    return 0


# ------------------------------------------------------------------------------------------------
# Parent: run the stages, assemble, print the table
# ------------------------------------------------------------------------------------------------


def _child_env(dry: bool) -> dict:
    env = dict(os.environ)
    env.pop("MMCORE_KERNELS", None)  # auto means auto; each stage names its backends itself
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TRITON_CACHE_AUTOTUNING", "1")  # autotune results shared between stage processes
    if dry:
        env["TRITON_INTERPRET"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU path even on a GPU machine
    else:
        env.pop("TRITON_INTERPRET", None)
        env.setdefault("TRITON_PRINT_AUTOTUNING", "1")  # the chosen configs go to the log
    return env


def _say(log, text: str) -> None:
    print(text, flush=True)
    log.write(text + "\n")
    log.flush()


def run_stages(args: argparse.Namespace, out: Path, log, t_start: float) -> dict:
    budgets = dict(DRY_STAGE_BUDGET_S if args.dry_run else STAGE_BUDGET_S)
    for spec in args.stage_budget or []:
        name, _, secs = spec.partition("=")
        if name not in budgets:
            raise SystemExit(f"--stage-budget: unknown stage {name!r}; expected one of {list(STAGES)}")
        try:
            budgets[name] = float(secs)
        except ValueError:
            raise SystemExit(f"--stage-budget {spec!r}: expected NAME=SECONDS with a number of seconds") from None
    results: dict = {}
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    env = _child_env(args.dry_run)
    for name in STAGES:
        if name not in args.stages:
            continue
        left = args.budget - (time.time() - t_start) - 5.0  # keep a few seconds to assemble the report
        timeout = min(budgets[name], left)
        if left < 10.0:
            results[name] = {"status": "skipped", "why": f"global budget ({args.budget:.0f}s) used up",
                             "items": [], "skipped": []}
            _say(log, f"== stage {name}: skipped (global budget)")
            continue
        if name != "env" and not args.dry_run and results.get("env", {}).get("info", {}).get("cuda_available") is False:
            results[name] = {"status": "skipped", "why": "CUDA not available", "items": [], "skipped": []}
            _say(log, f"== stage {name}: skipped (CUDA not available)")
            continue
        deadline = time.time() + timeout - min(STAGE_MARGIN_S, 0.25 * timeout)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--out", str(out),
               "--scratch", str(scratch), "--deadline", f"{deadline:.3f}", "--rounds", str(args.rounds)]
        if args.dry_run:
            cmd.append("--dry-run")
        _say(log, f"== stage {name}: start, {timeout:.0f}s budget")
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env,
                                start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the stage's own process group, nothing else
            rc = proc.wait()
        data = _read_stage(scratch, name) or {"items": [], "skipped": []}
        if timed_out and data.get("status") in (None, "running"):
            data["status"] = "timeout"
            data["why"] = f"killed after {timeout:.0f}s; rows finished before that are kept"
        elif timed_out:  # it had recorded its result and was killed while exiting
            data["why"] = f"finished, then killed while exiting at {timeout:.0f}s"
        elif data.get("status") in (None, "running"):
            data["status"] = "error"
            data["why"] = f"stage process exited with code {rc} before recording a result (see the log)"
        data["wall_s"] = round(time.time() - t0, 1)
        data["budget_s"] = round(timeout, 1)
        results[name] = data
        _say(log, f"== stage {name}: {data['status']} in {data['wall_s']:.1f}s")
    return results


def _fmt(x, spec: str = ".3f", none: str = "-") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return format(x, spec)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


def summarize(report: dict) -> dict:
    """Ceilings, percentages of them on every benchmark row, and the issue's targets."""
    stages = report["stages"]
    ceil: dict = {}
    for item in stages.get("ceilings", {}).get("items", []):
        if item.get("name") == "matmul":
            ceil["tflops"] = item.get("tflops")
        if item.get("name") == "copy":
            ceil["gbps"] = item.get("gbps")
    report["ceilings"] = ceil
    items = [i for i in stages.get("benchmarks", {}).get("items", []) if "providers" in i]
    for item in items:
        for p in item["providers"]:
            if "ms" in p:
                if ceil.get("tflops"):
                    p["pct_matmul_ceiling"] = 100.0 * p["tflops"] / ceil["tflops"]
                if ceil.get("gbps"):
                    p["pct_copy_ceiling"] = 100.0 * p["gbps"] / ceil["gbps"]

    def ratios(pred, provider="mmcore"):
        return [_provider(i, provider).get("x_baseline") for i in items if pred(i)]

    def verdict(values, target, moonshot, higher=True):
        values = [v for v in values if v is not None]
        if not values:
            return {"status": "not measured"}
        worst = min(values)
        out = {"worst": worst, "best": max(values), "n": len(values), "target": target, "moonshot": moonshot}
        if report.get("dry_run"):
            out["status"] = "n/a (dry run)"
        else:
            out["status"] = ("met" if worst >= target else "missed") + (
                " + moonshot" if moonshot is not None and worst >= moonshot else "")
        return out

    pct = [_provider(i, "mmcore").get("pct_copy_ceiling") for i in items if i.get("group") == "short_query"]
    concat = lambda i: i.get("op") == "concat_linear"
    report["targets"] = {
        "masked cross_attention fwd+bwd vs best SDPA": verdict(
            ratios(lambda i: i.get("op") == "cross_attention" and i.get("masked") and i["mode"] == "fwd+bwd"),
            *TARGETS["masked_fwd_bwd_vs_sdpa"]),
        "short-query fwd vs best SDPA": verdict(
            ratios(lambda i: i.get("group") == "short_query"), *TARGETS["short_query_fwd_vs_best_sdpa"]),
        "short-query fwd % of copy GB/s": verdict(pct, *TARGETS["short_query_fwd_pct_copy_bw"]),
        "concat_linear fwd+bwd N<=256 vs cat+Linear": verdict(
            ratios(lambda i: concat(i) and i["mode"] == "fwd+bwd" and i.get("n", 0) <= 256),
            *TARGETS["concat_fwd_bwd_n_le_256"]),
        "concat_linear anywhere vs cat+Linear": verdict(ratios(concat), *TARGETS["concat_never_below"]),
    }
    return report


#: "B32 H12 " prefix of attention case labels: the same on every row, said once in the heading.
_BATCH_HEADS = re.compile(r"^B\d+ H\d+ ")


def format_report(report: dict) -> str:
    stages = report["stages"]
    env = stages.get("env", {}).get("info", {})
    lines = [
        f"== gpu_check{' (DRY RUN: CPU + Triton interpreter; numbers measure nothing)' if report['dry_run'] else ''}",
        f"device: {env.get('device', '?')} | SMs {env.get('sm_count', '-')} | driver {env.get('driver', '-')} | "
        f"CUDA {env.get('torch_cuda', '-')} | torch {env.get('torch', '?')} | triton {env.get('triton', '?')}",
    ]
    smi = env.get("nvidia_smi")
    if smi:
        lines.append(f"clocks: SM {smi.get('clocks.sm')} (max {smi.get('clocks.max.sm')}), mem {smi.get('clocks.mem')}, "
                     f"power {smi.get('power.draw')} / {smi.get('power.limit')}, {smi.get('pstate')}")
    corr = stages.get("correctness", {}).get("items", [])
    if corr:
        crow = []
        for i in corr:
            worst = max((t for t in i.get("tensors", [])), key=lambda t: t["rel_err"] / t["rel_err_max"], default=None)
            crow.append([
                i.get("name", "?"), "ok" if i.get("ok") else "FAIL",
                f"{worst['tensor']} {worst['rel_err']:.1e}" if worst else i.get("error", "")[:60],
                str(sum(i.get("nan_counts", {}).values())) if "nan_counts" in i else "-",
                _fmt(i.get("first_call_s"), ".1f"),
            ])
        lines += ["", "correctness (Triton vs float64; worst = largest rel_err / allowed):"]
        lines += _table(["case", "result", "worst rel err", "NaN", "1st call s"], crow)

    bench = [i for i in stages.get("benchmarks", {}).get("items", [])]
    if bench:
        brow = []
        for i in bench:
            if "providers" not in i:
                brow.append([i.get("op", "?")[:6], i.get("name", "?"), "ERROR", i.get("error", "")[:50], "", "", "", "",
                             "", ""])
                continue
            m = _provider(i, "mmcore")
            m_trit = _provider(i, "mmcore-triton")
            naive = _provider(i, "naive")
            extra = f" (triton {_fmt(m_trit.get('x_baseline'), '.2f')}x)" if m_trit else ""
            pct = m.get("pct_copy_ceiling") if i.get("group") == "short_query" else m.get("pct_matmul_ceiling")
            brow.append([
                "attn" if i.get("op") == "cross_attention" else "concat",
                f"{_BATCH_HEADS.sub('', i['case'])} {i['mode']}{' mask' if i.get('masked') else ''}",
                _fmt(m.get("ms"), ".3f") if "ms" in m else m.get("error", "err")[:20],
                f"{_fmt(i.get('baseline_ms'), '.3f')} {i.get('baseline', '-')}",
                _fmt(m.get("x_baseline"), ".2f") + extra,
                _fmt(naive.get("ms"), ".3f") if naive else "",
                _fmt(m.get("tflops"), ".1f"),
                _fmt(m.get("gbps"), ".0f"),
                _fmt(pct, ".0f") + ("%bw" if i.get("group") == "short_query" else "%mm"),
                _fmt(m.get("peak_mib"), ".0f"),
            ])
        heads = sorted({f"B={i['b']} H={i['h']}" for i in bench if "b" in i})
        lines += ["", f"benchmarks ({stages['benchmarks'].get('dtype', '')}, attention {', '.join(heads)}, "
                      f"medians of {report['rounds']} rounds; "
                      "x = baseline ms / mmcore ms; baseline = best SDPA backend that ran, or cat+Linear):"]
        lines += _table(["op", "case", "mmcore ms", "baseline ms", "x", "naive ms", "TFLOP/s", "GB/s",
                         "ceil", "peak MiB"], brow)
        auto = sorted({str(i.get("sdpa_auto_backend")) for i in bench if i.get("sdpa_auto_backend")})
        if auto:
            lines.append(f"SDPA's own choice seen: {', '.join(auto)}")

    train = stages.get("training", {}).get("items", [])
    if train:
        trow = [[i["name"], _fmt(i.get("ms"), ".2f"), _fmt(i.get("x_torch"), ".2f"), _fmt(i.get("peak_mib"), ".0f"),
                 _fmt(i.get("grad_rel_err_vs_torch"), ".1e"), "" if i.get("ok", True) else "FAIL"] for i in train]
        setup = stages["training"].get("setup", {})
        lines += ["", f"training step (batch {setup.get('batch')}, {setup.get('dtype')}):"]
        lines += _table(["variant", "ms", "x torch", "peak MiB", "grad rel err", ""], trow)
    lines.append("")
    rows = []
    for name in STAGES:
        st = stages.get(name)
        if st is None:
            continue
        items = st.get("items", [])
        bad = [i.get("name", "?") for i in items if i.get("ok") is False or "error" in i]
        note = st.get("why") or st.get("error") or st.get("note") or ""
        if bad:
            note = (note + "; " if note else "") + "FAILED: " + ", ".join(bad)[:200]
        if st.get("skipped"):
            note = (note + "; " if note else "") + f"{len(st['skipped'])} item(s) skipped for time"
        rows.append([name, st.get("status", "?"), _fmt(st.get("wall_s"), ".1f") + "s", str(len(items)), note])
    lines += _table(["stage", "status", "time", "items", "note"], rows)
    ceil = report.get("ceilings", {})
    lines += ["", f"ceilings: matmul {_fmt(ceil.get('tflops'), '.1f')} TFLOP/s | copy {_fmt(ceil.get('gbps'), '.0f')} GB/s"]
    targets = report.get("targets", {})
    if targets:
        lines += ["", "targets (issue 17):"]
        for name, t in targets.items():
            if "worst" in t:
                moon = f" [{t['moonshot']}]" if t.get("moonshot") else ""
                lines.append(f"  {name}: {t['status']}: worst {t['worst']:.2f}, best {t['best']:.2f} "
                             f"over {t['n']} (target {t['target']}{moon})")
            else:
                lines.append(f"  {name}: {t['status']}")
    files = [f for key, f in OUT_FILES.items() if key == "table" or (Path(report["out"]) / f).exists()]
    lines += ["", lines[1], f"total {report['elapsed_s']:.1f}s of {report['budget_s']:.0f}s budget; in {report['out']}: "
                  + ", ".join(files)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: $OUT, else ./gpu_check_out)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny shapes on the CPU, Triton interpreter, perf_counter timing")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)} (default: all; they run in that "
                             "order, env always)")
    parser.add_argument("--budget", type=float, default=GLOBAL_BUDGET_S,
                        help="seconds for the whole check (default %(default)s)")
    parser.add_argument("--stage-budget", action="append", metavar="NAME=SECONDS",
                        help="override one stage's budget (repeatable)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timing rounds per case (default 2 on the GPU, 1 in the dry run)")
    # Internal: one stage in a subprocess.
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.dry_run else 2
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.budget <= 0:
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    if args.stage is None:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            parser.error(f"--stages: unknown {unknown or 'empty list'}; expected a subset of {','.join(STAGES)}")
        # env always runs (a few seconds): every report says what it ran on.
        args.stages = ["env", *[s for s in stages if s != "env"]]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage is not None:
        rc = run_stage_child(args)
        # Its result is on disk: skip the interpreter's teardown (CUDA, Triton, thread joins), which
        # can take seconds that the stage's budget does not have.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    t_start = time.time()
    out = Path(args.out or os.environ.get("OUT") or "gpu_check_out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / OUT_FILES["log"], "a", encoding="utf-8") as log:
        _say(log, f"== gpu_check start {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}"
                  f" argv={sys.argv[1:]} out={out}")
        stages = run_stages(args, out, log, t_start)
        report = summarize({
            "tool": "benchmarks/gpu_check.py", "version": 1, "dry_run": args.dry_run, "argv": sys.argv[1:],
            "started_utc": datetime.datetime.fromtimestamp(t_start, datetime.timezone.utc).isoformat(timespec="seconds"),
            "budget_s": args.budget, "rounds": args.rounds, "out": str(out),
            "stage_statuses": {k: v.get("status") for k, v in stages.items()}, "stages": stages,
        })
        report["elapsed_s"] = round(time.time() - t_start, 1)
        (out / OUT_FILES["json"]).write_text(json.dumps(report, indent=1, default=_json_default))
        table = format_report(report)
        (out / OUT_FILES["table"]).write_text(table + "\n")
        log.write(table + "\n")
    print("\n" + table, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
