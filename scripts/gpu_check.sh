#!/usr/bin/env bash
# The one command that verifies the book's GPU path, on a machine with a CUDA GPU and no internet:
#   1. the CUDA tests (tests/test_cuda.py);
#   2. Chapter 5's full training configuration (ShuffleNet 1x, g = 3, 40 epochs, batch 512) on the JPEG
#      copy of CIFAR-10, with --export, for as many epochs as fit in TRAIN_SECONDS (Ctrl-C at the limit
#      stops it at a step boundary with a checkpoint: rerun with the same OUT to continue);
#   3. the data-pipeline benchmark on the GPU (fast path against the DataLoader).
# Everything goes to one folder, OUT. It takes under 9 minutes on an H100-class GPU.
#
#   usage: scripts/gpu_check.sh ARCHIVE [OUT]        (or: make gpu-check ARCHIVE=... OUT=...)
#   ARCHIVE: cifar10-jpeg.tar.gz, or the folder it unpacks to; OUT: default gpu-check
#   environment: PYTHON (python3), TRAIN_SECONDS (330), EPOCHS (40), DEVICE (cuda; cpu for a dry run),
#                PIPELINE_SECONDS (150), STEPS ("tests train pipeline": the steps to run)
set -uo pipefail
archive=${1:?usage: scripts/gpu_check.sh ARCHIVE [OUT]}
out=${2:-gpu-check}
python=${PYTHON:-python3}
train_seconds=${TRAIN_SECONDS:-330}
epochs=${EPOCHS:-40}
device=${DEVICE:-cuda}
steps=" ${STEPS:-tests train pipeline} "
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
status=0

echo "== $(date -u +%FT%TZ) gpu check on $(hostname); $($python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if [ -d "$archive" ]; then
    data=$archive
else
    unpacked=$(mktemp -d)  # 236 MB of JPEGs and their decoded cache: not part of the results
    tar xzf "$archive" -C "$unpacked" || { echo "cannot unpack $archive"; exit 1; }
    data=$unpacked/cifar10-jpeg
fi

if [[ $steps == *" tests "* ]]; then
    echo "== 1. CUDA tests"
    timeout 240 $python -m pytest -o addopts="" -p no:cacheprovider tests/test_cuda.py -q -rs -s \
        --junitxml="$out/cuda_tests.xml" || { echo "the CUDA tests failed"; status=1; }
fi

if [[ $steps == *" train "* ]]; then
    echo "== 2. full training configuration ($epochs epochs, at most $train_seconds s)"
    resume=""
    [ -f "$out/run/checkpoint.pt" ] && resume="--resume"
    timeout -s INT -k 60 "$train_seconds" $python -m shufflenet.train --data "$data" --groups 3 \
        --scale 1.0 --epochs "$epochs" --batch-size 512 --device "$device" --no-progress \
        --out "$out/run" $resume --export "$out/main-g3-1x-gpu"
    code=$?
    [ $code -eq 130 ] && echo "stopped at the time limit: rerun the same command to continue"
    [ $code -ne 0 ] && [ $code -ne 130 ] && status=1
fi

if [[ $steps == *" pipeline "* ]]; then
    echo "== 3. data pipeline on the GPU"
    timeout "${PIPELINE_SECONDS:-150}" $python -m shufflenet.bench pipeline --data "$data" --devices "$device" --scale 1.0 \
        --batch 512 --num-workers 2 --out "$out" --name pipeline-gpu \
        || { echo "the pipeline benchmark failed"; status=1; }
fi

echo "== done (status $status): $out"
exit $status
