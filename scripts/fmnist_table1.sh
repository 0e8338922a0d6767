#!/usr/bin/env bash
# Table 1 of the paper on Fashion-MNIST with the reduced protocol (configs/fmnist-reduced-*.yaml):
# trains and evaluates the rows side by side, one process each (one torch thread each).
#   bash scripts/fmnist_table1.sh [RUNS_DIR]
# Environment: ROWS (default: all ten), DEVICE (auto), EPOCHS (default: the configs' 10; FAT's
# and GAIRAT's lr milestones and the derived schedules follow the epochs), DATA_ROOT (default:
# Debian's dataset-fashion-mnist files).
# On a 2-core CPU run one or two rows at a time (ROWS="ima mma"); on one GPU all ten fit.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs}"
rows="${ROWS:-ce ima mma fat gairat ddn trades adv1 adv3 adv5}"
device="${DEVICE:-auto}"
mkdir -p "$runs"
for r in $rows; do
  extra=()
  [ -n "${DATA_ROOT:-}" ] && extra+=(--set "data.root=$DATA_ROOT")
  if [ -n "${EPOCHS:-}" ]; then
    extra+=(--set "train.epochs=$EPOCHS")
    # the lr steps at the same fractions of the epochs as the configs (FAT 50/75 %, GAIRAT 30/60 %)
    [ "$r" = fat ] && extra+=(--set "optim.milestones=[$((EPOCHS / 2)),$((EPOCHS * 3 / 4))]")
    [ "$r" = gairat ] && extra+=(--set "optim.milestones=[$((EPOCHS * 3 / 10)),$((EPOCHS * 6 / 10))]")
  fi
  out="$runs/fmnist-reduced-$r"
  (
    if [ -f "$out/config.yaml" ]; then
      ima train --resume "$out" --threads 1 --no-progress
    else
      ima train --config "configs/fmnist-reduced-$r.yaml" --out "$out" --threads 1 \
        --set "train.device=$device" --no-progress "${extra[@]}"
    fi
    ima evaluate "$out" --device "$device" --threads 1 --no-progress
  ) > "$runs/fmnist-reduced-$r.log" 2>&1 &
done
wait
ima report $(for r in $rows; do echo "$runs/fmnist-reduced-$r"; done) --ci
