#!/usr/bin/env bash
# GPU scaling check for the first machine with NVIDIA GPUs: trains the demo model for a fixed number of epochs on
# 1 rank and on N ranks (one GPU each; N = the GPUs nvidia-smi lists, or GPUS=N) and prints samples/s, the device
# each rank used and the scaling ratio (benchmarks/bench_ranks.py --gpu). It builds nothing: the project venv must
# hold a GPU build of TensorFlow 2.15.1 (tensorflow[and-cuda]==2.15.1 instead of tensorflow-cpu) and Horovod built
# with NCCL (HOROVOD_GPU_OPERATIONS=NCCL) — on any other machine it exits 2 with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi not found or lists none): nothing to measure" >&2
  exit 2
fi
N=${GPUS:-$(nvidia-smi -L | wc -l)}
if ! "$PY" -c "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" 2>/dev/null; then
  echo "gpu_check: TensorFlow in $PY sees no GPU (tensorflow-cpu?): install tensorflow[and-cuda]==2.15.1 and rebuild" \
       "horovod with HOROVOD_GPU_OPERATIONS=NCCL first" >&2
  exit 2
fi
export PYSPARK_PYTHON="$PWD/$PY" PYSPARK_DRIVER_PYTHON="$PWD/$PY" SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
exec "$PY" benchmarks/bench_ranks.py --ranks "$N" --gpu "$@"
