"""The GPU check's plumbing, on the CPU: scripts/gpu_check.sh as a dry run on a tiny synthetic archive.

DEVICE=cpu: the CUDA tests skip, the training and the pipeline benchmark run on the CPU, small. What is
checked is what a bare GPU machine depends on: relative paths taken from where the script is called,
the archive unpacked once into OUT/data and reused by a rerun, which resumes the run; a stop at the time
limit reported as such, with the hint to rerun; every step's output in OUT.
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.sh"
DRY_RUN = {"DEVICE": "cpu", "EPOCHS": "1", "BATCH": "8", "SCALE": "0.25",
           "PIPELINE_ARGS": "--train-steps 1 --data-steps 2 --repeats 1 --warmup 1 --num-workers 0 "
                            "--threads 1"}


@pytest.fixture
def archive(tmp_path, image_folder):
    """``cifar10-jpeg.tar.gz`` in ``tmp_path/call``: two classes, 16 training and 8 test images."""
    root, _ = image_folder("cifar10-jpeg", per_class=(8, 4))
    where = tmp_path / "call"
    where.mkdir()
    with tarfile.open(where / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="cifar10-jpeg")
    return where


def gpu_check(where, *args, **settings):
    """Run the script from the folder ``where`` (so that relative paths are relative to it)."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **DRY_RUN, **settings}
    done = subprocess.run(["bash", str(SCRIPT), *args], cwd=where, env=env, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_a_dry_run_writes_everything_to_out_and_a_rerun_resumes(archive):
    code, log = gpu_check(archive, "cifar10-jpeg.tar.gz", "out")
    out = archive / "out"
    assert code == 0, log
    assert "== 0. unpacking" in log and "(no GPU)" in log
    assert (out / "data" / "done" / "cifar10-jpeg" / "train" / "cat").is_dir()
    assert (out / "data" / "done" / "cifar10-jpeg.pt").is_file()  # the decoded cache, reused by reruns
    assert 'skipped="' in (out / "cuda_tests.xml").read_text()     # the CUDA tests ran, and skipped
    assert "slowest durations" in log                              # --durations=0
    summary = json.loads((out / "main-g3-1x-gpu" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["train_images"] == 16
    assert (out / "run" / "checkpoint.pt").is_file() and (out / "pipeline-gpu.json").is_file()
    assert log.rstrip().splitlines()[-1].startswith("== ") and "done (status 0)" in log
    assert (out / "gpu_check.log").read_text() == log

    # The rerun reuses the unpacked archive and resumes; stopped at its time limit (here while Python
    # starts), it says so and how to continue, and that is not a failure.
    code, log = gpu_check(archive, "cifar10-jpeg.tar.gz", "out", STEPS="train", TRAIN_SECONDS="0.5")
    assert code == 0, log
    assert "already unpacked" in log and "resuming from" in log and "CUDA tests" not in log
    assert "rerun the same command to continue" in log and "training incomplete" in log
    assert "failed" not in log


def test_bad_arguments_are_clear_errors(archive):
    code, log = gpu_check(archive)
    assert code == 2 and "usage" in log
    code, log = gpu_check(archive, "missing.tar.gz")
    assert code == 2 and "no such archive" in log
    code, log = gpu_check(archive, "cifar10-jpeg.tar.gz", "out", PYTHON="/nonexistent/python")
    assert code == 2 and "lacks one of torch" in log
