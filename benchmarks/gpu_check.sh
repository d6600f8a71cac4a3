#!/usr/bin/env bash
# Install mmcore on the GPU machine's own torch, then run benchmarks/gpu_check.py (all of it
# within 480 s, the install included). Usage, from anywhere:
#     OUT=/some/dir bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --stages benchmarks,plot]
# On the device tool $OUT is already set: run(command="bash benchmarks/gpu_check.sh", timeout_s=540).
# Outputs: $OUT/gpu_check.{json,log}, gpu_check_table.txt, gpu_check_speedup.png; the table is
# printed last. See the docstring of benchmarks/gpu_check.py.
set -uo pipefail
start=$(date +%s)
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-$PWD/gpu_check_out}"
export OUT PYTHONUNBUFFERED=1
mkdir -p "$OUT"
log="$OUT/gpu_check.log"
total="${GPU_CHECK_BUDGET:-480}"
PY="${PYTHON:-python3}"

echo "== gpu_check.sh: $(date -u +%FT%TZ) in $PWD, python: $(command -v "$PY")" | tee -a "$log"
# The machine's torch/triton stay as they are: --no-deps (every dependency in pyproject.toml is in
# the image's package list, KINDS.md), --no-build-isolation (no registry can be reached there).
if ! "$PY" -c 'import torch, triton, matplotlib, pluggy, yaml, safetensors, hypothesis, pytest' >>"$log" 2>&1; then
    echo "== a package the check needs is missing from this python (see $log)" | tee -a "$log"
fi
if "$PY" -m pip install -q --no-deps --no-build-isolation --no-input -e . >>"$log" 2>&1; then
    echo "== installed mmcore (editable) in $(( $(date +%s) - start ))s" | tee -a "$log"
else
    # Fallback: the three import packages as links on PYTHONPATH (no entry points; the check
    # imports the plugins it uses directly).
    echo "== pip install -e . failed (see $log); using a PYTHONPATH link farm" | tee -a "$log"
    links="$(mktemp -d)"
    ln -s "$PWD/mmcore" "$links/mmcore"
    ln -s "$PWD/plugins" "$links/mmcore_plugins"
    ln -s "$PWD/kernels" "$links/mmcore_kernels"
    export PYTHONPATH="$links${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c 'import mmcore, mmcore_kernels, mmcore_plugins; print("== imports ok:", mmcore_kernels.__file__)' 2>&1 | tee -a "$log"

budget=$(( total - ($(date +%s) - start) ))
exec "$PY" benchmarks/gpu_check.py --out "$OUT" --budget "$budget" "$@"
