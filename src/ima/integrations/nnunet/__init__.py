"""IMA inside nnU-Net v2 (``pip install 'ima[nnunet]'``; docs/nnunet.md).

* :mod:`.trainers`: ``nnUNetTrainerIMA`` and ``nnUNetTrainerPGD``, run by nnU-Net's own
  ``nnUNetv2_train ... -tr NAME`` once ``nnUNet_extTrainer`` names :func:`trainer_path`,
  or by :func:`.launcher.train` (``ima nnunet train``) where nnU-Net's lookup cannot run;
* :mod:`.settings`: their hyperparameters, a YAML file beside the plans;
* :mod:`.evaluation`: 100-PGD on what nnU-Net trained (``ima nnunet evaluate``).

Importing this package imports nothing of nnU-Net; its modules do.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["trainer_path"]


def trainer_path() -> str:
    """The folder to put in ``nnUNet_extTrainer`` so that nnU-Net finds ima's trainers."""
    return str(Path(__file__).resolve().parent / "ext")
