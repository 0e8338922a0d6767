"""nnU-Net v2 trainers: ``nnUNetTrainerIMA`` (IMA, Algorithms 1-3), ``nnUNetTrainerPGD``
(vanilla adversarial training with 20-step PGD, the paper's "adv" rows) and
``nnUNetTrainerClean`` (nnU-Net's own step for the same training length, the "nnUnet" row).

They are nnU-Net's own trainer with one step changed: planning, preprocessing, patch
sampling, augmentation, deep supervision, the poly schedule, checkpoints and the final
validation are nnU-Net's. The step calls ima's methods (:class:`ima.methods.IMA`,
:class:`ima.methods.VanillaAdversarial`) for the adversarial points, so the attacks are
the library's BPGD and PGD, and trains on nnU-Net's loss (Dice + CE with deep
supervision):

* IMA: ``(1 - beta) * L(clean batch) + beta * (hits / B) * L(boundary points)``, the
  paper's ``((1 - beta) (L0 + L1) + beta L2) / B`` with nnU-Net's loss in place of the sums
  of cross-entropy (:meth:`ima.methods.IMA.combine`);
* PGD: ``(L(clean batch) + L(PGD points)) / 2`` (Eq. 2).

With nnU-Net's ``batch_dice`` (its 2d plans) the Dice term of a loss pools the rows it is
given, so ``L(boundary points)`` is one Dice over the points found, not a mean of
per-sample Dice terms: the paper's formula holds exactly for the cross-entropy term and
in spirit for the Dice term. The clean batch and the adversarial points go through the
network in one forward pass; nnU-Net's networks normalise per instance, so the rows do
not affect each other (a plan with batch norm would mix them).

"Correct" is per-sample Dice above the threshold of the settings' ``task``
(:class:`ima.SegmentationTask`, computed on the full-resolution output), and the attacks
ascend ima's per-sample Dice + CE (nnU-Net's loss with ``batch_dice=False``, the form
the authors' fork attacks with). Inputs are nnU-Net's normalised patches and nothing
clips them (the authors' fork does the same: noise levels are L2 norms in nnU-Net's
normalised units over the whole patch). The attacks run the network in float32, or, on
CUDA, under bf16 autocast where the GPU has it (nnU-Net's fp16 would underflow their
unscaled input gradients), their own arithmetic always in float32.

A training sample, whose margin IMA keeps, is a slice of a case for the ``2d``
configuration (case and slice index, as the authors' fork keys it: the random in-plane
crop and augmentation of each visit are views of that slice), and a whole case for 3-D
configurations (its random patches are views of it). Margins are saved in nnU-Net's
checkpoints (key ``"ima"``), so ``--c`` continues exactly, and under DDP every process's
records are merged at each epoch's end.

Hyperparameters: :mod:`ima.integrations.nnunet.settings`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from ... import distributed
from ...acceleration import Accelerated
from ...methods import build_method
from .settings import TRAINER_SECTIONS, load_settings, settings_path

__all__ = ["PositionedDataLoader", "SampleIndex", "nnUNetTrainerClean", "nnUNetTrainerIMA",
           "nnUNetTrainerPGD"]

# the module (not the class) of nnU-Net's trainer, whose name nnUNetDataLoader it builds with
trainer_module = importlib.import_module("nnunetv2.training.nnUNetTrainer.nnUNetTrainer")


class PositionedDataLoader(nnUNetDataLoader):
    """nnU-Net's data loader; each batch also carries ``positions``: per sample, the
    lower corner of its crop in the preprocessed case (for ``2d``, the slice index first)."""

    def get_bbox(self, *args, **kwargs):
        lower, upper = super().get_bbox(*args, **kwargs)
        self._positions.append([int(v) for v in lower])
        return lower, upper

    def generate_train_batch(self):
        self._positions = []
        batch = super().generate_train_batch()
        batch["positions"] = self._positions
        return batch


@contextlib.contextmanager
def _loader_class(cls):
    """nnU-Net's trainer builds its loaders by the module name ``nnUNetDataLoader``; inside
    this context that name is ``cls`` (nnU-Net itself is not edited)."""
    if getattr(trainer_module, "nnUNetDataLoader", None) is not nnUNetDataLoader:
        raise RuntimeError(
            "this nnU-Net version builds its data loaders differently; ima's trainers support "
            "nnunetv2 2.6-2.8 (nnunetv2.training.nnUNetTrainer.nnUNetTrainer.nnUNetDataLoader)"
        )
    trainer_module.nnUNetDataLoader = cls
    try:
        yield
    finally:
        trainer_module.nnUNetDataLoader = nnUNetDataLoader


class SampleIndex:
    """Numbers the training samples: ``(case, slice)`` pairs for ``2d`` (slices of each case
    in order, cases in the order given), whole cases otherwise."""

    def __init__(self, keys, slices=None):
        self.keys = list(keys)
        self.slices = None if slices is None else [int(s) for s in slices]
        counts = [1] * len(self.keys) if slices is None else self.slices
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        self.offsets = dict(zip(self.keys, starts, strict=True))
        self.count = dict(zip(self.keys, counts, strict=True))
        self.size = int(sum(counts))

    @classmethod
    def of(cls, dataset, *, slices: bool) -> SampleIndex:
        """The index of an nnU-Net dataset's cases; ``slices``: number its slices (2d)."""
        keys = list(dataset.identifiers)
        if not slices:
            return cls(keys)
        return cls(keys, [dataset.load_case(k)[0].shape[1] for k in keys])

    def __len__(self) -> int:
        return self.size

    def __call__(self, keys, positions) -> torch.Tensor:
        rows = []
        for key, position in zip(keys, positions, strict=True):
            if key not in self.offsets:
                raise ValueError(f"case {key!r} is not a training case of this fold")
            if self.slices is None:
                rows.append(self.offsets[key])
                continue
            s = position[0]
            if not 0 <= s < self.count[key]:
                raise ValueError(f"slice {s} outside case {key!r}")
            rows.append(self.offsets[key] + s)
        return torch.tensor(rows, dtype=torch.long)

    def state(self) -> dict:
        return {"keys": self.keys, "slices": self.slices}


class _FullResolution(torch.nn.Module):
    """The network's full-resolution output (the first of deep supervision's outputs)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x):
        out = self.network(x)
        return out[0] if isinstance(out, list | tuple) else out


def _attack_precision(device: torch.device) -> str:
    """bf16 autocast for the attacks on CUDA where the GPU has it (float32's exponent
    range: input gradients of a mean over a whole patch underflow in fp16, and attacks
    get no loss scaling), else float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def _rows(value, rows):
    """Rows of a tensor or of each tensor of a deep-supervision list."""
    if isinstance(value, list | tuple):
        return [v[rows] for v in value]
    return value[rows]


def _split(value, n: int):
    """``value[:n]`` and ``value[n:]`` of a tensor or of each tensor of a list."""
    if isinstance(value, list | tuple):
        return [v[:n] for v in value], [v[n:] for v in value]
    return value[:n], value[n:]


_CUDA = torch.device("cuda")


class _SettingsTrainer(nnUNetTrainer):
    """nnU-Net's trainer with the training length of the settings' ``nnunet`` section;
    its checkpoints also hold the settings it ran (and, for the robust trainers, the
    method's state), so that a continued training runs the same."""

    sections: ClassVar[tuple[str, ...]] = ("task", "nnunet")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA):  # nnU-Net's signature and default
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.ima_settings = load_settings(settings_path(self.preprocessed_dataset_folder_base))
        settings = self.ima_settings.nnunet
        for key, value in settings.items():
            setattr(self, key, value)
        if "save_every" not in settings:
            # nnU-Net's 50 would give a 50-epoch training no checkpoint_latest to continue
            self.save_every = min(self.save_every, max(1, self.num_epochs // 10))
        self.print_to_log_file(f"ima: {type(self).__name__} with {self.ima_settings.source}: "
                               f"{self.ima_settings.values}")

    def _used(self) -> dict:
        """The settings sections this trainer runs on (a continued training checks them;
        ``save_every`` changes no result and may change)."""
        used = {k: dict(v) for k, v in self.ima_settings.values.items() if k in self.sections}
        used.get("nnunet", {}).pop("save_every", None)
        return {k: v for k, v in used.items() if v}

    # ---- checkpoints: nnU-Net's, with the key "ima" added
    def _ima_state(self) -> dict:
        return {"trainer": type(self).__name__, "settings": self._used()}

    def _restore(self, state: dict) -> None:
        """Restore what :meth:`_ima_state` saved beyond the settings."""

    def _ready_to_save(self) -> bool:
        return True

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0 or self.disable_checkpointing or not self._ready_to_save():
            super().save_checkpoint(filename)
            return
        # nnU-Net writes its checkpoint to a side file; the "ima" key is added there and
        # the file then replaces ``filename`` in one step, so a checkpoint is never seen
        # without it (nor half written)
        partial = f"{filename}.ima-partial"
        super().save_checkpoint(partial)
        checkpoint = torch.load(partial, map_location="cpu", weights_only=False)
        checkpoint["ima"] = self._ima_state()
        torch.save(checkpoint, partial)
        os.replace(partial, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = checkpoint.get("ima")
        if state is None:
            raise ValueError("the checkpoint holds no ima state: it was not written by "
                             f"{type(self).__name__}")
        if state["trainer"] != type(self).__name__:
            raise ValueError(f"the checkpoint was written by {state['trainer']}, not "
                             f"{type(self).__name__}")
        used = self._used()
        changed = sorted(k for k in {*state["settings"], *used}
                         if state["settings"].get(k) != used.get(k))
        if changed:
            raise ValueError(f"{self.ima_settings.source} differs from the settings the "
                             f"checkpoint was trained with in section(s) {', '.join(changed)}; "
                             "a continued training runs the checkpoint's settings")
        self._restore(state)


class nnUNetTrainerClean(_SettingsTrainer):  # noqa: N801 (nnU-Net's naming)
    """nnU-Net's own (clean) training for the length the settings give: the "nnUnet" row
    of the paper's Tables 10-15, trained like the robust rows (50 epochs of 50 steps)."""


class _RobustTrainer(_SettingsTrainer):
    """nnU-Net's trainer whose step trains on adversarial points from an ima method."""

    section: ClassVar[str] = ""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.ima_settings.method(self.section)  # a trainer without its section stops here
        self.method = None  # built when training starts: it needs the fold's training cases
        self.sample_index = None

    # ---- set-up
    def _ensure_method(self) -> None:
        if self.method is not None:
            return
        if self.label_manager.has_regions or self.label_manager.has_ignore_label:
            raise ValueError("ima's trainers need plain labels: region-based training and "
                             "ignore labels are not supported")
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        dataset_tr, _ = self.get_tr_and_val_datasets()
        two_d = len(self.configuration_manager.patch_size) == 2
        self.sample_index = SampleIndex.of(dataset_tr, slices=two_d)
        self.method = build_method(
            TRAINER_SECTIONS[self.section], num_samples=len(self.sample_index),
            epochs=self.num_epochs, bounds=None, task=self.ima_settings.task,
            **self.ima_settings.method(self.section),
        )
        # the attacks take input gradients only: under DDP they run the wrapped module
        # (same parameters), so that DDP's reducer never waits for a backward pass
        network = self.network.module if self.is_ddp else self.network
        self.attack_model = Accelerated(_FullResolution(network),
                                        precision=_attack_precision(self.device))
        # the loss of the adversarial points, whose number differs between processes: it
        # must not gather Dice terms across processes (nnU-Net's DDP loss does)
        ddp, self.is_ddp = self.is_ddp, False
        try:
            self.points_loss = self._build_loss()
        finally:
            self.is_ddp = ddp

    def on_train_start(self):
        super().on_train_start()
        self._ensure_method()

    def get_dataloaders(self):
        with _loader_class(PositionedDataLoader):
            return super().get_dataloaders()

    # ---- the step
    def train_step(self, batch: dict) -> dict:
        if "positions" not in batch:
            raise RuntimeError("the training batches carry no sample positions: "
                               "get_dataloaders was replaced by another subclass")
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = ([t.to(self.device, non_blocking=True) for t in target]
                  if isinstance(target, list) else target.to(self.device, non_blocking=True))
        labels = (target[0] if isinstance(target, list) else target)[:, 0].long()
        index = self.sample_index(batch["keys"], batch["positions"])
        self.optimizer.zero_grad(set_to_none=True)
        points, logs = self.adversarial_points(data, labels, index)
        with self._autocast():
            loss = self.robust_loss(data, target, points)
        self._optimise(loss)
        return {"loss": loss.detach().cpu().numpy(), **logs}

    def adversarial_points(self, data, labels, index):
        """The training points and per-batch logs (floats)."""
        raise NotImplementedError

    def robust_loss(self, data, target, points):
        raise NotImplementedError

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast(self.device.type, enabled=True)
        return contextlib.nullcontext()

    def _optimise(self, loss) -> None:
        """nnU-Net's update: gradient scaling on CUDA, gradient norm clipped to 12."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        logs = {k: float(np.mean([o[k] for o in train_outputs]))
                for k in train_outputs[0] if k != "loss"}
        ctx = distributed.Context(self.local_rank, _world(), self.device)
        distributed.sync_margins(self.method, ctx)
        stats = self.method.end_epoch(self.current_epoch)
        logs.update(stats)
        self.print_to_log_file("ima: " + ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))

    # ---- checkpoints
    def _ima_state(self) -> dict:
        return {**super()._ima_state(), "samples": self.sample_index.state(),
                "method": self.method.state_dict()}

    def _ready_to_save(self) -> bool:
        return self.method is not None

    def _restore(self, state: dict) -> None:
        self._ensure_method()
        if self.sample_index.state() != state["samples"]:
            raise ValueError("the fold's training cases or their slices differ from those of "
                             "the checkpoint")
        self.method.load_state_dict(state["method"])


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class nnUNetTrainerIMA(_RobustTrainer):  # noqa: N801
    """IMA inside nnU-Net v2: section ``ima`` of the settings (``eps_max`` required)."""

    section = "ima"
    sections = ("ima", "task", "nnunet")

    def adversarial_points(self, data, labels, index):
        boundary = self.method.find_boundary(self.attack_model, data, labels, index)
        logs = {"boundary_found": float(boundary.success.float().mean()),
                "clean_correct": float(boundary.clean_correct.float().mean())}
        return boundary, logs

    def robust_loss(self, data, target, boundary):
        # one forward pass over the clean batch and the boundary points found (nnU-Net's
        # networks normalise per instance, so rows do not affect each other)
        rows = boundary.success.nonzero().squeeze(1)
        out = self.network(torch.cat([data, boundary.x[rows].to(data.dtype)]))
        clean, points = _split(out, len(data))
        points_loss = self.points_loss(points, _rows(target, rows)) if len(rows) else None
        return self.method.combine(self.loss(clean, target), points_loss, len(rows), len(data))


class nnUNetTrainerPGD(_RobustTrainer):  # noqa: N801
    """Vanilla adversarial training inside nnU-Net v2: section ``pgd`` (``eps`` required)."""

    section = "pgd"
    sections = ("pgd", "task", "nnunet")

    def adversarial_points(self, data, labels, index):
        attack = self.method.perturb(self.attack_model, data, labels)
        return attack.x, {"adv_fooled": float(attack.success.float().mean())}

    def robust_loss(self, data, target, points):
        clean, adv = _split(self.network(torch.cat([data, points.to(data.dtype)])), len(data))
        return (self.loss(clean, target) + self.loss(adv, target)) / 2
