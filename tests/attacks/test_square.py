"""The Square attack against models whose exact margins are known: a multi-class linear
model on 8x8 images (Linf margins min_j (z_y - z_j) / ||w_y - w_j||_1, L2 margins with
the L2 norm of ``w_y - w_j``) and a pixel-threshold segmenter (the cheapest way to push an
image's Dice to the threshold is to flip its pixels nearest to 0.5); peer checks against
torchattacks' Square."""

import math

import pytest
import torch

from ima import SegmentationTask, lp
from ima.attacks import square
from ima.attacks.square import _bump, _side, square_fraction

from analytic import ThresholdConv, image_linear_problem

K = 4


def _problem(n=200, seed=0, norm="linf"):
    return image_linear_problem(n, seed, norm, K)


@pytest.mark.parametrize("norm, eps", [("linf", 0.02), ("l2", 0.15)])
def test_square_fools_samples_well_inside_and_never_those_outside_the_ball(norm, eps):
    model, x, y, margin = _problem(norm=norm)
    torch.manual_seed(0)
    r = square(model, x, y, eps=eps, norm=norm, queries=1000)
    inside, outside = margin < 0.5 * eps, margin > eps
    assert inside.sum() > 10 and outside.sum() > 10
    assert r.success[inside].all()
    assert not r.success[outside].any()
    assert (lp.sample_norm(r.x - x, norm) <= eps + 1e-5).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    assert (model(r.x[r.success]).argmax(1) != y[r.success]).all()


@pytest.mark.parametrize("norm, eps", [("linf", 0.02), ("l2", 0.15)])
def test_more_queries_find_more(norm, eps):
    model, x, y, margin = _problem(seed=1, norm=norm)
    found = []
    for queries in (5, 1000):
        torch.manual_seed(0)
        found.append(int(square(model, x, y, eps=eps, norm=norm, queries=queries).success.sum()))
    assert found[0] < found[1] <= int((margin < eps).sum())


def test_fraction_schedule_window_sides_and_bad_inputs():
    assert square_fraction(0.8, 5, 10000) == 0.8
    assert square_fraction(0.8, 30, 10000) == 0.4
    assert square_fraction(0.8, 9000, 10000) == pytest.approx(0.8 / 512)
    assert square_fraction(0.8, 250, 5000) == 0.8 / 8  # rescaled: query 500 of 10000
    # L2 windows: at least 3 pixels, odd, inside the image; Linf: at least 1, below H
    assert _side("l2", 0.8, 32, 32) == 29 and _side("l2", 0.1, 32, 32) == 11
    assert _side("l2", 0.8 / 512, 32, 32) == 3 and _side("l2", 0.8, 4, 5) == 4
    assert _side("linf", 0.8 / 512, 32, 32) == 1 and _side("linf", 0.8, 4, 5) == 3
    model, x, y, _ = _problem(n=4)
    with pytest.raises(ValueError, match="norm"):
        square(model, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="images"):
        square(model, x.flatten(1), y, eps=0.1)


def test_bump_is_the_authors_meta_pseudo_gaussian():
    """Against torchattacks' ``eta`` (the authors' ``meta_pseudo_gaussian_pert``), which
    transposes at random: unit L2 norm, a positive top lobe and a negative bottom one."""
    torchattacks = pytest.importorskip("torchattacks")
    peer = torchattacks.Square(torch.nn.Identity(), norm="L2")
    peer.device = torch.device("cpu")
    for side in (1, 2, 3, 4, 5, 8, 11):
        ours = _bump(side, torch.zeros(()))
        theirs = peer.eta(side)
        assert torch.allclose(ours, theirs, atol=1e-6) or torch.allclose(ours.T, theirs,
                                                                          atol=1e-6)
        assert float(ours.norm()) == pytest.approx(1.0)
    assert (_bump(5, torch.zeros(()))[:2] > 0).all() and (_bump(5, torch.zeros(()))[2:] < 0).all()


def _segmentation_problem(n=8, size=8, side=4, seed=0):
    """``n`` images (n, 1, size, size) in float64 for :class:`ThresholdConv` (foreground
    iff a pixel is above 0.5): a ``side x side`` foreground square at a random place, each
    pixel 0.5 +- a random gap in [0.03, 0.23] on its own class's side, so the model's
    segmentation is the truth (Dice 1)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for _ in range(n):
        label = torch.zeros(size, size, dtype=torch.long)
        top, left = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
        label[top:top + side, left:left + side] = 1
        gap = 0.03 + 0.2 * torch.rand(size, size, generator=g, dtype=torch.float64)
        xs.append((0.5 + gap * (2 * label - 1)).unsqueeze(0))
        ys.append(label)
    return ThresholdConv().double(), torch.stack(xs), torch.stack(ys)


def _cost_to_fool(x, y, task, norm):
    """Exact per-image distance (n,) to a segmentation no longer correct: flip the k
    foreground and m background pixels nearest to 0.5 (a pixel flips once moved by its
    gap), over every (k, m) whose Dice 2 (F - k) / (2 F - k + m) fails the threshold."""
    costs = []
    for xi, yi in zip(x, y, strict=True):
        gap = (xi[0] - 0.5).abs()
        fg, bg = gap[yi == 1].sort().values, gap[yi == 0].sort().values
        f = len(fg)
        best = math.inf
        for k in range(f + 1):
            for m in range(len(bg) + 1):
                if task.meets_threshold(torch.tensor(2 * (f - k) / (2 * f - k + m))):
                    continue
                moved = torch.cat([fg[:k], bg[:m]])
                cost = float(moved.norm() if norm == "l2" else moved.max())
                best = min(best, cost)
                break
        costs.append(best)
    return torch.tensor(costs, dtype=torch.float64)


@pytest.mark.parametrize("norm, factor", [("linf", 2.0), ("l2", 4.0)])
def test_square_attacks_segmentation_through_the_dice(norm, factor):
    """Per-image eps: half the images get less than their exact distance to a wrong
    segmentation (never fooled), half ``factor`` times it (always fooled). A random search
    whose L2 updates are smooth bumps needs a wide ball on this per-pixel threshold
    problem: torchattacks' L2 Square, run on the same Dice objective, fools 0 of 12 such
    images at twice the distance too, about all at four times."""
    model, x, y = _segmentation_problem()
    task = SegmentationTask()
    with torch.no_grad():
        assert (task.dice(model(x), y) == 1).all()
    cost = _cost_to_fool(x, y, task, norm)
    factors = torch.tensor([0.6, factor, 0.95, factor] * 2, dtype=cost.dtype)
    far, eps = factors > 1, factors * cost
    torch.manual_seed(0)
    r = square(model, x, y, eps=eps, norm=norm, queries=1000, task=task)
    assert r.success[far].all()
    assert not r.success[~far].any()
    with torch.no_grad():
        assert torch.equal(r.success, ~task.correct(model(r.x), y))
    assert (lp.sample_norm(r.x - x, norm) <= eps + 1e-9).all()
    assert r.x.min() >= 0 and r.x.max() <= 1


@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 1.0)])
def test_square_is_as_strong_as_torchattacks_square(digits_model, norm, eps):
    """Peer check: torchattacks' Square, same budget (1000 queries), p_init 0.8, one
    restart; ours fools at least as many samples, minus one point."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = digits_model
    x, y = x[:200], y[:200]
    torch.manual_seed(0)
    ours = square(model, x, y, eps=eps, norm=norm.lower(), queries=1000).success
    peer = torchattacks.Square(model, norm=norm, eps=eps, n_queries=1000, n_restarts=1,
                               p_init=0.8, seed=0)
    with torch.no_grad():
        theirs = model(peer(x, y)).argmax(1) != y
    assert 0.05 < float(theirs.float().mean()) < 0.95
    assert float(ours.float().mean()) >= float(theirs.float().mean()) - 0.01
