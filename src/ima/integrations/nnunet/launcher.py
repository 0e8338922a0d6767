"""Start ima's trainers without nnU-Net's lookup of a trainer by name.

``nnUNetv2_train -tr NAME`` finds a trainer by importing every module of nnU-Net's own
trainer folder first, among them trainers that need ``timm``; where ``timm`` cannot be
installed, that lookup fails before it reaches ``nnUNet_extTrainer``. :func:`train` hands
nnU-Net the class itself and otherwise runs what ``nnUNetv2_train`` runs (one process):
the same plans, fold, checkpoints (``--c`` continues), training and final validation.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["TRAINERS", "trainer_class", "train"]

TRAINERS = ("nnUNetTrainerIMA", "nnUNetTrainerPGD", "nnUNetTrainerClean")


def trainer_class(name: str):
    if name not in TRAINERS:
        raise ValueError(f"unknown trainer {name!r}; ima's trainers: {', '.join(TRAINERS)}")
    from . import trainers

    return getattr(trainers, name)


def _fold(fold):
    if str(fold) == "all":
        return "all"
    try:
        return int(fold)
    except ValueError:
        raise ValueError(f"fold must be an integer or 'all', got {fold!r}") from None


def preprocessed_folder(dataset) -> Path:
    """The preprocessed folder of a dataset given by name or id."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if not nnUNet_preprocessed:
        raise ValueError("nnUNet_preprocessed is not set (nnU-Net's environment variables)")
    return Path(nnUNet_preprocessed) / maybe_convert_to_dataset_name(str(dataset))


def build_trainer(dataset, configuration: str, fold, *, trainer: str,
                  plans: str = "nnUNetPlans", device: str = "cuda",
                  continue_training: bool = False):
    import torch

    folder = preprocessed_folder(dataset)
    plans_file = folder / f"{plans}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"no plans {plans_file}: run nnUNetv2_plan_and_preprocess first")
    plan = json.loads(plans_file.read_text())
    if configuration not in plan.get("configurations", {}):
        raise ValueError(f"configuration {configuration!r} is not in {plans_file}; planned: "
                         f"{', '.join(plan.get('configurations', {}))}")
    plan["continue_training"] = continue_training
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return trainer_class(trainer)(plans=plan, configuration=configuration, fold=_fold(fold),
                                  dataset_json=dataset_json, device=torch.device(device))


def train(dataset, configuration: str, fold, *, trainer: str = "nnUNetTrainerIMA",
          plans: str = "nnUNetPlans", device: str = "cuda", continue_training: bool = False,
          validation_only: bool = False, export_probabilities: bool = False,
          disable_checkpointing: bool = False):
    """Train (and validate) as ``nnUNetv2_train DATASET CONFIGURATION FOLD -tr TRAINER``
    would; returns the trainer."""
    from nnunetv2.run.run_training import maybe_load_checkpoint

    if continue_training and validation_only:
        raise ValueError("continue and validation-only cannot be combined")
    t = build_trainer(dataset, configuration, fold, trainer=trainer, plans=plans, device=device,
                      continue_training=continue_training)
    t.disable_checkpointing = disable_checkpointing
    maybe_load_checkpoint(t, continue_training, validation_only)
    if not validation_only:
        t.run_training()
    t.perform_actual_validation(export_probabilities)
    return t
