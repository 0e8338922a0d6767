"""What "correct" and "loss" mean for a model's output.

Attacks, methods and the evaluation never look at logits themselves: they ask a task.
A task gives, per sample,

* ``loss(output, y, loss=None)``: the attack/training objective, shape ``(B,)``; the
  first of ``losses`` (the training loss) when ``loss`` is None;
* ``correct(output, y)``: a bool mask, shape ``(B,)``;
* ``check_target(output, y)``: raises a clear error when ``y`` does not fit ``output``.

Classification (correct = argmax equals the label) and segmentation (correct = per-image
Dice above a threshold, section 4 of the paper) are defined here, with the overlap
metrics of appendix I: :func:`tvdi` (total voxel Dice index) and :func:`adi` (average
Dice index).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_choice, check_real

__all__ = [
    "ClassificationTask",
    "SegmentationTask",
    "Task",
    "adi",
    "dice_from_counts",
    "get_task",
    "tvdi",
]


class Task:
    """Interface of a task; see the module docstring."""

    #: loss names accepted by :meth:`loss`; the first is the training loss
    losses: tuple[str, ...] = ()
    #: the two losses of the evaluation's 100-PGD runs (section 3: cross-entropy and margin)
    attack_losses: tuple[str, ...] = ("ce", "margin")

    def check_target(self, output: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, y: torch.Tensor, loss: str | None = None) -> torch.Tensor:
        """Per-sample loss (B,); ``loss=None`` is the task's training loss (``losses[0]``)."""
        raise NotImplementedError

    def correct(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_loss(self, loss: str) -> str:
        """Return ``loss`` after checking this task knows it."""
        return check_choice("loss", loss, self.losses)


class ClassificationTask(Task):
    """Classification from logits ``(B, C)`` and integer labels ``(B,)``.

    Correct means ``argmax(logits) == y``. Losses: ``"ce"`` (cross-entropy) and
    ``"margin"`` (the Carlini-Wagner margin ``max_{j != y} z_j - z_y``, positive exactly
    when the sample is misclassified).
    """

    losses = ("ce", "margin")

    def check_target(self, output: torch.Tensor, y: torch.Tensor) -> None:
        if output.dim() != 2:
            raise ValueError(
                f"classification expects model outputs of shape (batch, classes), "
                f"got shape {tuple(output.shape)}"
            )
        if y.dim() != 1 or y.shape[0] != output.shape[0]:
            raise ValueError(
                f"classification expects labels y of shape ({output.shape[0]},), "
                f"got shape {tuple(y.shape)}"
            )
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"labels y must be an integer tensor, got dtype {y.dtype}")
        num_classes = output.shape[1]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"labels y must be in [0, {num_classes - 1}] for a model with {num_classes} "
                f"outputs, got values in [{int(y.min())}, {int(y.max())}]"
            )

    def loss(self, output: torch.Tensor, y: torch.Tensor, loss: str | None = None) -> torch.Tensor:
        if loss is None or loss == "ce":
            return F.cross_entropy(output, y, reduction="none")
        if loss == "margin":
            true_logit = output.gather(1, y[:, None]).squeeze(1)
            others = output.scatter(1, y[:, None], float("-inf"))
            return others.amax(dim=1) - true_logit
        self.check_loss(loss)
        raise AssertionError("unreachable")

    def correct(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return output.argmax(dim=1) == y


class SegmentationTask(Task):
    """Segmentation from logits ``(B, C, *spatial)`` and integer label maps ``(B, *spatial)``.

    A segmentation counts as correct when its per-image Dice index is above ``threshold``
    (0.6 in section 4 of the paper: a Dice above 60% is "good" for medical images), which
    turns segmentation into the binary classification IMA and the attacks work with.
    ``C >= 2``: class 0 is the background, classes ``1..C-1`` the foreground; the
    prediction is the argmax over classes.

    Dice convention (:meth:`dice`): for each foreground class ``k`` of an image,
    ``D_k = 2 TP_k / (2 TP_k + FP_k + FN_k)``; the image's Dice is the mean of ``D_k``
    over the foreground classes present in the truth or the prediction. A class absent
    from both is skipped; an image with no foreground class in either (both empty) has
    Dice 1, and one where exactly one of them is empty has Dice 0. For binary
    segmentation (``C = 2``) this is the usual Dice of the foreground mask.

    Losses, per image ``(B,)``:

    * ``"dice_ce"`` (the training loss): nnU-Net's loss (Isensee et al. 2021), which the
      paper uses in place of cross-entropy: pixel cross-entropy averaged over the image
      plus ``1 - soft Dice``, the soft Dice being the mean over the foreground classes
      of ``(2 sum p_k g_k + smooth) / (sum p_k + sum g_k + smooth)`` with softmax
      probabilities ``p`` and one-hot truth ``g``, per image (nnU-Net's
      ``batch_dice=False`` form, since attacks need one loss per sample);
    * ``"ce"``: pixel cross-entropy averaged over the image;
    * ``"margin"``: the Carlini-Wagner margin ``max_{j != y} z_j - z_y`` averaged over the
      image's pixels (positive on average when most pixels are wrong; unlike the
      classification margin its sign does not decide correctness).

    The evaluation's two 100-PGD runs use ``"dice_ce"`` and ``"margin"``
    (``attack_losses``): where the paper's protocol says cross-entropy, segmentation
    uses nnU-Net's loss, as the paper does for training.
    """

    losses = ("dice_ce", "ce", "margin")
    attack_losses = ("dice_ce", "margin")

    def __init__(self, *, threshold: float = 0.6, smooth: float = 1e-5):
        self.threshold = check_real("threshold", threshold, low=0.0, high=1.0)
        self.smooth = check_real("smooth", smooth, low=0.0)

    def __repr__(self) -> str:
        return f"SegmentationTask(threshold={self.threshold}, smooth={self.smooth})"

    def check_target(self, output: torch.Tensor, y: torch.Tensor) -> None:
        if output.dim() < 3 or output.shape[1] < 2:
            raise ValueError(
                "segmentation expects model outputs of shape (batch, classes >= 2, *spatial), "
                f"e.g. (B, C, H, W), got shape {tuple(output.shape)}"
            )
        want = (output.shape[0], *output.shape[2:])
        if tuple(y.shape) != want:
            raise ValueError(
                f"segmentation expects label maps y of shape {want} (batch, *spatial) for "
                f"outputs of shape {tuple(output.shape)}, got shape {tuple(y.shape)}"
            )
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"label maps y must be an integer tensor, got dtype {y.dtype}")
        num_classes = output.shape[1]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"labels y must be in [0, {num_classes - 1}] for a model with {num_classes} "
                f"output channels, got values in [{int(y.min())}, {int(y.max())}]"
            )

    def loss(self, output: torch.Tensor, y: torch.Tensor, loss: str | None = None) -> torch.Tensor:
        if loss is None or loss == "dice_ce":
            return self._pixel_ce(output, y) + 1.0 - self.soft_dice(output, y)
        if loss == "ce":
            return self._pixel_ce(output, y)
        if loss == "margin":
            true_logit = output.gather(1, y.unsqueeze(1))
            others = output.scatter(1, y.unsqueeze(1), float("-inf"))
            return (others.amax(dim=1, keepdim=True) - true_logit).flatten(1).mean(dim=1)
        self.check_loss(loss)
        raise AssertionError("unreachable")

    @staticmethod
    def _pixel_ce(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, y, reduction="none").flatten(1).mean(dim=1)

    def soft_dice(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Soft Dice (B,) of the softmax probabilities, mean over the foreground classes."""
        probs = output.softmax(dim=1).flatten(2)[:, 1:]
        truth = F.one_hot(y.flatten(1), output.shape[1]).transpose(1, 2)[:, 1:]
        truth = truth.to(probs.dtype)
        inter = (probs * truth).sum(dim=2)
        denom = probs.sum(dim=2) + truth.sum(dim=2)
        return ((2 * inter + self.smooth) / (denom + self.smooth)).mean(dim=1)

    @staticmethod
    def counts(output: torch.Tensor, y: torch.Tensor):
        """``(tp, fp, fn)`` pixel counts of the argmax prediction, each ``(B, C - 1)``
        (int64, one column per foreground class)."""
        pred = output.argmax(dim=1).flatten(1)
        y = y.flatten(1)
        tp, fp, fn = [], [], []
        for k in range(1, output.shape[1]):
            p, g = pred == k, y == k
            tp.append((p & g).sum(dim=1))
            fp.append((p & ~g).sum(dim=1))
            fn.append((~p & g).sum(dim=1))
        return torch.stack(tp, 1), torch.stack(fp, 1), torch.stack(fn, 1)

    def dice(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image Dice (B,) of the argmax prediction (see the class docstring)."""
        return dice_from_counts(*self.counts(output, y))

    def correct(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.dice(output, y) > self.threshold


def dice_from_counts(tp, fp, fn) -> torch.Tensor:
    """Per-image Dice (N,) from pixel counts ``(N, K)`` of ``K`` foreground classes.

    The mean over the classes with ``2 TP + FP + FN > 0`` of ``2 TP / (2 TP + FP + FN)``;
    1 for an image where no class is present in the truth or the prediction.
    """
    tp, fp, fn = (torch.as_tensor(t, dtype=torch.float64) for t in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    present = denom > 0
    per_class = torch.where(present, 2 * tp / denom.clamp(min=1), torch.zeros_like(denom))
    n_present = present.sum(dim=-1)
    mean = per_class.sum(dim=-1) / n_present.clamp(min=1)
    return torch.where(n_present > 0, mean, torch.ones_like(mean))


def tvdi(tp, fp, fn) -> float:
    """Total Voxel Dice Index (appendix I, Eq. 11) of a set of images.

    ``tp``, ``fp``, ``fn``: per-image pixel counts ``(N, K)`` for ``K`` foreground classes
    (or ``(N,)`` for one). Per class ``2 sum TP / (2 sum TP + sum FP + sum FN)`` over the
    whole set, then the mean over the classes present anywhere in the truth or the
    predictions (1 if none is). For binary segmentation this is Eq. 11 exactly.
    """
    tp, fp, fn = (torch.as_tensor(t, dtype=torch.float64) for t in (tp, fp, fn))
    if tp.dim() == 1:
        tp, fp, fn = tp[:, None], fp[:, None], fn[:, None]
    return float(dice_from_counts(tp.sum(0), fp.sum(0), fn.sum(0)))


def adi(dice) -> float:
    """Average Dice Index (appendix I, Eq. 12): the mean of the per-image Dice (N,)."""
    dice = torch.as_tensor(dice, dtype=torch.float64)
    if dice.numel() == 0:
        raise ValueError("adi needs at least one image's Dice")
    return float(dice.mean())


def get_task(task: Task | None) -> Task:
    """Return ``task``, or the classification task when ``task`` is None."""
    if task is None:
        return ClassificationTask()
    if not isinstance(task, Task):
        raise TypeError(f"task must be an ima.tasks.Task or None, got {type(task).__name__}")
    return task
