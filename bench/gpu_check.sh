#!/usr/bin/env bash
# The GPU check: calibrate (in memory and sequential, bf16) -> init -> train -> merge (W0 check) on a
# random 1.1B-parameter Llama, then on the embedded SmolLM2 when its directory is given; prints the
# time and peak GPU memory of every stage. Runs from this source tree, nothing installed, offline.
#
#   bench/gpu_check.sh [--embedded-dir DIR] [--work DIR]     on a CUDA machine (< 8 minutes)
#   bench/gpu_check.sh --cpu-smoke [--embedded-dir DIR]      the same path on a tiny model, on CPU
#
# PYTHON picks the interpreter (default: python3); SCLORA_EMBEDDED_DIR may stand for --embedded-dir;
# GPU_CHECK_TIMEOUT (seconds, default 470) stops a run that would overrun its 8 minutes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "${root}"
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-470}" "${PYTHON:-python3}" -u bench/gpu_check.py "$@"
