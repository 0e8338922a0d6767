"""PGD and BPGD on segmentation models, through the segmentation task, against the truth.

The analytic model (``analytic.ThresholdConv``) is a 1x1 convolution: pixel p is
foreground iff ``x_p > 0.5``. Under the margin loss (mean over pixels of
``z_other - z_true``) the input gradient is the same at every point, so without a random
start every PGD iterate lies on the ray ``x + t d`` with
``d = (-1 on foreground, +1 on background) / sqrt(N)``: every pixel moves by
``s = t / sqrt(N)`` towards the other class, and the Dice along the ray is known exactly.
"""

import math

import pytest
import torch

from ima.attacks import bpgd, pgd
from ima.tasks import SegmentationTask

from analytic import SEG_PIXELS, dice_at_shift, segmentation_problem

N = SEG_PIXELS


def test_analytic_dice_along_the_ray():
    model, x, y, d = segmentation_problem()
    task = SegmentationTask()
    for s in (0.0, 0.035, 0.085, 0.095, 0.2):
        got = task.dice(model(x + s * math.sqrt(N) * d), y).item()
        assert got == pytest.approx(dice_at_shift(s))
    # the Dice first drops to 0.6 when the fourth background pixel (gap 0.09) flips
    assert dice_at_shift(0.0899) > 0.6 >= dice_at_shift(0.0901)


def test_bpgd_lands_where_the_dice_crosses_the_threshold():
    model, x, y, d = segmentation_problem()
    task = SegmentationTask(threshold=0.6)
    eps, steps, alpha, n_binary = 1.0, 20, 4.0, 10
    r = bpgd(model, x, y, eps=eps, steps=steps, alpha=alpha, n_binary=n_binary, loss="margin",
             random_start=False, task=task)
    assert r.success.tolist() == [True] and r.clean_correct.tolist() == [True]
    delta = r.x - x
    t = delta.norm().item()
    # on the ray: the perturbation is parallel to d
    assert torch.nn.functional.cosine_similarity(delta.flatten(), d.flatten(), dim=0) > 1 - 1e-9
    t_cross = 0.09 * math.sqrt(N)  # where the Dice first reaches 0.6 (not above the threshold)
    width = alpha * eps / steps / 2**n_binary  # one PGD step bisected n_binary times
    assert t_cross - 1e-9 <= t <= t_cross + width + 1e-9
    # the returned point is wrong (Dice <= 0.6); the bracket's other end is still right
    assert task.dice(model(r.x), y).item() <= 0.6
    back = x + (t - width) * d
    assert task.dice(model(back), y).item() > 0.6
    assert dice_at_shift(t / math.sqrt(N)) <= 0.6 < dice_at_shift((t - width) / math.sqrt(N))


def test_bpgd_without_a_crossing_inside_the_ball_and_wrong_at_start():
    model, x, y, d = segmentation_problem()
    task = SegmentationTask()
    small = bpgd(model, x, y, eps=0.3, loss="margin", random_start=False, task=task)
    assert small.success.tolist() == [False]
    assert (small.x - x).norm().item() <= 0.3 + 1e-9
    wrong = bpgd(model, x, 1 - y, eps=1.0, loss="margin", task=task)
    assert wrong.clean_correct.tolist() == [False] and wrong.success.tolist() == [False]
    assert torch.equal(wrong.x, x)


@pytest.mark.parametrize("loss", ["dice_ce", "ce", "margin"])
def test_pgd_on_a_unet_keeps_to_ball_and_bounds(loss):
    from ima.models import unet

    torch.manual_seed(0)
    model = unet(width=4, depth=2)
    x = torch.rand(3, 1, 12, 12)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # the model's own segmentation: Dice 1
    task = SegmentationTask()
    model.train()
    r = pgd(model, x, y, eps=2.0, steps=10, loss=loss, task=task)
    assert model.training  # mode restored
    assert ((r.x - x).flatten(1).norm(dim=1) <= 2.0 + 1e-5).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(r.success, ~task.correct(model(r.x), y))
    assert all(p.grad is None for p in model.parameters())
    early = pgd(model, x, y, eps=2.0, steps=10, loss=loss, task=task, early_stop=True)
    with torch.no_grad():
        torch.testing.assert_close(early.success, ~task.correct(model(early.x), y))
    b = bpgd(model, x, y, eps=torch.tensor([0.5, 2.0, 4.0]), steps=10, loss=loss, task=task)
    with torch.no_grad():
        assert (~task.correct(model(b.x[b.success]), y[b.success])).all()
    assert ((b.x - x).flatten(1).norm(dim=1) <= torch.tensor([0.5, 2.0, 4.0]) + 1e-5).all()
