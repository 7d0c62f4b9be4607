"""Chapter 7's ablation script, on the CPU: scripts/shuffle_ablation.sh as a dry run on synthetic data.

Its runs are the chapter's evidence, made rarely and at length (on a GPU, or for half an hour a run on a
CPU), so the plumbing must work the first time: the shuffle and no mixing for a seed first, the random
control after them, each run exported without its weights, a line per finished run that gives its result,
and a rerun that adds only what is missing.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "shuffle_ablation.sh"
DRY_RUN = {"DEVICE": "cpu", "SEEDS": "1", "JOBS": "1", "GROUP_COUNTS": "3", "EPOCHS": "1", "BATCH": "32",
           "THREADS": "1", "EXTRA": "--limit 64 --precision bf16"}  # bf16: a warning in the log


def shuffle_ablation(out):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           **DRY_RUN}
    done = subprocess.run(["bash", str(SCRIPT), "synthetic", str(out)], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_dry_run_exports_the_three_variants_and_a_rerun_adds_nothing(tmp_path):
    log = shuffle_ablation(tmp_path)
    finished = re.findall(r"^done (\S+) \(1 seed\(s\)\): (.*)$", log, re.MULTILINE)
    assert [name for name, _ in finished] == ["g3-shuffle-s0", "g3-none-s0", "g3-random-s0"]
    for name, result in finished:  # the run's own result, whatever it warned on the way
        assert result.startswith("done: test accuracy"), result
        folder = tmp_path / name
        summary = json.loads((folder / "summary.json").read_text())
        assert (summary["mixing"], summary["groups"], summary["config"]["seed"]) == (
            name.split("-")[1], 3, 0)
        assert (folder / "predictions.pt").is_file() and not (folder / "model.pt").exists()
    assert log.rstrip().endswith("finished runs: 3")

    again = shuffle_ablation(tmp_path)
    assert "done " not in again and again.rstrip().endswith("finished runs: 3")
