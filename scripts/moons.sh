#!/usr/bin/env bash
# The main job on a fresh machine: install ima, train ce and IMA on Moons with the paper's
# protocol (section 3.1, appendix G.1), evaluate both under 100-PGD (L2, CE and margin
# losses, worst case per sample) and print the report table.
#   bash scripts/moons.sh [RUNS_DIR]        (default RUNS_DIR: runs/)
# Re-running continues finished runs (a no-op) instead of training them again.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs}"
python3 -m pip install --quiet --disable-pip-version-check -e .
for method in ce ima; do
  out="$runs/moons-$method"
  if [ -f "$out/config.yaml" ]; then
    ima train --resume "$out" --no-progress
  else
    ima train --config "configs/moons-$method.yaml" --out "$out" --no-progress
  fi
  ima evaluate "$out" --no-progress
done
ima report "$runs/moons-ce" "$runs/moons-ima" --markdown "$runs/moons-report.md" --csv "$runs/moons-report.csv"
