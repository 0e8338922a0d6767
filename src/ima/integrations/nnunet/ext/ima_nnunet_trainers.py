"""What nnU-Net finds when ``nnUNet_extTrainer`` names this folder (``ima nnunet
trainer-path`` prints it): ima's trainers, so that ``nnUNetv2_train DATASET 2d FOLD -tr
nnUNetTrainerIMA`` (or ``nnUNetTrainerPGD``, ``nnUNetTrainerClean``) runs them."""

from ima.integrations.nnunet.trainers import (
    nnUNetTrainerClean,
    nnUNetTrainerIMA,
    nnUNetTrainerPGD,
)

__all__ = ["nnUNetTrainerClean", "nnUNetTrainerIMA", "nnUNetTrainerPGD"]
