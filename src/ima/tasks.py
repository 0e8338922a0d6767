"""What "correct" and "loss" mean for a model's output.

Attacks, methods and the evaluation never look at logits themselves: they ask a task.
A task gives, per sample,

* ``loss(output, y, loss=None)``: the attack/training objective, shape ``(B,)``; the
  first of ``losses`` (the training loss) when ``loss`` is None;
* ``correct(output, y)``: a bool mask, shape ``(B,)``;
* ``scored(output, y)``: a bool mask, shape ``(B,)``: whether the sample counts in
  accuracies at all (always, except a segmentation that has no Dice under
  ``empty_dice="skip"``);
* ``check_target(output, y)``: raises a clear error when ``y`` does not fit ``output``.

Classification (correct = argmax equals the label) and segmentation (correct = per-image
Dice above a threshold, section 4 of the paper) are defined here, with the overlap
metrics of appendix I: :func:`tvdi` (total voxel Dice index) and :func:`adi` (average
Dice index).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .validation import check_choice, check_real

__all__ = [
    "EMPTY_DICE",
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

    def scored(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Whether each sample counts in accuracies (B,) bool; every sample by default."""
        return torch.ones(output.shape[0], dtype=torch.bool, device=output.device)

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


#: How :class:`SegmentationTask` scores an image whose truth and prediction both have no
#: foreground (its Dice is 0/0): not at all (``"skip"``), as Dice 0, or as Dice 1.
EMPTY_DICE = ("skip", "zero", "one")


class SegmentationTask(Task):
    """Segmentation from logits ``(B, C, *spatial)`` and integer label maps ``(B, *spatial)``.

    A segmentation counts as correct when its per-image Dice index is above ``threshold``
    (0.6 in section 4 of the paper: a Dice above 60% is "good" for medical images), which
    turns segmentation into the binary classification IMA and the attacks work with.
    ``C >= 2``: class 0 is the background, classes ``1..C-1`` the foreground; the
    prediction is the argmax over classes.

    Dice convention (:meth:`dice`): for each foreground class ``k`` of an image,
    ``D_k = 2 TP_k / (2 TP_k + FP_k + FN_k)``; the image's Dice is the mean of ``D_k``
    over the foreground classes present in the truth or the prediction (a class absent
    from both is left out). An image where exactly one of truth and prediction has
    foreground has Dice 0. For binary segmentation (``C = 2``) this is the usual Dice of
    the foreground mask.

    ``empty_dice``: an image with no foreground in the truth and none in the prediction
    (most Heart slices, which show no left atrium) has Dice 0/0, and Eq. 12 does not
    say what it scores:

    * ``"skip"`` (default): it has no Dice (NaN). It is not scored: :func:`adi` is the
      mean over the images that have a Dice, :meth:`scored` is False for it (accuracies
      leave it out), and it is not correct (it cannot pass a threshold it has no value
      for; IMA treats it as a sample not classified correctly: no boundary search,
      margin unchanged);
    * ``"zero"``: Dice 0, scored, wrong;
    * ``"one"``: Dice 1, scored, correct (a perfect "nothing here").

    Why ``"skip"``: the clean ADI of section 4 is below the clean TVDI in every row of
    Tables 10-15, on D2 by 12 points (nnUnet 80.01 vs 92.46). On Heart most slices show
    no atrium and a good model leaves them empty. Scored 1, they would fill ADI with
    ones and lift it towards 1, above TVDI (the slices with foreground pull ADI below
    TVDI, the small ones at the ends of the atrium having low Dice); scored 0 in the
    average, they would cap ADI at the fraction of slices that show the atrium, under
    half, not 80%. Only leaving them out fits, and that is what Eq. 12's 0/0 means and
    nnU-Net's convention (a Dice of nothing against nothing is NaN, left out of means).
    The authors' released code agrees: it evaluates only slices that hold foreground.
    TVDI is the same under every choice: an empty image adds nothing to its sums.

    ``dice_inclusive``: correct means ``Dice > threshold`` (False, default: section 4's
    words, "Dice > a threshold") or ``Dice >= threshold`` (True, what the authors'
    released code computes). They differ only for a Dice exactly at the threshold,
    e.g. 3/5 from TP 3, FP + FN 4, which happens on small masks.

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

    def __init__(self, *, threshold: float = 0.6, empty_dice: str = "skip",
                 dice_inclusive: bool = False, smooth: float = 1e-5):
        self.threshold = check_real("threshold", threshold, low=0.0, high=1.0)
        self.empty_dice = check_choice("empty_dice", empty_dice, EMPTY_DICE)
        if not isinstance(dice_inclusive, bool):
            raise TypeError(f"dice_inclusive must be true or false, got {dice_inclusive!r}")
        self.dice_inclusive = dice_inclusive
        self.smooth = check_real("smooth", smooth, low=0.0)

    def __repr__(self) -> str:
        return (
            f"SegmentationTask(threshold={self.threshold}, empty_dice={self.empty_dice!r}, "
            f"dice_inclusive={self.dice_inclusive}, smooth={self.smooth})"
        )

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
        """Per-image Dice (B,) float64 of the argmax prediction (see the class docstring);
        NaN for an image with no Dice (``empty_dice="skip"``)."""
        return self.dice_from_counts(*self.counts(output, y))

    def dice_from_counts(self, tp, fp, fn) -> torch.Tensor:
        """:func:`dice_from_counts` under this task's ``empty_dice`` rule."""
        return dice_from_counts(tp, fp, fn, empty_dice=self.empty_dice)

    def meets_threshold(self, dice) -> torch.Tensor:
        """Whether each Dice makes a correct segmentation: ``> threshold``, or ``>=`` with
        ``dice_inclusive``; never for NaN (an image that is not scored)."""
        dice = torch.as_tensor(dice)
        return dice >= self.threshold if self.dice_inclusive else dice > self.threshold

    def correct(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.meets_threshold(self.dice(output, y))

    def scored(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """False for an image that has no Dice (``empty_dice="skip"``), else True (B,)."""
        return ~torch.isnan(self.dice(output, y))

    @staticmethod
    def lower_dice(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """Where the Dice ``new`` (B,) is worse than ``old``: lower, or a Dice where there
        was none (an unscored image, empty truth and prediction, that an attack gave a
        foreground prediction has Dice 0 against no Dice)."""
        return (new < old) | (old.isnan() & ~new.isnan())


def dice_from_counts(tp, fp, fn, *, empty_dice: str = "skip") -> torch.Tensor:
    """Per-image Dice (N,) float64 from pixel counts ``(N, K)`` of ``K`` foreground classes.

    The mean over the classes with ``2 TP + FP + FN > 0`` of ``2 TP / (2 TP + FP + FN)``.
    An image where no class is present in the truth or the prediction has NaN (no Dice,
    ``empty_dice="skip"``), 0 (``"zero"``) or 1 (``"one"``); see
    :class:`SegmentationTask`.
    """
    check_choice("empty_dice", empty_dice, EMPTY_DICE)
    tp, fp, fn = (torch.as_tensor(t, dtype=torch.float64) for t in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    present = denom > 0
    per_class = torch.where(present, 2 * tp / denom.clamp(min=1), torch.zeros_like(denom))
    n_present = present.sum(dim=-1)
    mean = per_class.sum(dim=-1) / n_present.clamp(min=1)
    empty = {"skip": float("nan"), "zero": 0.0, "one": 1.0}[empty_dice]
    return torch.where(n_present > 0, mean, torch.full_like(mean, empty))


def tvdi(tp, fp, fn) -> float:
    """Total Voxel Dice Index (appendix I, Eq. 11) of a set of images.

    ``tp``, ``fp``, ``fn``: per-image pixel counts ``(N, K)`` for ``K`` foreground classes
    (or ``(N,)`` for one). Per class ``2 sum TP / (2 sum TP + sum FP + sum FN)`` over the
    whole set, then the mean over the classes present anywhere in the truth or the
    predictions (1 if none is). For binary segmentation this is Eq. 11 exactly. Images
    with no foreground in truth or prediction add nothing to the sums, so TVDI does not
    depend on how they are scored (``empty_dice``).
    """
    tp, fp, fn = (torch.as_tensor(t, dtype=torch.float64) for t in (tp, fp, fn))
    if tp.dim() == 1:
        tp, fp, fn = tp[:, None], fp[:, None], fn[:, None]
    return float(dice_from_counts(tp.sum(0), fp.sum(0), fn.sum(0), empty_dice="one"))


def adi(dice) -> float:
    """Average Dice Index (appendix I, Eq. 12): the mean of the per-image Dice (N,) over
    the images that have one; NaN entries (images not scored, ``empty_dice="skip"``)
    are left out, and the ADI of images none of which is scored is NaN."""
    dice = torch.as_tensor(dice, dtype=torch.float64)
    if dice.numel() == 0:
        raise ValueError("adi needs at least one image's Dice")
    scored = dice[~torch.isnan(dice)]
    return float(scored.mean()) if scored.numel() else float("nan")


def get_task(task: Task | None) -> Task:
    """Return ``task``, or the classification task when ``task`` is None."""
    if task is None:
        return ClassificationTask()
    if not isinstance(task, Task):
        raise TypeError(f"task must be an ima.tasks.Task or None, got {type(task).__name__}")
    return task
