#!/usr/bin/env bash
# Issue 31, item 3: the recipe trained on true, aligned and unaligned scores, scored once on the
# same test split (reports/bench/PREREGISTRATION-alignment.md). Resumable like preregistered.sh:
# a finished run is kept, an interrupted one continues from its last.pt.
#
#   bash benchmarks/quality/alignment.sh prepare   # render bench with scores, align, 4 shard sets
#   bash benchmarks/quality/alignment.sh train     # 3 variants x 3 runs x 3 seeds + supervised
#   bash benchmarks/quality/alignment.sh status    # finished / missing runs
#   bash benchmarks/quality/alignment.sh score     # once: the test split, Table 1 with intervals
#
# WORK (default ./bench-align) holds corpora, shards and runs; nothing there is committed.
# PRESET (default bench) and PARAMS (default params/bench.yaml) exist for a smoke run, e.g.
# WORK=/tmp/smoke PRESET=tiny PARAMS=params.yaml SEEDS=0 bash benchmarks/quality/alignment.sh ...
set -euo pipefail
WORK=${WORK:-bench-align}
BIN=${BIN:-.venv/bin}
PRESET=${PRESET:-bench}
PARAMS=${PARAMS:-params/bench.yaml}
WORKERS=${WORKERS:-2}
SEEDS=${SEEDS:-0 1 2}
VARIANTS="true aligned unaligned"
CHAIN="step1 scorecritic-step2 scorecritic"

plan() {  # lines "seed variant recipe"; the supervised reference has variant "stems"
  for s in $SEEDS; do
    for v in $VARIANTS; do for r in $CHAIN; do echo "$s $v $r"; done; done
    echo "$s stems supervised"
  done
}
step_of() { "$BIN/train" recipes "$1" | awk '/^step:/ {print $2; exit}'; }
run_dir() { echo "$WORK/runs/seed$1/$2/$3"; }
finished() { [ -f "$(run_dir "$@")/metrics.json" ] && grep -q '"stopped": "[a-z_]' "$(run_dir "$@")/metrics.json"; }
shards_of() { case "$1" in true) echo "$WORK/data-true" ;; stems) echo "$WORK/data-stems" ;;
                          *) echo "$WORK/data-$1" ;; esac; }

prepare() {
  local corpus="$WORK/corpus/$PRESET" common=(--instruments piano,guitar,bass --workers "$WORKERS" --no-progress)
  "$BIN/prep" synth-slakh --preset "$PRESET" --out "$corpus" --workers "$WORKERS" --unaligned-scores
  "$BIN/prep" align --corpus "$corpus" --out "$WORK/corpus/aligned" --workers "$WORKERS" --no-progress
  "$BIN/prep" align --corpus "$corpus" --out "$WORK/corpus/unaligned" --method none --workers "$WORKERS" --no-progress
  "$BIN/prep" build-shards --slakh-root "$corpus" --out "$WORK/data-true" --stems test "${common[@]}"
  "$BIN/prep" build-shards --slakh-root "$WORK/corpus/aligned" --out "$WORK/data-aligned" --stems test "${common[@]}"
  "$BIN/prep" build-shards --slakh-root "$WORK/corpus/unaligned" --out "$WORK/data-unaligned" --stems test "${common[@]}"
  "$BIN/prep" build-shards --slakh-root "$corpus" --out "$WORK/data-stems" --stems all "${common[@]}"
}

train_one() {
  local seed=$1 variant=$2 recipe=$3 out extra=() chain
  out=$(run_dir "$@")
  finished "$@" && return 0
  [ "$recipe" = supervised ] && extra=(--set train.max_epochs=60)
  case "$recipe" in  # a chain's later runs start from its own earlier ones
    scorecritic-step2) extra+=(--transcriptor "$(run_dir "$seed" "$variant" step1)/best.pt") ;;
    scorecritic) extra+=(--transcriptor "$(run_dir "$seed" "$variant" step1)/best.pt"
                         --separator "$(run_dir "$seed" "$variant" scorecritic-step2)/best.pt") ;;
  esac
  [ -f "$out/last.pt" ] && extra+=(--resume)
  "$BIN/train" "$(step_of "$recipe")" --recipe "$recipe" --shards "$(shards_of "$variant")" \
    --params "$PARAMS" --seed "$seed" --out "$out" --no-progress "${extra[@]}"
}

score() {
  local missing
  missing=$(plan | while read -r s v r; do finished "$s" "$v" "$r" || echo "seed$s/$v/$r"; done)
  [ -z "$missing" ] || { echo "refusing to score test: runs not finished: $missing" >&2; exit 1; }
  [ ! -e "$WORK/TEST_SCORED" ] || { echo "test was scored already ($(cat "$WORK/TEST_SCORED"))" >&2; exit 1; }
  date -u +%FT%TZ > "$WORK/TEST_SCORED"
  for s in $SEEDS; do  # one runs folder per seed: every system under its own label
    local systems="$WORK/systems/seed$s"
    mkdir -p "$systems"
    for v in $VARIANTS; do for r in $CHAIN; do
      ln -sfn "$(realpath "$(run_dir "$s" "$v" "$r")")" "$systems/$r-$v"; done; done
    ln -sfn "$(realpath "$(run_dir "$s" stems supervised)")" "$systems/supervised"
    "$BIN/train" evaluate --shards "$WORK/data-true" --split test --runs "$systems" --out "$WORK/scores/seed$s"
  done
  # shellcheck disable=SC2046
  "$BIN/python" -m benchmarks.diagnostics.intervals --reference supervised \
    --difference scorecritic-true scorecritic-aligned --difference scorecritic-true scorecritic-unaligned \
    $(for s in $SEEDS; do echo "$WORK/scores/seed$s"; done) | tee "$WORK/scores/table1.txt"
}

case "${1:-}" in
  prepare) prepare ;;
  train) plan | while read -r seed variant recipe; do train_one "$seed" "$variant" "$recipe"; done ;;
  status) plan | while read -r s v r; do
            if finished "$s" "$v" "$r"; then echo "done    seed$s $v $r"; else echo "missing seed$s $v $r"; fi; done ;;
  score) score ;;
  *) sed -n 2,13p "$0"; exit 2 ;;
esac
