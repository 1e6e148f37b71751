#!/usr/bin/env bash
# Every bench of issue 13, one after the other (never two at once: they time whole processes),
# each one's output in bench/results/NAME.txt. Usage: bench/run_all.sh [--quick] [WORK_DIR]
# WORK_DIR keeps the built models and calibrations between runs (default: a temporary one each).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=""
if [[ "${1:-}" == "--quick" ]]; then quick="--quick"; shift; fi
work=${1:-}
python=${PYTHON:-.venv/bin/python}
mkdir -p bench/results
run() {
  local name=$1; shift
  echo "== $name: $*" | tee "bench/results/$name.txt"
  "$python" "bench/$name.py" $quick "$@" 2>&1 | tee -a "bench/results/$name.txt"
}
run init_floor ${work:+--work "$work"}
run naive_init ${work:+--work "$work"}
run peft_corda
run train_step
run merge_speed
