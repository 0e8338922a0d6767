"""100-PGD (or any evaluation attack of ima) on a network nnU-Net trained.

A sample is a whole 2-D slice of a preprocessed case (the ``2d`` configuration; the
paper's section 4: "each slice is an input sample"), in nnU-Net's normalised units, so
noise levels are L2 norms over the slice's pixels in those units, as during training
(:mod:`ima.integrations.nnunet.trainers`). Nothing clips the attacked slices. The
network sees each slice as nnU-Net's predictor does when the slice fits in one patch:
zero-padded, centred, to the plans' patch size, its logits cropped back (a larger slice
is padded to a size the network's strides divide and run whole, where nnU-Net would
slide a window). Test-time mirroring is off: the attack is on the network itself.

The cases: the fold's validation cases (``splits_final.json``), or any list of
preprocessed training cases with labels. Results are ima's: accuracy (Dice above the
threshold), TVDI and ADI per level, written to ``<fold folder>/eval/`` so that
``ima report FOLD_FOLDER --eval pgd-l2-validation --metric tvdi`` prints the paper's
Tables 10-15 layout.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...evaluation import evaluate
from ...evaluation.results import save_result
from ...tasks import SegmentationTask

__all__ = ["FoldModel", "PaddedToPatch", "case_slices", "evaluate_fold"]


class PaddedToPatch(torch.nn.Module):
    """The network on inputs of any in-plane size: zero-padded (centred) to at least
    ``patch_size`` and to a multiple of ``divisor``, logits cropped back."""

    def __init__(self, network: torch.nn.Module, patch_size, divisor):
        super().__init__()
        self.network = network
        self.patch_size = [int(p) for p in patch_size]
        self.divisor = [int(d) for d in divisor]

    def forward(self, x):
        size = x.shape[2:]
        target = [max(p, -(-s // d) * d) for s, p, d in zip(size, self.patch_size, self.divisor,
                                                          strict=True)]
        pads, crop = [], []
        for s, t in zip(size, target, strict=True):
            low = (t - s) // 2
            pads.append((low, t - s - low))
            crop.append(slice(low, low + s))
        flat = [v for pair in reversed(pads) for v in pair]
        out = self.network(F.pad(x, flat))
        if isinstance(out, list | tuple):
            out = out[0]
        return out[(slice(None), slice(None), *crop)]


class FoldModel:
    """What a fold folder of nnU-Net's results holds: the network (weights loaded, deep
    supervision off), its plans, configuration and checkpoint."""

    def __init__(self, fold_folder, checkpoint: str = "checkpoint_final.pth",
                 device: str = "cpu"):
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        self.fold_folder = Path(fold_folder)
        base = self.fold_folder.parent
        for name in ("plans.json", "dataset.json"):
            if not (base / name).is_file():
                raise FileNotFoundError(
                    f"{base} holds no {name}: is {self.fold_folder} a fold folder of "
                    "nnU-Net's results (.../TRAINER__PLANS__CONFIGURATION/fold_N)?")
        path = self.fold_folder / checkpoint
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint {path}")
        self.plans = json.loads((base / "plans.json").read_text())
        self.dataset_json = json.loads((base / "dataset.json").read_text())
        self.configuration = base.name.rsplit("__", 1)[-1]
        manager = PlansManager(self.plans)
        self.config = manager.get_configuration(self.configuration)
        self.label_manager = manager.get_label_manager(self.dataset_json)
        self.checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        network = nnUNetTrainer.build_network_architecture(
            manager, self.config,
            determine_num_input_channels(manager, self.config, self.dataset_json),
            self.label_manager.num_segmentation_heads, enable_deep_supervision=False,
        )
        weights = {k.removeprefix("module.").removeprefix("_orig_mod."): v
                   for k, v in self.checkpoint["network_weights"].items()}
        network.load_state_dict(weights)
        self.network = network.to(device).eval()
        strides = np.array(self.config.network_arch_init_kwargs["strides"])
        self.model = PaddedToPatch(self.network, self.config.patch_size, strides.prod(axis=0))
        self.dataset_name = self.plans["dataset_name"]

    @property
    def epoch(self) -> int:
        return int(self.checkpoint["current_epoch"])

    @property
    def task(self) -> SegmentationTask:
        """The task the network was trained with (ima's trainers record it), else the
        defaults of :class:`ima.SegmentationTask`."""
        settings = (self.checkpoint.get("ima") or {}).get("settings", {})
        return SegmentationTask(**settings.get("task", {}))


def validation_cases(preprocessed: Path, fold) -> list[str]:
    splits = preprocessed / "splits_final.json"
    if not splits.is_file():
        raise FileNotFoundError(f"no {splits}: give the cases to evaluate")
    folds = json.loads(splits.read_text())
    if str(fold) == "all" or int(fold) >= len(folds):
        raise ValueError(f"fold {fold} has no validation cases in {splits}; give the cases")
    return list(folds[int(fold)]["val"])


def case_slices(dataset, keys, batch_size: int):
    """``(x, y)`` batches of whole slices, case by case (slices of one case share a size):
    ``x`` (B, C, H, W) float32 in nnU-Net's normalised units, ``y`` (B, H, W) labels (the
    preprocessed label maps' -1, outside the cropped region, is background as in
    nnU-Net's training)."""
    for key in keys:
        data, seg, *_ = dataset.load_case(key)
        data = torch.from_numpy(np.asarray(data[:], dtype=np.float32))
        seg = torch.from_numpy(np.asarray(seg[:], dtype=np.int64))[0].clamp_min(0)
        for start in range(0, data.shape[1], batch_size):
            x = data[:, start:start + batch_size].transpose(0, 1).contiguous()
            yield x, seg[start:start + batch_size]  # on the CPU: the evaluation moves them


def evaluate_fold(fold_folder, *, eps, cases=None, checkpoint: str = "checkpoint_final.pth",
                  attack: str = "pgd", steps: int | None = None, batch_size: int = 32,
                  device: str = "cpu", split_name: str | None = None, seed: int = 0,
                  checks: bool = True, task: SegmentationTask | None = None, save: bool = True):
    """Evaluate a fold folder of nnU-Net's results on preprocessed cases (default: the
    fold's validation cases) and write the result into ``<fold_folder>/eval/``.
    Returns ``(result, path)`` (path None when ``save`` is False)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from .launcher import preprocessed_folder

    fold = FoldModel(fold_folder, checkpoint=checkpoint, device=device)
    if len(fold.config.patch_size) != 2:
        raise ValueError(f"configuration {fold.configuration!r} is 3-D; the evaluation "
                         "attacks 2-D slices (the paper's section 4): evaluate a 2d model")
    preprocessed = preprocessed_folder(fold.dataset_name)
    fold_id = fold.fold_folder.name.removeprefix("fold_")
    if cases is None:
        cases = validation_cases(preprocessed, fold_id)
        split_name = split_name or "validation"
    else:
        cases = list(cases)
        # a result's name says which cases: two lists never share a file
        digest = hashlib.sha256("\n".join(cases).encode()).hexdigest()[:8]
        split_name = split_name or f"cases-{digest}"
    folder = preprocessed / fold.config.data_identifier
    dataset_class = infer_dataset_class(str(folder))
    missing = sorted(set(cases) - set(dataset_class.get_identifiers(str(folder))))
    if missing:
        raise ValueError(f"case(s) {', '.join(missing)} are not preprocessed in {folder}")
    dataset = dataset_class(str(folder), identifiers=list(cases))
    result = evaluate(
        fold.model, list(case_slices(dataset, cases, batch_size)), eps=eps,
        attack=attack, steps=steps, bounds=None, task=task or fold.task,
        split_name=split_name, seed=seed, checks=checks, batch_size=batch_size,
    )
    result.epoch = fold.epoch
    if checkpoint != "checkpoint_final.pth":
        result.checkpoint = Path(checkpoint).stem
    return result, (save_result(fold.fold_folder, result) if save else None)
