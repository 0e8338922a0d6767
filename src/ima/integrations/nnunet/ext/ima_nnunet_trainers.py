"""What nnU-Net finds when ``nnUNet_extTrainer`` names this folder (``ima nnunet
trainer-path`` prints it): ima's trainers, so that ``nnUNetv2_train DATASET 2d FOLD -tr
nnUNetTrainerIMA`` (or ``-tr nnUNetTrainerPGD``) runs them."""

from ima.integrations.nnunet.trainers import nnUNetTrainerIMA, nnUNetTrainerPGD

__all__ = ["nnUNetTrainerIMA", "nnUNetTrainerPGD"]
