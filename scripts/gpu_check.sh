#!/usr/bin/env bash
# The GPU session's one prepared run (GPU issue): install fastbp from this working tree, run the
# GPU tests, then the GPU benchmark on Fashion-MNIST, all in about 8 minutes of device time.
#
# Here, first (the data travels with the working tree as an ignored folder, 30 MB):
#   mkdir -p .gpu-data && cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu-data/
#   (apt-get install -y dataset-fashion-mnist if that folder is missing)
# Then, through the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".gpu-data"], timeout_s=560)
# Results: $OUT/{nvidia-smi,install,gpu-tests,bench}.txt (the tail of each is printed too).
# FAST=1 skips the accuracy run and times 2 epochs per row (a rerun in less time).
set -u
OUT=${OUT:-/tmp/fastbp-gpu}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PY:-python3}  # on the device image, the python that holds CuPy, PyTorch and Numba
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia-smi.txt" 2>&1
cat "$OUT/nvidia-smi.txt"
if ! $PY -m pip install --no-deps --no-build-isolation -q -e . > "$OUT/install.txt" 2>&1; then
  # (an older setuptools there, say): the package laid out as installed, on PYTHONPATH
  echo "pip install failed; using a copy on PYTHONPATH" >> "$OUT/install.txt"
  rm -rf /tmp/fastbp-path && mkdir -p /tmp/fastbp-path && cp -r fastbp /tmp/fastbp-path/ \
    && cp -r kernels /tmp/fastbp-path/fastbp/kernels
  export PYTHONPATH=/tmp/fastbp-path${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import fastbp, fastbp.kernels.cupy_backend as cb; print('fastbp', fastbp.__version__, 'cupy available:', cb.CupyBackend.is_available())" 2>&1 | tee -a "$OUT/install.txt"

echo "== GPU tests"
timeout 240 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_cupy_backend.py > "$OUT/gpu-tests.txt" 2>&1
echo "exit status $?" >> "$OUT/gpu-tests.txt"
tail -25 "$OUT/gpu-tests.txt"

echo "== benchmark"
DATA=fashion-mnist
[ -d .gpu-data ] && DATA=.gpu-data
if [ "${FAST:-0}" = 1 ]; then EPOCHS=2; ACC=0; else EPOCHS=3; ACC=30; fi
timeout 300 $PY scripts/bench_gpu.py --data "$DATA" --epochs "$EPOCHS" --accuracy-epochs "$ACC" \
  --members 132 > "$OUT/bench.txt" 2>&1
echo "exit status $?" >> "$OUT/bench.txt"
tail -45 "$OUT/bench.txt"
