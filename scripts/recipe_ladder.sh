#!/usr/bin/env bash
# Issue 16's recipe, found by measurement on a GPU, one change at a time: every step of the ladder
# (LADDER: one step a line, NAME OPTIONS..., each the step before it plus one change) trained over SEEDS
# seeds on the whole JPEG copy of CIFAR-10, then a table of each step's mean test accuracy and time.
# Seed-major (seed 0 of every step, then seed 1, ...): when the budget ends, every step has as many seeds
# as it could. No new run starts after SECONDS_BUDGET; a run still going gets Ctrl-C at the budget plus
# GRACE and keeps its checkpoint. A rerun skips exported runs and resumes stopped ones, so a second
# device call continues the first. Each run exports to OUT/NAME-sSEED (model.pt only for the last step).
#
#   usage: scripts/recipe_ladder.sh DATA_DIR [OUT]      (DATA_DIR: a folder with train/ and test/, or
#          synthetic for a dry run; OUT: default ladder; relative paths from where it is called)
#   environment: PYTHON (python3), LADDER (scripts/recipe_ladder.txt), SEEDS (3), JOBS (1: runs at a
#                time; several share the GPU by time-slicing, which inflates each run's time, so only the
#                times of runs made alone belong in the table), SECONDS_BUDGET (480), GRACE (60),
#                DEVICE (cuda), EXTRA (options for every run, after the step's: "--limit 1000" for a dry
#                run), STEPS (only these step names, e.g. "base flip"), COPIES (1: seeds per process,
#                trained as one stacked model with --copies, in blocks of COPIES seeds; each still exports
#                OUT/NAME-sSEED, and its seconds are then the time of the whole block)
set -uo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: scripts/recipe_ladder.sh DATA_DIR [OUT]" >&2
    exit 2
fi
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # from the caller's directory
case $1 in cifar10|synthetic) data=$1 ;; *) data=$(absolute "$1") ;; esac
out=$(absolute "${2:-ladder}")
python=${PYTHON:-python3}
case $python in */*) python=$(absolute "$python") ;; esac
ladder=$(absolute "${LADDER:-$(dirname "$0")/recipe_ladder.txt}")  # by default, the one beside the script
seeds=${SEEDS:-3}
jobs=${JOBS:-1}
budget=${SECONDS_BUDGET:-480}
only=" ${STEPS:-} "
[ -f "$ladder" ] || { echo "no such ladder file: $ladder" >&2; exit 2; }

# The steps: comments and blank lines dropped; NAME names files, so it stays plain.
names=() options=()
while read -r name rest; do
    [ -n "$name" ] || continue
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "bad step name in $ladder: $name" >&2; exit 2; }
    names+=("$name") options+=("$rest")
done < <(sed 's/#.*//' "$ladder")
[ ${#names[@]} -gt 0 ] || { echo "no step in $ladder" >&2; exit 2; }
for name in $only; do
    [[ " ${names[*]} " == *" $name "* ]] || { echo "STEPS: no step $name in $ladder" >&2; exit 2; }
done

cd "$(dirname "$0")/.."  # the clone's root: python -m shufflenet imports this clone
mkdir -p "$out/runs" || exit 2
exec > >(tee -a "$out/ladder.log") 2>&1
tee_pid=$!
finish() { exec >&- 2>&-; wait "$tee_pid"; }  # the log is whole when the script returns
trap finish EXIT
export PYTHONUNBUFFERED=1 PYTHON=$python DATA=$data OUT=$out DEVICE=${DEVICE:-cuda} EXTRA=${EXTRA:-}
export GRACE=${GRACE:-60} KEEP_MODEL=${names[-1]} COPIES=${COPIES:-1}  # KEEP_MODEL: the final weights
export STOP_AT=$(( $(date +%s) + budget ))

# OUT/ladder.json first, what the table is a result of; a rerun's settings replace it, the earlier ones
# kept under "earlier". Every step's options (and EXTRA) go through the trainer's parser now: a typo
# fails here, not in every run of a device call.
steps=$(for i in "${!names[@]}"; do echo "${names[$i]} ${options[$i]}"; done)
STEPS_RUN=$steps SEEDS=$seeds JOBS=$jobs BUDGET=$budget ONLY=${STEPS:-} LADDER=$ladder \
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown) $python -c '
import json, os, sys, time
from pathlib import Path
from shufflenet.runs import build_parser
e = os.environ
steps = [line.split(None, 1) + [""] for line in e["STEPS_RUN"].splitlines()]
parser = build_parser()
parser.print_usage = lambda file=None: None  # the error alone
for name, options, _ in steps:
    try:
        parser.parse_args(options.split() + e["EXTRA"].split())
    except SystemExit:
        sys.exit(f"step {name}: its options (with EXTRA) are refused by the trainer")
record = {"ladder": [f"{name} {options}".strip() for name, options, _ in steps], "ladder_file": e["LADDER"],
          "steps": e["ONLY"], "seeds": int(e["SEEDS"]), "jobs": int(e["JOBS"]),
          "copies": int(e["COPIES"]), "seconds_budget": int(e["BUDGET"]), "grace": int(e["GRACE"]),
          "device": e["DEVICE"],
          "extra": e["EXTRA"], "data": e["DATA"], "commit": e["COMMIT"],
          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
path = Path(e["OUT"]) / "ladder.json"
if path.is_file():
    earlier = json.loads(path.read_text())
    record["earlier"] = earlier.pop("earlier", []) + [earlier]
path.write_text(json.dumps(record, indent=1) + "\n")
' || exit 2
echo "== $(date -u +%FT%TZ) recipe ladder: ${#names[@]} steps ${STEPS:+(run: $STEPS) }x $seeds seeds, $jobs at a time, on $DEVICE," \
     "no new run after $budget s; results in $out"

# `timeout` exits 124 when it stopped the run at its limit (Ctrl-C: a checkpoint at a step boundary),
# 137 when it had to kill it (the last epoch's checkpoint stands).
one_run() {  # one run: NAME SEED OPTIONS... (with COPIES > 1: seeds SEED to SEED + COPIES - 1 as one)
    local run=$1-s$2 name=$1 seed=$2 seeds resume="" code each missing="" export_to
    shift 2
    seeds=$(seq "$seed" $(( seed + COPIES - 1 )))
    # predictions.pt is the export's last file: a run stopped while exporting is not skipped
    for each in $seeds; do [ -f "$OUT/$name-s$each/predictions.pt" ] || missing=yes; done
    [ -n "$missing" ] || { echo "skip $run: already exported"; exit 0; }
    export_to=$OUT/$run
    [ "$COPIES" -gt 1 ] && run=$run-copies$COPIES export_to=$OUT/$name-s{seed}
    [ "$(date +%s)" -lt "$STOP_AT" ] || { echo "not started $run: the budget is spent"; exit 0; }
    [ -f "$OUT/runs/$run/checkpoint.pt" ] && resume="--resume"
    echo "== $(date -u +%FT%TZ) $run: $* $EXTRA $resume" >> "$OUT/runs/$run.log"
    # EXTRA after the step's options (argparse: the last one wins); the bookkeeping's options after both
    # shellcheck disable=SC2086  # EXTRA: several options
    timeout -s INT -k 20 $(( STOP_AT - $(date +%s) + GRACE )) $PYTHON -m shufflenet.train "$@" $EXTRA \
        --data "$DATA" --seed "$seed" --copies "$COPIES" --device "$DEVICE" --no-progress \
        --out "$OUT/runs/$run" $resume --export "$export_to" >> "$OUT/runs/$run.log" 2>&1
    code=$?
    case $code in
        0) [ "$name" = "$KEEP_MODEL" ] || for each in $seeds; do rm -f "$OUT/$name-s$each/model.pt"; done
           echo "done $run: $(grep '^done:' "$OUT/runs/$run.log" | tail -n 1 | sed 's/^done: //; s/; results in.*//')" ;;
        124) echo "stopped $run at the budget: its checkpoint stands, a rerun continues it" ;;
        137) echo "killed $run after the budget: its last epoch's checkpoint stands, a rerun continues it" ;;
        *) echo "failed $run (status $code): see $OUT/runs/$run.log"; exit 1 ;;
    esac
}
export -f one_run

status=0
for seed in $(seq 0 "$COPIES" $(( seeds - 1 ))); do
    for i in "${!names[@]}"; do
        [ "$only" = "  " ] || [[ $only == *" ${names[$i]} "* ]] && echo "${names[$i]} $seed ${options[$i]}"
    done
done | xargs -P "$jobs" -L 1 bash -c 'one_run "$@"' _ || status=1

# The table: every step in ladder order, the mean over its exported seeds; the change is what the step's
# options add to the step before it.
echo "== $(date -u +%FT%TZ) done in ${SECONDS} s"
$python -c '
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
record = json.loads((out / "ladder.json").read_text())
runs = {}
for path in sorted(out.glob("*/summary.json")):
    runs.setdefault(path.parent.name.rsplit("-s", 1)[0], []).append(json.loads(path.read_text()))
def groups(options):  # "--a 1 --b" -> {"--a 1", "--b"}
    return set(" ".join(options).replace(" --", "\n--").splitlines()) if options else set()
print("%-14s %5s %10s %13s %8s  change" % ("step", "seeds", "test acc %", "min-max %", "seconds"))
def row(name, done, change, key=None):
    if not done:
        print("%-14s %5d %10s %13s %8s  %s" % (name, 0, "-", "-", "-", change))
        return
    acc = [100 * (s["final_test_acc"][key] if key else s["test_acc"]) for s in done]
    seconds = statistics.mean(s["seconds"] for s in done)
    spread = f"{min(acc):.2f}-{max(acc):.2f}"
    print(f"{name:14} {len(done):5d} {statistics.mean(acc):10.2f} {spread:>13} {seconds:8.1f}  {change}")
before = set()
for index, line in enumerate(record["ladder"]):
    name, *options = line.split()
    change = " ".join(sorted(groups(options) - before)) or "-"
    before = groups(options)
    done = runs.get(name, [])
    finals = done[0].get("final_test_acc", {}) if done else {}
    if index == 0 and len(finals) == 4:  # the first step, scored four ways: one change a row
        for key, label in (("weights", "as trained"), ("weights+flip", "--test-flip"),
                           ("ema", "--ema (no flip)"), ("ema+flip", "--ema --test-flip")):
            row(f"{name}:{key}", done, label, key)
    else:
        row(name, done, change)
jobs = record["jobs"]
if jobs > 1:
    print(f"JOBS={jobs}: runs shared the device, so their seconds are inflated")
copies = record.get("copies", 1)
if copies > 1:
    print(f"COPIES={copies}: seeds trained {copies} at a time, so the seconds are those of {copies} runs")
' "$out" || status=1
exit $status
