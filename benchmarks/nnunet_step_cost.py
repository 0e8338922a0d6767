"""Cost of a training step of ima's nnU-Net trainers against nnU-Net's own step.

    python benchmarks/nnunet_step_cost.py --dataset 4 --configuration 2d [--steps 20]
        [--threads 1] [--device cpu]

nnU-Net's environment variables name the folders; the dataset must be planned and
preprocessed, and ``ima_nnunet.yaml`` written beside its plans (docs/nnunet.md). After a
warm-up of nnU-Net's own (clean) steps, times ``--steps`` steps each of nnUNetTrainer's
``train_step``, nnUNetTrainerIMA's and nnUNetTrainerPGD's on the same batches, and prints
seconds per step and the ratios to the clean step: an nnU-Net epoch time (250 steps by
default, the paper's 50) times the ratio is the epoch time of the robust trainer.

``--write-synthetic RAW_TASK_FOLDER`` writes a Decathlon-format task with Hippocampus's
shapes instead (labels 1 and 2 in a 35x50x36 volume, 20 cases) and exits: a stand-in to
try the commands of docs/nnunet.md where the real Task04_Hippocampus is not at hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


def write_synthetic_hippocampus(folder: Path, cases: int = 20, seed: int = 0) -> None:
    import nibabel as nib

    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    (folder / "imagesTs").mkdir()  # the real task's unlabelled cases (none here)
    rng = np.random.default_rng(seed)
    shape = (35, 50, 36)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    entries = []
    for c in range(cases):
        centre = np.array(shape) / 2 + rng.uniform(-3, 3, size=3)
        radii = np.array([6.0, 14.0, 8.0]) * rng.uniform(0.8, 1.2, size=3)
        inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
        label = np.where(inside, np.where(grid[..., 1] < centre[1], 1, 2), 0).astype(np.uint8)
        image = 400.0 + 80.0 * (label == 1) + 140.0 * (label == 2)
        image = image + rng.normal(0.0, 40.0, size=shape)
        name = f"hippocampus_{c + 1:03d}"
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine),
                 folder / "imagesTr" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), folder / "labelsTr" / f"{name}.nii.gz")
        entries.append({"image": f"./imagesTr/{name}.nii.gz",
                        "label": f"./labelsTr/{name}.nii.gz"})
    meta = {"name": "Hippocampus (synthetic)", "modality": {"0": "MRI"},
            "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
            "numTraining": cases, "numTest": 0, "training": entries, "test": [],
            "tensorImageSize": "3D"}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=1))


def _time(step, batches) -> float:
    began = time.perf_counter()
    for batch in batches:
        step(batch)
    return (time.perf_counter() - began) / len(batches)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="4")
    p.add_argument("--configuration", default="2d")
    p.add_argument("--fold", default="0")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=50, help="clean steps first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--write-synthetic", metavar="RAW_TASK_FOLDER")
    args = p.parse_args()
    if args.write_synthetic:
        write_synthetic_hippocampus(Path(args.write_synthetic))
        print(f"wrote {args.write_synthetic}")
        return 0
    torch.set_num_threads(args.threads)
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from ima.integrations.nnunet.launcher import build_trainer

    ima = build_trainer(args.dataset, args.configuration, args.fold,
                        trainer="nnUNetTrainerIMA", device=args.device)
    ima.on_train_start()
    for _ in range(args.warmup):
        nnUNetTrainer.train_step(ima, next(ima.dataloader_train))
    batches = [next(ima.dataloader_train) for _ in range(args.steps)]
    pgd = build_trainer(args.dataset, args.configuration, args.fold,
                        trainer="nnUNetTrainerPGD", device=args.device)
    pgd.initialize()
    pgd._ensure_method()
    pgd.network.load_state_dict(ima.network.state_dict())
    state = {k: v.clone() for k, v in ima.network.state_dict().items()}
    times = {}
    for name, trainer, step in (
        ("nnU-Net (clean)", ima, lambda b: nnUNetTrainer.train_step(ima, b)),
        ("IMA", ima, ima.train_step),
        ("PGD", pgd, pgd.train_step),
    ):
        trainer.network.load_state_dict(state)  # every trainer steps from the same weights
        trainer.network.train()
        times[name] = _time(step, batches)
    ima.on_train_end()
    base = times["nnU-Net (clean)"]
    print(f"{args.dataset} {args.configuration}: batch {ima.batch_size}, patch "
          f"{list(ima.configuration_manager.patch_size)}, device {args.device}, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    for name, t in times.items():
        print(f"  {name:16s} {t:8.3f} s/step  ratio {t / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
