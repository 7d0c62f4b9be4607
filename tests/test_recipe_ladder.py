"""The recipe ladder's plumbing, on the CPU: scripts/recipe_ladder.sh as a dry run on synthetic data.

The GPU is lent rarely and briefly, so the one script that measures the ladder on it must work the first
time: every step's options reach the trainer (EXTRA after them, so that it shrinks every run), runs go
seed-major, each is exported, the table is right, a rerun continues instead of redoing, and no run starts
after the budget. And the committed ladder is one the trainer accepts, one change a step.
"""

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from shufflenet.runs import build_parser
from shufflenet.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "recipe_ladder.sh"
LADDER = """\
# a tiny ladder: the first step keeps a moving average (scored four ways), the second adds the flip
one   --epochs 3 --warmup 0.1 --ema 0.9               # the baseline
two   --epochs 3 --warmup 0.1 --ema 0.9 --test-flip
"""
DRY_RUN = {"DEVICE": "cpu", "SEEDS": "2", "JOBS": "1",
           "EXTRA": "--scale 0.25 --limit 64 --batch-size 32 --epochs 1 --threads 1"}
RUNS = ["one-s0", "two-s0", "one-s1", "two-s1"]  # seed-major


@pytest.fixture
def ladder(tmp_path):
    (tmp_path / "ladder.txt").write_text(LADDER)
    return tmp_path


def recipe_ladder(where, *args, **settings):
    """Run the script from ``where`` (relative paths are taken from there) with the tiny ladder."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "LADDER": "ladder.txt", **DRY_RUN, **settings}
    done = subprocess.run(["bash", str(SCRIPT), *args], cwd=where, env=env, capture_output=True, text=True,
                          timeout=180)
    return done.returncode, done.stdout + done.stderr


def table(log):
    """The final table's rows, by step: (seeds, mean %, min-max, seconds, change)."""
    lines = log.rstrip().splitlines()
    header = max(i for i, line in enumerate(lines) if line.startswith("step "))
    assert lines[header].split() == ["step", "seeds", "test", "acc", "%", "min-max", "%", "seconds", "change"]
    return {line.split()[0]: line.split(None, 5)[1:] for line in lines[header + 1:]
            if not line.startswith(("JOBS=", "COPIES="))}  # the notes under a table of runs made together


def test_a_dry_run_exports_every_run_seed_major_and_a_rerun_skips_them(ladder):
    code, log = recipe_ladder(ladder, "synthetic", "out")
    out = ladder / "out"
    assert code == 0, log
    assert re.findall(r"^done (\S+): test accuracy", log, re.M) == RUNS, log  # seed 0 of every step first
    summaries = {}
    for run in RUNS:
        summary = summaries[run] = json.loads((out / run / "summary.json").read_text())
        config = summary["config"]
        assert config["seed"] == int(run[-1]) and config["device"] == "cpu" and config["data"] == "synthetic"
        assert config["warmup"] == 0.1 and config["test_flip"] == run.startswith("two")  # the step's options
        assert summary["epochs"] == 1 and config["batch_size"] == 32  # EXTRA came after them, and won
        assert config["out"] == str(out / "runs" / run) and (out / "runs" / f"{run}.log").is_file()
        assert (out / run / "predictions.pt").is_file()
        assert (out / run / "model.pt").is_file() == run.startswith("two")  # the last step's weights only

    record = json.loads((out / "ladder.json").read_text())
    assert record["ladder"] == ["one --epochs 3 --warmup 0.1 --ema 0.9",
                                "two --epochs 3 --warmup 0.1 --ema 0.9 --test-flip"]
    assert (record["seeds"], record["jobs"], record["seconds_budget"], record["device"]) == (2, 1, 480, "cpu")
    assert record["extra"] == DRY_RUN["EXTRA"] and record["ladder_file"] == str(ladder / "ladder.txt")
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", record["commit"]) and record["started"].endswith("Z")
    assert "earlier" not in record

    rows = table(log)
    # The first step's runs scored four ways (the summary's final_test_acc), one change a row.
    assert list(rows) == ["one:weights", "one:weights+flip", "one:ema", "one:ema+flip", "two"]
    assert [rows[f"one:{key}"][4] for key in ("weights", "weights+flip", "ema", "ema+flip")] == \
        ["as trained", "--test-flip", "--ema (no flip)", "--ema --test-flip"]
    for label, (seeds, mean, spread, seconds, change) in rows.items():
        step, _, key = label.partition(":")
        accuracy = [100 * (summaries[f"{step}-s{seed}"]["final_test_acc"][key] if key else
                           summaries[f"{step}-s{seed}"]["test_acc"]) for seed in (0, 1)]
        assert seeds == "2" and mean == f"{statistics.mean(accuracy):.2f}"
        assert spread == f"{min(accuracy):.2f}-{max(accuracy):.2f}"
        assert float(seconds) == pytest.approx(statistics.mean(
            summaries[f"{step}-s{seed}"]["seconds"] for seed in (0, 1)), abs=0.06)
    assert rows["two"][4] == "--test-flip"  # what the step adds to the one before it
    assert "inflated" not in log  # one run at a time: the times stand
    assert (out / "ladder.log").read_text() == log

    # The rerun (as a second device call would) finishes nothing new; its table is the same.
    code, again = recipe_ladder(ladder, "synthetic", "out", JOBS="2")
    assert code == 0, again
    assert sorted(re.findall(r"^skip (\S+): already exported", again, re.M)) == sorted(RUNS)
    assert not re.search(r"^done ", again, re.M) and table(again) == rows
    assert "JOBS=2: runs shared the device" in again
    record = json.loads((out / "ladder.json").read_text())
    assert record["jobs"] == 2 and [r["jobs"] for r in record["earlier"]] == [1]


def test_copies_train_a_block_of_seeds_in_one_run_and_export_each(ladder):
    code, log = recipe_ladder(ladder, "synthetic", "out", COPIES="2")
    out = ladder / "out"
    assert code == 0, log
    blocks = ["one-s0-copies2", "two-s0-copies2"]  # one run a step, for both seeds
    assert re.findall(r"^done (\S+): test accuracy", log, re.M) == blocks, log
    for run in RUNS:
        summary = json.loads((out / run / "summary.json").read_text())
        assert summary["config"]["seed"] == int(run[-1]) and summary["config"]["copies"] == 2
        assert summary["copy"] == int(run[-1]) and (out / run / "predictions.pt").is_file()
        assert (out / run / "model.pt").is_file() == run.startswith("two")
    assert (out / "runs" / "one-s0-copies2" / "checkpoint.pt").is_file()
    rows = table(log)
    assert [row[0] for row in rows.values()] == ["2"] * 5
    assert "COPIES=2: seeds trained 2 at a time" in log
    assert json.loads((out / "ladder.json").read_text())["copies"] == 2
    code, again = recipe_ladder(ladder, "synthetic", "out", COPIES="2")
    assert code == 0 and re.findall(r"^skip (\S+): already exported", again, re.M) == ["one-s0", "two-s0"]
    assert table(again) == rows


def test_no_run_starts_after_the_budget(ladder):
    code, log = recipe_ladder(ladder, "synthetic", "out", SECONDS_BUDGET="0")
    assert code == 0, log
    assert re.findall(r"^not started (\S+): the budget is spent", log, re.M) == RUNS
    assert sorted(p.name for p in (ladder / "out").iterdir()) == ["ladder.json", "ladder.log", "runs"]
    assert list((ladder / "out" / "runs").iterdir()) == []
    assert [row[:4] for row in table(log).values()] == [["0", "-", "-", "-"]] * 2


def test_bad_arguments_and_options_are_clear_errors(ladder):
    code, log = recipe_ladder(ladder)
    assert code == 2 and "usage" in log
    code, log = recipe_ladder(ladder, "synthetic", "out", LADDER="missing.txt")
    assert code == 2 and "no such ladder file" in log
    code, log = recipe_ladder(ladder, "synthetic", "out", STEPS="two three")
    assert code == 2 and "no step three" in log
    # A typo fails at once, before any run: not once per run of a device call.
    code, log = recipe_ladder(ladder, "synthetic", "out", EXTRA="--epochz 1")
    assert code == 2 and "step one: its options (with EXTRA) are refused by the trainer" in log
    assert "usage:" not in log and list((ladder / "out" / "runs").iterdir()) == []


def ladder_steps(text):
    """``(name, options)`` of each step of a ladder file, and of each commented-out one (``# name --...``)."""
    steps, alternatives = [], []
    for line in text.splitlines():
        if match := re.fullmatch(r"#\s*(\w+)\s+(--.*)", line.strip()):
            alternatives.append((match[1], match[2].split()))
        elif line.split("#")[0].strip():
            name, *options = line.split("#")[0].split()
            steps.append((name, options))
    return steps, alternatives


def test_the_committed_ladder_is_the_trainers_and_one_change_a_step():
    steps, alternatives = ladder_steps((ROOT / "scripts" / "recipe_ladder.txt").read_text())
    names = [name for name, _ in steps]
    assert names == ["base", "lr", "warmup", "compile", "longer"]
    parser = build_parser()
    parsed = {name: vars(parser.parse_args(options)) for name, options in steps + alternatives}
    for name, options in steps + alternatives:  # the script sets these for every run
        assert not {"--data", "--seed", "--device", "--out", "--export", "--resume"} & set(options), name
    base = parsed["base"]
    assert (base["epochs"], base["batch_size"], base["groups"], base["scale"]) == (40, 512, 3, 1.0)
    # The committed recipe's training: the moving average and the flips only change what is evaluated.
    assert base["ema"] and base["test_flip"] and base["warmup"] == 0.25 and not base["compile"]
    changes = [{key for key in parsed[name] if parsed[name][key] != parsed[before][key]}
               for before, name in zip(names, names[1:])]
    assert changes == [{"lr"}, {"warmup"}, {"compile"}, {"epochs"}]
    assert parsed["lr"]["lr"] == 2 * TrainConfig(batch_size=512).peak_lr  # twice the rule's rate
    assert parsed["longer"]["epochs"] == 80
    # The alternatives: CUDA graphs, one change after compile; cutout, one change after longer; the recipe
    # as a T4 (Colab) runs it, float16 with a gradient scaler.
    assert [name for name, _ in alternatives] == ["graphs", "cutout", "colab"]
    for name, before, key, value in (("graphs", "compile", "compile_mode", "reduce-overhead"),
                                     ("cutout", "longer", "cutout", 16)):
        assert {k for k in parsed[name] if parsed[name][k] != parsed[before][k]} == {key}
        assert parsed[name][key] == value
    assert {key for key in base if parsed["colab"][key] != base[key]} == {"precision"}
    assert parsed["colab"]["precision"] == "fp16"
