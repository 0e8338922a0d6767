#!/usr/bin/env bash
# Set-up for the tests on a fresh machine: install ima with what its tests need (pytest,
# ruff, the Adversarial Robustness Toolbox cross-check, nibabel for the NIfTI tests,
# torchattacks for the attacks' peer checks, nnU-Net v2 for its trainers), then lint.
# The README's test command runs it, then the default suite:
#   bash scripts/setup_tests.sh && python3 -m pytest
# PyTorch comes with ima (torch>=2.2); install the build you want first (CI installs the
# CPU build, torch==2.13.0) or pip picks its default one.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test,autoattack,medical]'
# torchattacks without its dependencies, which would replace the installed torch
python3 -m pip install --quiet --disable-pip-version-check --no-deps 'torchattacks>=3.5'
# nnU-Net v2 for the trainers' tests, without timm/torchvision (they would replace torch)
bash scripts/install_nnunet.sh
python3 -m ruff check src tests benchmarks scripts
