#!/usr/bin/env bash
# The one command that verifies the book's GPU path, on a bare machine with a CUDA GPU and no internet:
#   0. unpacks ARCHIVE once into OUT/data (a rerun reuses it; delete OUT/data when done);
#   1. the CUDA tests (tests/test_cuda.py), with every test's duration;
#   2. Chapter 5's full training configuration (ShuffleNet 1x, g = 3, 40 epochs, batch 512) on the JPEG
#      copy of CIFAR-10, with --export, for as many epochs as fit in TRAIN_SECONDS (Ctrl-C at the limit
#      stops it at a step boundary with a checkpoint: rerun the same command to continue);
#   3. the data-pipeline benchmark on the GPU (fast path against the DataLoader).
# Everything goes to one folder, OUT, with a log. Each step has its own time limit: 30 + 140 + 200 + 10
# + 70 = 450 s (UNPACK_SECONDS + TESTS_SECONDS + TRAIN_SECONDS + STOP_SECONDS + PIPELINE_SECONDS), 465 s
# with the 5 s a stopped step gets before it is killed: under the 8 minutes the whole check may take.
#
#   usage: scripts/gpu_check.sh ARCHIVE [OUT]        (or: make gpu-check ARCHIVE=... OUT=...)
#   ARCHIVE: cifar10-jpeg.tar.gz, or the folder it unpacks to; OUT: default gpu-check. Relative paths are
#   taken from the directory the command is called from.
#   Needs only a Python with torch, torchvision, tqdm and pytest (no venv, no pip, no network): PYTHON
#   (default python3) names it. The package is imported from this clone.
#   environment: PYTHON (python3), DEVICE (cuda; cpu for a dry run: the CUDA tests then skip),
#                STEPS ("tests train pipeline": the steps to run), EPOCHS (40), BATCH (512), SCALE (1.0),
#                UNPACK_SECONDS (30), TESTS_SECONDS (140), TRAIN_SECONDS (200), STOP_SECONDS (10: after
#                the Ctrl-C at TRAIN_SECONDS, the time to save the checkpoint before a kill),
#                PIPELINE_SECONDS (70), PIPELINE_ARGS (extra options of python -m shufflenet.bench pipeline)
set -uo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: scripts/gpu_check.sh ARCHIVE [OUT]" >&2
    exit 2
fi
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # from the caller's directory
archive=$(absolute "$1")
out=$(absolute "${2:-gpu-check}")
python=${PYTHON:-python3}
case $python in */*) python=$(absolute "$python") ;; esac
device=${DEVICE:-cuda}
steps=" ${STEPS:-tests train pipeline} "
epochs=${EPOCHS:-40}
batch=${BATCH:-512}
scale=${SCALE:-1.0}
unpack_seconds=${UNPACK_SECONDS:-30}
tests_seconds=${TESTS_SECONDS:-140}
train_seconds=${TRAIN_SECONDS:-200}
stop_seconds=${STOP_SECONDS:-10}
pipeline_seconds=${PIPELINE_SECONDS:-70}
[ -e "$archive" ] || { echo "no such archive or folder: $archive" >&2; exit 2; }

cd "$(dirname "$0")/.."  # the clone's root: python -m shufflenet and pytest tests/ import this clone
mkdir -p "$out" || exit 2
exec > >(tee -a "$out/gpu_check.log") 2>&1
tee_pid=$!
finish() { exec >&- 2>&-; wait "$tee_pid"; }  # the log is whole when the script returns
trap finish EXIT
export PYTHONUNBUFFERED=1
status=0
incomplete=""

# `timeout` exits 124 when it stops a command at its limit, 137 when it has to kill it (-k); otherwise
# the command's own status.
limited() {  # limited SECONDS NAME COMMAND...: run, and report a stop at the limit
    local seconds=$1 name=$2 code
    shift 2
    timeout -k 5 "$seconds" "$@"
    code=$?
    if [ $code -eq 124 ] || [ $code -eq 137 ]; then
        echo "$name: stopped at its limit of $seconds s (status $code)"
    fi
    return $code
}

echo "== $(date -u +%FT%TZ) gpu check on $(hostname) in $PWD, results in $out"
if ! $python -c 'import torch, torchvision, tqdm, pytest
print("torch", torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "(no GPU)")'
then
    echo "$python lacks one of torch, torchvision, tqdm, pytest: name another with PYTHON=..."
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

if [ -d "$archive" ]; then
    data=$archive
else
    # Unpacked once, into a folder whose name does not change: a rerun trains on the same --data (so
    # the checkpoint is accepted) and reuses the decoded cache (DATA.pt) written next to it.
    if [ -d "$out/data/done" ]; then
        echo "== 0. the archive is already unpacked in $out/data"
    else
        echo "== 0. unpacking $archive into $out/data"
        rm -rf "$out/data"
        mkdir -p "$out/data/partial" \
            && limited "$unpack_seconds" "unpacking" tar xzf "$archive" -C "$out/data/partial" \
            && mv "$out/data/partial" "$out/data/done" \
            || { echo "cannot unpack $archive"; exit 1; }
    fi
    data=$(find "$out/data/done" -maxdepth 2 -type d -name train -printf '%h\n' | head -n 1)
    [ -n "$data" ] && [ -d "$data/test" ] \
        || { echo "$archive holds no folder with train/ and test/ in it"; exit 1; }
fi
echo "data: $data"

if [[ $steps == *" tests "* ]]; then
    echo "== 1. CUDA tests (at most $tests_seconds s)"
    limited "$tests_seconds" "the CUDA tests" $python -m pytest -o addopts="" -p no:cacheprovider \
        tests/test_cuda.py -q -rs -s --durations=0 --junitxml="$out/cuda_tests.xml" \
        || { echo "the CUDA tests failed"; status=1; }
fi

if [[ $steps == *" train "* ]]; then
    echo "== 2. full training configuration ($epochs epochs, at most $train_seconds s)"
    resume=""
    if [ -f "$out/run/checkpoint.pt" ]; then
        resume="--resume"
        echo "resuming from $out/run/checkpoint.pt"
    fi
    # Ctrl-C (SIGINT) at the limit: the run stops at the next step boundary and saves a checkpoint.
    timeout -s INT -k "$stop_seconds" "$train_seconds" $python -m shufflenet.train --data "$data" \
        --groups 3 --scale "$scale" --epochs "$epochs" --batch-size "$batch" --device "$device" \
        --no-progress --out "$out/run" $resume --export "$out/main-g3-1x-gpu"
    code=$?
    case $code in
        0) ;;
        124|130) incomplete="stopped at the time limit (in training: at a step boundary, with a checkpoint);"
                 incomplete+=" rerun the same command to continue"
                 echo "$incomplete" ;;
        137) incomplete="killed at the time limit (the last checkpoint stands); rerun the same command to continue"
             echo "$incomplete" ;;
        *) echo "the training failed (status $code)"; status=1 ;;
    esac
fi

if [[ $steps == *" pipeline "* ]]; then
    echo "== 3. data pipeline on the GPU (at most $pipeline_seconds s)"
    # shellcheck disable=SC2086  # PIPELINE_ARGS: several options
    limited "$pipeline_seconds" "the pipeline benchmark" $python -m shufflenet.bench pipeline \
        --data "$data" --devices "$device" --scale "$scale" --batch "$batch" --num-workers 2 \
        --data-steps 100 --train-steps 100 --repeats 2 \
        ${PIPELINE_ARGS:-} --out "$out" --name pipeline-gpu \
        || { echo "the pipeline benchmark failed"; status=1; }
fi

[ -n "$incomplete" ] && echo "training incomplete: $incomplete"
echo "== $(date -u +%FT%TZ) done (status $status) in ${SECONDS} s: $out"
exit $status
