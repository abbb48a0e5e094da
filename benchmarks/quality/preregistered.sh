#!/usr/bin/env bash
# The runs of reports/bench/PREREGISTRATION.md, in its order, resumable: every finished run is
# kept, an interrupted one continues from its last.pt. Scoring the test splits is a separate,
# one-time phase that refuses to start before every run has finished.
#
#   bash benchmarks/quality/preregistered.sh prepare   # render bench + heldout, build shards
#   bash benchmarks/quality/preregistered.sh train     # every run (days on 2 CPU cores)
#   bash benchmarks/quality/preregistered.sh status    # finished / missing runs
#   bash benchmarks/quality/preregistered.sh score     # once: test of bench, all of heldout
#
# WORK (default ./bench2) holds corpora, shards and runs; nothing there is committed.
set -euo pipefail
WORK=${WORK:-bench2}
BIN=${BIN:-.venv/bin}
PARAMS=${PARAMS:-params/bench.yaml}
WORKERS=${WORKERS:-2}

# seed -> recipes, in the plan's order: headline chains first, then the other paper rows, then
# the ablation ladder
HEADLINE="step1 step2 scorecritic-step2 step3 scorecritic"
PAPER_REST="step2-cmix step2-hmix step3-aml step3-atl baseline"
LADDER="scorecritic-no-aml-positives scorecritic-no-anchor scorecritic-no-owned-remix scorecritic-no-weight-average scorecritic-no-critic-lr"
plan() {  # lines "seed recipe"
  for s in 0 1 2; do for r in $HEADLINE supervised; do echo "$s $r"; done; done
  for r in $PAPER_REST; do echo "0 $r"; done
  for s in 0 1; do for r in $LADDER; do echo "$s $r"; done; done
}

step_of() { "$BIN/train" recipes "$1" | awk '/^step:/ {print $2; exit}'; }
finished() { [ -f "$WORK/runs/seed$1/$2/metrics.json" ] && grep -q '"stopped": "[a-z_]' "$WORK/runs/seed$1/$2/metrics.json"; }

prepare() {
  "$BIN/prep" synth-slakh --preset bench --out "$WORK/corpus/bench" --workers "$WORKERS"
  "$BIN/prep" synth-slakh --preset heldout --out "$WORK/corpus/heldout" --workers "$WORKERS"
  common=(--instruments piano,guitar,bass --workers "$WORKERS" --no-progress)
  "$BIN/prep" build-shards --slakh-root "$WORK/corpus/bench" --out "$WORK/data" --stems test "${common[@]}"
  "$BIN/prep" build-shards --slakh-root "$WORK/corpus/bench" --out "$WORK/data-stems" --stems all "${common[@]}"
  "$BIN/prep" build-shards --slakh-root "$WORK/corpus/heldout" --out "$WORK/heldout" --stems all "${common[@]}"
}

train_one() {
  local seed=$1 recipe=$2 out="$WORK/runs/seed$1/$2" shards="$WORK/data" extra=()
  finished "$seed" "$recipe" && return 0
  [ "$recipe" = supervised ] && shards="$WORK/data-stems" && extra=(--set train.max_epochs=60)
  [ -f "$out/last.pt" ] && extra+=(--resume)
  "$BIN/train" "$(step_of "$recipe")" --recipe "$recipe" --shards "$shards" --params "$PARAMS" \
    --seed "$seed" --out "$out" --no-progress "${extra[@]}"
}

case "${1:-}" in
  prepare) prepare ;;
  train) plan | while read -r seed recipe; do train_one "$seed" "$recipe"; done ;;
  status) plan | while read -r seed recipe; do
            if finished "$seed" "$recipe"; then echo "done    seed$seed $recipe"
            else echo "missing seed$seed $recipe"; fi; done ;;
  score)
    missing=$(plan | while read -r s r; do finished "$s" "$r" || echo "seed$s/$r"; done)
    [ -z "$missing" ] || { echo "refusing to score test: runs not finished: $missing" >&2; exit 1; }
    [ ! -e "$WORK/TEST_SCORED" ] || { echo "test was scored already ($(cat "$WORK/TEST_SCORED"))" >&2; exit 1; }
    date -u +%FT%TZ > "$WORK/TEST_SCORED"
    for s in 0 1 2; do
      "$BIN/train" evaluate --shards "$WORK/data" --split test --runs "$WORK/runs/seed$s" --out "$WORK/scores/bench/seed$s"
      for split in train validation test; do
        "$BIN/train" evaluate --shards "$WORK/heldout" --split "$split" --runs "$WORK/runs/seed$s" --out "$WORK/scores/heldout-$split/seed$s"
      done
    done ;;
  *) sed -n 2,12p "$0"; exit 2 ;;
esac
