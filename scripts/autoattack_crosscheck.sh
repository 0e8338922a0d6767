#!/usr/bin/env bash
# 100-PGD beside our AutoAttack beside ART's on trained runs, L2 and Linf (docs/results.md):
#   bash scripts/autoattack_crosscheck.sh RUN_DIR "L2_LEVELS" "LINF_LEVELS" [MAX_SAMPLES]
# e.g. bash scripts/autoattack_crosscheck.sh runs/digits-ce 0.25,0.5,0.75,1 0.02,0.05,0.1,0.15 200
# One torch thread; ART's AutoAttack with 1 restart, as ours (its default is 5).
set -euo pipefail
run="$1"; l2="$2"; linf="$3"; n="${4:-200}"
for pair in "l2 $l2" "linf $linf"; do
  set -- $pair
  for attack in pgd autoattack autoattack-art; do
    extra=()
    [ "$attack" = autoattack-art ] && extra=(--art-restarts 1 --no-checks)
    ima evaluate "$run" --attack "$attack" --norm "$1" --eps "$2" --max-samples "$n" \
      --threads 1 --no-progress "${extra[@]}" | tail -n 1
  done
  ima report "$run" --eval "pgd-$1-test,autoattack-$1-test,autoattack-art-$1-test"
done
