"""benchmarks/gpu_check.py: the prepared GPU check must run end to end before its first device call.

The dry run (``--dry-run``: CPU tensors, the real Triton kernels under the interpreter, tiny shapes)
goes through every stage, the JSON, the table and the PNG, so a typo cannot waste a GPU lease.
The helpers it relies on (allocation poisoning, mirror shapes, argument checks) are tested directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


@pytest.mark.slow
def test_dry_run_writes_every_stage_and_prints_the_table(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MMCORE_KERNELS"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT), env=env, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True
    assert list(report["stages"]) == list(gpu_check.STAGES)
    for name, stage in report["stages"].items():
        # The dry run must be clean: an error here is exactly what would waste the device call.
        assert stage["status"] == "ok", f"stage {name}: {stage.get('status')}: {stage.get('error') or stage.get('why')}"
        assert stage["items"], f"stage {name} recorded nothing"
    assert report["stage_statuses"] == dict.fromkeys(gpu_check.STAGES, "ok")

    # Correctness really compared Triton with float64, and the poison reached the kernels' outputs.
    for item in report["stages"]["correctness"]["items"]:
        assert item["ok"] and item["poisoned_tensors"] > 0, item
        assert not any(item["nan_counts"].values())
        assert all(t["rel_err"] < t["rel_err_max"] for t in item["tensors"])
    # Every benchmark case timed mmcore and its baseline, side by side.
    for item in report["stages"]["benchmarks"]["items"]:
        mmcore = next(p for p in item["providers"] if p["provider"] == "mmcore")
        assert mmcore["ms"] > 0 and item["baseline_ms"] > 0, item
    assert {i["group"] for i in report["stages"]["benchmarks"]["items"]} == {"short_query", "concat", "sweep"}
    agreement = [i for i in report["stages"]["training"]["items"] if i["kind"] == "agreement"]
    assert len(agreement) == 3 and all(i["ok"] for i in agreement)
    assert all("status" in t for t in report["targets"].values())

    png = tmp_path / "gpu_check_speedup.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The table is printed last (the device tool returns only the tail of the output) and saved.
    table = (tmp_path / "gpu_check_table.txt").read_text()
    assert done.stdout.rstrip().endswith(table.rstrip())
    for name in gpu_check.STAGES:
        assert any(line.startswith(name + " ") for line in table.splitlines()), name
    assert "targets (issue 17):" in table and "DRY RUN" in table
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(gpu_check.OUT_FILES.values())
    assert "== stage benchmarks: ok" in (tmp_path / "gpu_check.log").read_text()


def test_poisoned_allocations_expose_unwritten_elements():
    with gpu_check.poisoned_allocations() as counter:
        out = torch.empty(4, 3)
        out[:2] = 1.0  # a "kernel" that forgets the last two rows
        dw = out.new_empty((2, 5))
        index = torch.empty(3, dtype=torch.int64)  # integer tensors are left alone
    assert counter["tensors"] == 2
    assert torch.isnan(out[2:]).all() and not torch.isnan(out[:2]).any()
    assert torch.isnan(dw).all()
    assert index.shape == (3,)
    # Restored afterwards.
    assert torch.empty is not None and not torch.isnan(torch.zeros(2)).any()
    with gpu_check.poisoned_allocations() as counter:
        pass
    fresh = torch.empty(8)
    assert counter["tensors"] == 0 and fresh.shape == (8,)


@pytest.mark.parametrize("limit", [64, 128])
@pytest.mark.parametrize("length", [1, 7, 16, 63, 64, 65, 77, 128, 129, 144, 197, 2048, 4096])
def test_mirror_keeps_schedule_class_and_divisibility(length, limit):
    mirrored = gpu_check._mirror(length, limit)
    assert (mirrored <= limit) == (length <= limit)
    assert (mirrored % 16 == 0) == (length % 16 == 0)
    assert (mirrored == 1) == (length == 1)
    if length <= limit:
        assert mirrored == length  # short sides use a tile of next_pow2(length)
    else:
        assert mirrored <= limit + 17


def test_gpu_case_lists_cover_the_issue():
    attn = [c for c in gpu_check.correctness_cases(False) if isinstance(c, gpu_check.AttnCheck)]
    assert {c.d for c in attn} == {64, 80, 128}
    assert {c.dtype for c in attn} == {"bfloat16", "float16"}
    assert {"kv_lens", "all_masked", "none"} <= {c.mask for c in attn}
    assert max(c.lq for c in attn) == 2048 and max(c.lk for c in attn) == 4096
    assert all(c.b == 32 and c.h == 12 for c in attn)
    bench = gpu_check.benchmark_cases(False)
    short = {c.lq for c in bench if getattr(c, "group", None) == "short_query"}
    assert short and max(short) <= 16
    assert {c.n for c in bench if isinstance(c, gpu_check.ConcatBench)} == {64, 128, 256, 1024, 4096}
    assert {(c.masked, c.mode) for c in bench if isinstance(c, gpu_check.AttnBench) and c.group == "sweep"} == {
        (m, mode) for m in (False, True) for mode in ("fwd", "fwd+bwd")
    }
    # Every kernel build of those lists has a compile-stage mirror, each at most once.
    specs = gpu_check.warm_specs(False)
    keys = [tuple(sorted((k, str(v)) for k, v in s.items() if k != "bwd")) for s in specs]
    assert len(keys) == len(set(keys))
    assert {(s["dtype"], s["d"]) for s in specs if s["op"] == "attn"} >= {(c.dtype, c.d) for c in attn}
    assert sum(gpu_check.STAGE_BUDGET_S.values()) <= gpu_check.GLOBAL_BUDGET_S - 20  # room for the install


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--stages", "env,bogus"], "--stages"),
        (["--rounds", "0"], "--rounds"),
        (["--budget", "-5"], "--budget"),
    ],
)
def test_bad_arguments_are_named(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
