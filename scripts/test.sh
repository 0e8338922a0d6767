#!/usr/bin/env bash
# The tests on a fresh machine: install ima with what its tests need (pytest, ruff, the
# Adversarial Robustness Toolbox cross-check, nibabel for the NIfTI tests), lint, then run
# the default suite (CPU, a few minutes; `-m slow` and `-m gpu` select the others).
#   bash scripts/test.sh [PYTEST ARGS...]
# PyTorch comes with ima (torch>=2.2); install the build you want first (CI installs the
# CPU build, torch==2.13.0) or pip picks its default one.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test,autoattack,medical]'
# torchattacks, the peer of the AutoAttack components' cross-checks: without its
# dependencies, which would replace the installed torch with another build
python3 -m pip install --quiet --disable-pip-version-check --no-deps 'torchattacks>=3.5'
python3 -m ruff check src tests benchmarks scripts
python3 -m pytest "$@"
