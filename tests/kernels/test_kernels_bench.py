"""The benchmark harness (benchmarks/kernel_bench.py, not part of the installed packages) on tiny
shapes: callables, metrics, table."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernel_bench.py"


def _load():
    spec = importlib.util.spec_from_file_location("kernel_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_the_benchmark_is_not_in_the_installed_kernels_package():
    import mmcore_kernels

    assert not (Path(mmcore_kernels.__file__).parent / "bench.py").exists()
    with pytest.raises(ImportError):
        importlib.import_module("mmcore_kernels.bench")


@pytest.mark.parametrize("provider", bench.ATTENTION_PROVIDERS)
@pytest.mark.parametrize("mode", bench.MODES)
def test_attention_providers_agree_and_time(provider, mode):
    case = bench.AttentionCase("tiny", 2, 2, 5, 9, 16, padded=True)
    prepared = bench.make_attention_fn(case, provider, mode, torch.device("cpu"), torch.float32)
    ms = bench.measure(prepared.fn, torch.device("cpu"), min_time=0.0)
    assert ms > 0
    assert prepared.flops == (4.0 * 2 * 5 * 16 * case.real_keys()) * (1 if mode == "fwd" else 3.5)
    if provider in ("sdpa", "mmcore"):
        assert prepared.info["sdpa_backend"] in {"flash (cpu)", "math"}


def test_padded_case_has_about_30_percent_padding():
    case = bench.AttentionCase("t", 32, 8, 77, 197, 64, padded=True)
    lens = case.kv_lens(torch.device("cpu"))
    assert lens.shape == (32,) and int(lens.max()) == 197
    assert 0.25 < 1 - lens.sum().item() / (32 * 197) < 0.35


@pytest.mark.parametrize("provider", ["mmcore", "cat+linear", "addmm"])
def test_concat_linear_providers(provider):
    case = bench.ConcatLinearCase(16, (5, 3), 4)
    for mode in bench.MODES:
        prepared = bench.make_concat_linear_fn(case, provider, mode, torch.device("cpu"), torch.float32)
        prepared.fn()
        assert prepared.flops > 0 and prepared.bytes > 0


def test_cases_scale_with_full_flag(monkeypatch):
    monkeypatch.delenv("MMCORE_BENCH_FULL", raising=False)
    cpu = torch.device("cpu")
    small = bench.attention_cases(None, cpu)
    full = bench.attention_cases(True, cpu)
    assert len(small) == len(full) == 8
    assert {c.name for c in full} == {"text->image", "image->text", "audio", "long"}
    assert max(c.batch for c in full) == 32 and max(c.lq for c in full) == 2048
    assert bench.concat_linear_cases(True, cpu)[0].rows == 8192
    monkeypatch.setenv("MMCORE_BENCH_FULL", "1")
    assert bench.attention_cases(None, cpu) == full


def test_run_rejects_unknown_ops():
    with pytest.raises(ValueError, match=r"unknown ops \['matmul'\]"):
        bench.run(ops=["matmul"], file=None)


def test_format_table():
    rows = [
        {
            "op": "concat_linear",
            "case": "c",
            "mode": "fwd",
            "provider": p,
            "device": "cpu",
            "dtype": "float32",
            "ms": ms,
            "tflops": 0.1,
            "gbps": 1.0,
            "ratio": 2.0 / ms,
        }
        for p, ms in (("mmcore", 1.0), ("cat+linear", 2.0))
    ]
    text = bench.format_table(rows)
    assert "x base" in text and "mmcore" in text and "2.00" in text
    buf = io.StringIO()
    print(text, file=buf)
    assert buf.getvalue().count("\n") == 5
