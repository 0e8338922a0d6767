"""The hyperparameters of ima's nnU-Net trainers: one YAML file beside the plans.

nnU-Net starts a trainer from its name alone (``nnUNetv2_train DATASET 2d FOLD -tr
nnUNetTrainerIMA``), so the settings live in a file, found at ``$IMA_NNUNET_SETTINGS``
or else as ``ima_nnunet.yaml`` in the dataset's preprocessed folder (beside
``nnUNetPlans.json``)::

    ima:                 # nnUNetTrainerIMA: ima.methods.IMA's hyperparameters
      eps_max: 10.0      # required; L2 norm in nnU-Net's normalised (z-score) units
      delta_eps: 2.0     # default eps_max / num_epochs
    pgd:                 # nnUNetTrainerPGD: ima.methods.VanillaAdversarial's
      eps: 5.0           # required
    task:                # what "correct" means: ima.SegmentationTask's settings
      threshold: 0.6
    nnunet:              # optional: nnU-Net's own training length
      num_epochs: 50
      num_iterations_per_epoch: 50
      num_val_iterations_per_epoch: 50
      save_every: 5      # epochs between checkpoint_latest (default num_epochs / 10, <= 50)

Unknown sections and keys are errors; a trainer needs only its own section.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...config import read_config_file
from ...tasks import SegmentationTask
from ...validation import check_int

__all__ = ["SETTINGS_FILE", "TRAINER_SECTIONS", "Settings", "load_settings", "settings_path"]

SETTINGS_FILE = "ima_nnunet.yaml"
ENV = "IMA_NNUNET_SETTINGS"
#: The settings section of each trainer's method, and the ima method it builds.
TRAINER_SECTIONS = {"ima": "ima", "pgd": "adv"}
NNUNET_KEYS = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch",
               "save_every")
TASK_KEYS = ("threshold", "empty_dice", "dice_inclusive")


@dataclass(frozen=True)
class Settings:
    """The checked file: ``values`` by section (``ima``, ``pgd``, ``task``, ``nnunet``)
    and the ``source`` it came from."""

    values: dict
    source: str

    @property
    def task(self) -> SegmentationTask:
        return SegmentationTask(**self.values.get("task", {}))

    @property
    def nnunet(self) -> dict:
        return dict(self.values.get("nnunet", {}))

    def method(self, section: str) -> dict:
        """The hyperparameters of the method a trainer's ``section`` builds."""
        if section not in self.values:
            raise ValueError(
                f"the trainer needs the section {section!r} in {self.source} (docs/nnunet.md)"
            )
        return dict(self.values[section])


def settings_path(preprocessed_dataset_folder) -> Path:
    """``$IMA_NNUNET_SETTINGS`` if set, else ``ima_nnunet.yaml`` beside the plans."""
    given = os.environ.get(ENV)
    if given:
        return Path(given)
    if preprocessed_dataset_folder is None:
        raise ValueError(f"nnUNet_preprocessed is not set and neither is {ENV}")
    return Path(preprocessed_dataset_folder) / SETTINGS_FILE


def load_settings(path) -> Settings:
    """Read and check the settings file; a missing file or a bad key is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no ima settings file at {path}: write one (e.g. 'ima:\\n  eps_max: 10') or "
            f"set {ENV} to its path (docs/nnunet.md)"
        )
    raw = read_config_file(path)
    return check_settings(raw, str(path))


def check_settings(raw: dict, source: str) -> Settings:
    known = {*TRAINER_SECTIONS, "task", "nnunet"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)} in {source}; allowed: "
                         f"{', '.join(sorted(known))}")
    for section, value in raw.items():
        if not isinstance(value, dict):
            raise ValueError(f"section {section!r} of {source} must be a mapping, got {value!r}")
    _check_keys(raw.get("task", {}), TASK_KEYS, "task", source)
    _check_keys(raw.get("nnunet", {}), NNUNET_KEYS, "nnunet", source)
    for key, value in raw.get("nnunet", {}).items():
        check_int(f"nnunet.{key}", value, low=1)
    SegmentationTask(**raw.get("task", {}))  # its own checks
    return Settings({k: dict(v) for k, v in raw.items()}, source)


def _check_keys(values: dict, allowed, section: str, source: str) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in section {section!r} of "
                         f"{source}; allowed: {', '.join(allowed)}")
