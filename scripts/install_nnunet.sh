#!/usr/bin/env bash
# nnU-Net v2 for ima's trainers (ima.integrations.nnunet) on a machine that must keep its
# torch build: nnunetv2 and dynamic-network-architectures without their dependencies
# (dynamic-network-architectures requires timm, which pulls torchvision and with it a CUDA
# build of torch of several GB), then nnU-Net's other requirements. timm is needed only by
# nnU-Net's primus/eva/dinov2 networks; without it, start ima's trainers with
# `ima nnunet train` (docs/nnunet.md). With a normal installation, `pip install 'ima[nnunet]'`.
#   bash scripts/install_nnunet.sh
set -euo pipefail
pip=(python3 -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --no-deps 'nnunetv2>=2.8,<2.9' 'dynamic-network-architectures>=0.4.4,<0.5'
"${pip[@]}" 'acvl-utils>=0.2.6,<0.3' 'batchgenerators>=0.25.1' 'batchgeneratorsv2>=0.3.2' \
    einops scipy scikit-learn 'scikit-image>=0.19.3' 'SimpleITK>=2.2.1' pandas graphviz \
    tifffile requests nibabel matplotlib seaborn imagecodecs yacs 'blosc2>=3.3.2' tqdm
