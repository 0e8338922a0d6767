"""Segmentation task: Dice conventions, TVDI and ADI on hand-made masks, losses, checks."""

import math

import pytest
import torch

from ima.tasks import SegmentationTask, adi, dice_from_counts, get_task, tvdi


def logits_for(pred: torch.Tensor, num_classes: int = 2) -> torch.Tensor:
    """Logits (B, C, H, W) whose argmax is the label map ``pred`` (B, H, W)."""
    return torch.nn.functional.one_hot(pred, num_classes).permute(0, 3, 1, 2).float() * 4.0


def masks(*rows: str) -> torch.Tensor:
    """A label map from strings of digits, one string per row."""
    return torch.tensor([[int(c) for c in row] for row in rows])


def test_binary_dice_known_values():
    truth = masks("1100", "1100", "0000")  # 4 foreground pixels
    pred = masks("1110", "1000", "0000")  # TP 3, FP 1, FN 1 -> 6 / 8
    task = SegmentationTask()
    out = logits_for(torch.stack([pred, truth]))
    y = torch.stack([truth, truth])
    tp, fp, fn = task.counts(out, y)
    assert tp.tolist() == [[3], [4]] and fp.tolist() == [[1], [0]] and fn.tolist() == [[1], [0]]
    assert task.dice(out, y).tolist() == pytest.approx([0.75, 1.0])
    assert task.correct(out, y).tolist() == [True, True]
    assert SegmentationTask(threshold=0.8).correct(out, y).tolist() == [False, True]


def nan_list(t) -> list:
    """A tensor as a list with NaN as None (NaN != NaN in comparisons)."""
    return [None if math.isnan(v) else v for v in t.tolist()]


# Five images whose Dice is known by hand: (a) truth and prediction empty (0/0);
# (b) empty truth, one false-positive pixel (0); (c) one missed pixel (0);
# (d) a perfect 2-pixel mask (1); (e) TP 3, FP 1, FN 1 (6/8 = 0.75).
EMPTY, SPOT = masks("0000", "0000", "0000"), masks("0000", "0100", "0000")
PAIR = masks("0000", "0110", "0000")
TRUTH_E, PRED_E = masks("1100", "1100", "0000"), masks("1110", "1000", "0000")
TRUTH = torch.stack([EMPTY, EMPTY, SPOT, PAIR, TRUTH_E])
PRED = torch.stack([EMPTY, SPOT, EMPTY, PAIR, PRED_E])


@pytest.mark.parametrize("rule, dice, correct, scored, want_adi", [
    ("skip", [None, 0.0, 0.0, 1.0, 0.75], [False, False, False, True, True],
     [False, True, True, True, True], (0 + 0 + 1 + 0.75) / 4),
    ("zero", [0.0, 0.0, 0.0, 1.0, 0.75], [False, False, False, True, True],
     [True] * 5, (0 + 0 + 0 + 1 + 0.75) / 5),
    ("one", [1.0, 0.0, 0.0, 1.0, 0.75], [True, False, False, True, True],
     [True] * 5, (1 + 0 + 0 + 1 + 0.75) / 5),
])
def test_empty_dice_rules_on_hand_made_masks(rule, dice, correct, scored, want_adi):
    """Only an image with empty truth AND empty prediction depends on the rule."""
    task = SegmentationTask(empty_dice=rule)
    out = logits_for(PRED)
    assert nan_list(task.dice(out, TRUTH)) == pytest.approx(dice)
    assert task.correct(out, TRUTH).tolist() == correct
    assert task.scored(out, TRUTH).tolist() == scored
    assert adi(task.dice(out, TRUTH)) == pytest.approx(want_adi)
    # the counts give the same Dice through the task and through the module function
    counts = task.counts(out, TRUTH)
    assert nan_list(task.dice_from_counts(*counts)) == pytest.approx(dice)
    assert nan_list(dice_from_counts(*counts, empty_dice=rule)) == pytest.approx(dice)
    # TVDI sums pixels: empty images add nothing, so it is the same under every rule
    assert tvdi(*counts) == pytest.approx(2 * 5 / (2 * 5 + 2 + 2))


def test_default_leaves_images_without_foreground_out():
    """Section 4's clean ADI < TVDI: empty slices are not scored 1 (class docstring)."""
    task = SegmentationTask()
    assert task.empty_dice == "skip" and task.dice_inclusive is False
    out = logits_for(PRED)
    assert nan_list(task.dice(out, TRUTH))[0] is None
    assert task.correct(out, TRUTH).tolist()[0] is False
    assert task.scored(out, TRUTH).tolist() == [False, True, True, True, True]
    assert nan_list(dice_from_counts(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1))) \
        == [None, None]
    # a set that is mostly empty slices: ADI is the Dice of the rest, not pulled up to 1
    many = torch.stack([EMPTY] * 8 + [TRUTH_E])
    pred = torch.stack([EMPTY] * 8 + [PRED_E])
    assert adi(task.dice(logits_for(pred), many)) == pytest.approx(0.75)
    assert adi(SegmentationTask(empty_dice="one").dice(logits_for(pred), many)) == \
        pytest.approx((8 + 0.75) / 9)


def test_adi_of_images_none_of_which_is_scored_is_nan():
    assert math.isnan(adi([math.nan, math.nan]))
    assert adi([math.nan, 0.5, 1.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="at least one"):
        adi([])


@pytest.mark.parametrize("inclusive, want", [(False, False), (True, True)])
def test_dice_exactly_at_the_threshold(inclusive, want):
    """TP 3, FP 2, FN 2: Dice 6/10 = 0.6 exactly, correct only with >= (dice_inclusive)."""
    truth = masks("11100", "11000")
    pred = masks("11100", "00110")
    task = SegmentationTask(threshold=0.6, dice_inclusive=inclusive)
    out = logits_for(pred[None])
    tp, fp, fn = task.counts(out, truth[None])
    assert (tp.item(), fp.item(), fn.item()) == (3, 2, 2)
    assert task.dice(out, truth[None]).item() == 0.6
    assert task.correct(out, truth[None]).tolist() == [want]
    # just above and just below are decided the same way by both
    assert task.meets_threshold(torch.tensor([0.6001, 0.5999])).tolist() == [True, False]
    assert task.meets_threshold(torch.tensor([math.nan])).tolist() == [False]


def test_dice_options_are_checked():
    with pytest.raises(ValueError, match="empty_dice must be one of 'skip', 'zero', 'one'"):
        SegmentationTask(empty_dice="nan")
    with pytest.raises(TypeError, match="dice_inclusive must be true or false"):
        SegmentationTask(dice_inclusive="yes")
    with pytest.raises(ValueError, match="empty_dice"):
        dice_from_counts(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), empty_dice=1)
    assert "empty_dice='zero'" in repr(SegmentationTask(empty_dice="zero"))


def test_shapes_dataset_and_config_carry_the_dice_options():
    from ima.config import resolve_config
    from ima.data import build_dataset

    config = resolve_config({
        "data": {"name": "shapes", "empty_dice": "one", "dice_inclusive": True},
        "model": {"name": "unet", "num_classes": 2, "width": 4, "depth": 2},
    })
    assert config["data"]["empty_dice"] == "one" and config["data"]["dice_inclusive"] is True
    default = resolve_config({"data": {"name": "shapes"}, "model": {"name": "unet"}})
    assert default["data"]["empty_dice"] == "skip"
    assert default["data"]["dice_inclusive"] is False
    ds = build_dataset("shapes", "test", n_test=2, empty_dice="zero", dice_inclusive=True)
    assert ds.task.empty_dice == "zero" and ds.task.dice_inclusive is True
    with pytest.raises(ValueError, match="empty_dice"):
        build_dataset("shapes", "test", n_test=2, empty_dice="ones")


def test_multiclass_dice_means_classes_present_in_either_mask():
    truth = masks("1122", "1100")  # class 1: 4 px, class 2: 2 px, class 3 absent
    pred = masks("1120", "1000")  # class 1: TP 3 FN 1 -> 6/7; class 2: TP 1 FN 1 -> 2/3
    out = logits_for(pred[None], num_classes=4)
    dice = SegmentationTask().dice(out, truth[None])
    assert dice.item() == pytest.approx((6 / 7 + 2 / 3) / 2)  # class 3 skipped
    # a class predicted but absent from the truth counts with Dice 0
    pred3 = masks("1123", "1100")
    dice3 = SegmentationTask().dice(logits_for(pred3[None], 4), truth[None])
    assert dice3.item() == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)


def test_dice_from_counts_shapes_and_empty():
    d = dice_from_counts(torch.tensor([[3, 0]]), torch.tensor([[1, 0]]), torch.tensor([[1, 0]]))
    assert d.tolist() == pytest.approx([0.75])
    zeros = torch.zeros(2, 3)
    assert dice_from_counts(zeros, zeros, zeros, empty_dice="one").tolist() == [1.0, 1.0]
    assert dice_from_counts(zeros, zeros, zeros, empty_dice="zero").tolist() == [0.0, 0.0]


def test_tvdi_and_adi_on_hand_made_set():
    # image 1: TP 3 FP 1 FN 1 (Dice 0.75); image 2: TP 1 FP 0 FN 3 (Dice 2/5);
    # image 3: both empty (Dice 1 if scored so, nothing to TVDI)
    tp, fp, fn = torch.tensor([3, 1, 0]), torch.tensor([1, 0, 0]), torch.tensor([1, 3, 0])
    assert tvdi(tp, fp, fn) == pytest.approx(2 * 4 / (2 * 4 + 1 + 4))  # Eq. 11
    dice = dice_from_counts(tp[:, None], fp[:, None], fn[:, None], empty_dice="one")
    assert dice.tolist() == pytest.approx([0.75, 0.4, 1.0])
    assert adi(dice) == pytest.approx((0.75 + 0.4 + 1.0) / 3)  # Eq. 12
    skipped = dice_from_counts(tp[:, None], fp[:, None], fn[:, None])  # default: "skip"
    assert adi(skipped) == pytest.approx((0.75 + 0.4) / 2)
    # TVDI weighs pixels, ADI images: a large well-segmented image dominates TVDI only
    big = tvdi(torch.tensor([100, 0]), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert big == pytest.approx(200 / 202)
    assert adi([1.0, 0.0]) == 0.5
    # multi-class TVDI: per-class totals, mean over classes present anywhere
    tp2 = torch.tensor([[2, 0, 0], [2, 1, 0]])
    fp2 = torch.tensor([[0, 1, 0], [0, 0, 0]])
    fn2 = torch.tensor([[0, 0, 0], [2, 1, 0]])
    assert tvdi(tp2, fp2, fn2) == pytest.approx((8 / 10 + 2 / 4) / 2)
    assert tvdi(torch.zeros(2), torch.zeros(2), torch.zeros(2)) == 1.0


def test_losses_per_image():
    torch.manual_seed(0)
    task = SegmentationTask()
    assert task.losses[0] == "dice_ce" and task.attack_losses == ("dice_ce", "margin")
    out = torch.randn(3, 3, 5, 4, requires_grad=True)
    y = torch.randint(0, 3, (3, 5, 4))
    for name in task.losses:
        value = task.loss(out, y, name)
        assert value.shape == (3,) and torch.isfinite(value).all()
    ce = torch.nn.functional.cross_entropy(out, y, reduction="none").mean(dim=(1, 2))
    torch.testing.assert_close(task.loss(out, y, "ce"), ce)
    torch.testing.assert_close(task.loss(out, y), ce + 1 - task.soft_dice(out, y))
    # margin: mean over pixels of max_{j != y} z_j - z_y
    z = out.detach()
    true = z.gather(1, y[:, None])[:, 0]
    other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    torch.testing.assert_close(task.loss(z, y, "margin"), (other - true).mean(dim=(1, 2)))
    # a sample's loss depends on its own image only
    torch.testing.assert_close(task.loss(out[1:2], y[1:2]), task.loss(out, y)[1:2])
    with pytest.raises(ValueError, match="loss"):
        task.loss(out, y, "hinge")


def test_soft_dice_of_a_perfect_confident_prediction_is_one():
    y = masks("0110", "0110")[None]
    out = logits_for(y) * 10
    task = SegmentationTask()
    assert task.soft_dice(out, y).item() == pytest.approx(1.0, abs=1e-6)
    assert task.loss(out, y).item() == pytest.approx(0.0, abs=1e-5)


def test_check_target_errors():
    task = SegmentationTask()
    out = torch.zeros(2, 3, 4, 4)
    task.check_target(out, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 4\)"):
        task.check_target(out, torch.zeros(2, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="classes >= 2"):
        task.check_target(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="classes >= 2"):
        task.check_target(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        task.check_target(out, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"in \[0, 2\].*\[3, 3\]"):
        task.check_target(out, torch.full((2, 4, 4), 3))
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="threshold"):
            SegmentationTask(threshold=bad)
    assert get_task(task) is task
