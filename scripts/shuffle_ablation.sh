#!/usr/bin/env bash
# Table 3's ablation in small, on a GPU: ShuffleNet 0.25x, g = 3 and 8, with the channel shuffle, with no
# mixing, and with a fixed random permutation in its place (--mixing shuffle/none/random), over many
# seeds, on the whole JPEG copy of CIFAR-10. Runs go JOBS at a time (a 0.25x network leaves most of a
# large GPU idle), seed after seed, and no new run starts after SECONDS: what finished is what counts.
# Each run exports summary, metrics and per-image predictions (for paired tests) to OUT/NAME.
# COPIES > 1 trains that many seeds of one variant in one process, as one stacked model (--copies: one
# launch per layer for all of them); each still exports a folder of its own, as a run of its own would.
#
#   usage: scripts/shuffle_ablation.sh DATA_DIR [OUT]
#   environment: PYTHON (python3), JOBS (8), SECONDS_BUDGET (240), EPOCHS (10), SEEDS (10), BATCH (256),
#                DEVICE (cuda), THREADS (2 per run), EXTRA (more options for every run, e.g. "--limit 10000"),
#                FIRST_SEED (0: seeds FIRST_SEED to FIRST_SEED + SEEDS - 1, to add seeds to a finished
#                ablation), GROUP_COUNTS ("3 8"), COPIES (1: seeds per process, trained as one; the seeds
#                go in blocks of COPIES, so SEEDS is rounded up to a multiple of it)
set -uo pipefail
data=${1:?usage: scripts/shuffle_ablation.sh DATA_DIR [OUT]}
out=${2:-ablation}
python=${PYTHON:-python3}
jobs=${JOBS:-8}
budget=${SECONDS_BUDGET:-240}
epochs=${EPOCHS:-10}
seeds=${SEEDS:-10}
first_seed=${FIRST_SEED:-0}
group_counts=${GROUP_COUNTS:-3 8}
batch=${BATCH:-256}
copies=${COPIES:-1}
export DEVICE=${DEVICE:-cuda} THREADS=${THREADS:-2} EXTRA=${EXTRA:-} COPIES=$copies
cd "$(dirname "$0")/.."
mkdir -p "$out/runs"
export PYTHONUNBUFFERED=1 PYTHON=$python DATA=$data OUT=$out EPOCHS=$epochs BATCH=$batch
export STOP_AT=$(( $(date +%s) + budget ))

one_run() {  # one run: NAME GROUPS MIXING SEED (NAME ends in -sSEED; COPIES seeds from SEED on)
    [ "$(date +%s)" -lt "$STOP_AT" ] || exit 0
    local variant=${1%-s*} seeds seed missing="" export_to="$OUT/$1" run="$OUT/runs/$1"
    seeds=$(seq "$4" $(( $4 + COPIES - 1 )))
    for seed in $seeds; do [ -f "$OUT/$variant-s$seed/summary.json" ] || missing=yes; done
    [ -n "$missing" ] || exit 0  # exported by an earlier call: a rerun adds only what is missing
    [ "$COPIES" -gt 1 ] && export_to="$OUT/$variant-s{seed}" run="$OUT/runs/$1-copies$COPIES"
    resume=$([ -f "$run/checkpoint.pt" ] && echo --resume)  # one an earlier call stopped goes on
    timeout -s INT -k 20 $(( STOP_AT - $(date +%s) + ${GRACE:-30} )) $PYTHON -m shufflenet.train --data "$DATA" \
        --groups "$2" --scale 0.25 --mixing "$3" --seed "$4" --copies "$COPIES" --epochs "$EPOCHS" \
        --batch-size "$BATCH" --threads "$THREADS" --device "$DEVICE" $EXTRA $resume --no-progress \
        --out "$run" --export "$export_to" > "$run.log" 2>&1 \
        && for seed in $seeds; do rm -f "$OUT/$variant-s$seed/model.pt"; done \
        && echo "done $1 ($COPIES seed(s)): $(grep '^done:' "$run.log" | tail -n 1)" \
        || echo "FAILED $1: see $run.log"
}
export -f one_run

{   # shuffle against no mixing for every seed first; the random-permutation control after them
    for seed in $(seq "$first_seed" "$copies" $(( first_seed + seeds - 1 ))); do
        for groups in $group_counts; do
            for mixing in shuffle none; do echo "g$groups-$mixing-s$seed $groups $mixing $seed"; done
        done
    done
    for seed in $(seq "$first_seed" "$copies" $(( first_seed + seeds - 1 ))); do
        for groups in $group_counts; do echo "g$groups-random-s$seed $groups random $seed"; done
    done
} | xargs -P "$jobs" -L 1 bash -c 'one_run "$@"' _
echo "finished runs: $(ls -d "$out"/g*-s* 2>/dev/null | wc -l)"
