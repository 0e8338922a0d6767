"""APGD (Croce and Hein 2020) against a multi-class linear model whose exact margins are
known: the distance to the region {argmax != y} is the smallest distance to a half-space
{z_j >= z_y}, i.e. min_j (z_y - z_j) / ||w_y - w_j||_q (q the dual norm)."""

import math

import pytest
import torch

from ima import lp
from ima.attacks import apgd, dlr_loss, pgd
from ima.attacks.apgd import checkpoints
from ima.tasks import SegmentationTask

from analytic import SEG_PIXELS, dice_at_shift, segmentation_problem

K, D = 4, 20
BAND = (0.98, 1.02)


def _problem(norm: str, eps: float, n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(K, D, generator=g)
    x = 0.3 + 0.4 * torch.rand(n, D, generator=g)
    model = torch.nn.Linear(D, K)
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.zero_()
        z = model(x)
    y = z.argmax(1)
    diff = w[y][:, None, :] - w[None, :, :]  # (n, K, D): w_y - w_j
    dual = diff.norm(dim=2) if norm == "l2" else diff.abs().sum(dim=2)
    gap = z.gather(1, y[:, None]) - z
    distance = (gap / dual.clamp_min(1e-12)).masked_fill(
        torch.nn.functional.one_hot(y, K).bool(), float("inf"))
    margin = distance.min(dim=1).values
    keep = (margin < BAND[0] * eps) | (margin > BAND[1] * eps)
    return model, x[keep], y[keep], margin[keep]


@pytest.mark.parametrize(("norm", "eps"), [("l2", 0.15), ("linf", 0.02)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_fools_exactly_the_samples_whose_margin_is_below_eps(norm, eps, loss):
    model, x, y, margin = _problem(norm, eps)
    torch.manual_seed(0)
    r = apgd(model, x, y, eps=eps, norm=norm, steps=100, loss=loss)
    truth = margin < eps
    assert 0 < truth.sum() < len(y)
    assert torch.equal(r.success, truth)
    # every result inside the ball and the bounds; every success misclassified
    assert (lp.sample_norm(r.x - x, norm) <= eps * (1 + 1e-5)).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    assert (model(r.x[r.success]).argmax(1) != y[r.success]).all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_targeted_dlr_over_the_top_classes_finds_every_crossing(norm):
    eps = 0.15 if norm == "l2" else 0.02
    model, x, y, margin = _problem(norm, eps, seed=1)
    with torch.no_grad():
        ranked = model(x).argsort(dim=1, descending=True)
    fooled = torch.zeros(len(y), dtype=torch.bool)
    torch.manual_seed(0)
    for rank in range(1, K):  # the targets: every other class, by clean logit
        todo = (~fooled).nonzero().squeeze(1)
        r = apgd(model, x[todo], y[todo], eps=eps, norm=norm, loss="dlr",
                 target=ranked[todo, rank])
        fooled[todo[r.success]] = True
    assert torch.equal(fooled, margin < eps)


def test_dlr_loss_values():
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([0])
    assert float(dlr_loss(z, y)) == pytest.approx(-(3 - 1) / (3 - 0))
    target = torch.tensor([2])
    assert float(dlr_loss(z, y, target)) == pytest.approx(-(3 - 0) / (3 - (0 - 1) / 2))


def test_checkpoints_follow_the_authors_schedule():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_bad_inputs():
    model, x, y, _ = _problem("l2", 0.1, n=20)
    with pytest.raises(ValueError, match="loss"):
        apgd(model, x, y, eps=0.1, loss="dice_ce")
    with pytest.raises(ValueError, match="target"):
        apgd(model, x, y, eps=0.1, loss="ce", target=y[:3])
    with pytest.raises(ValueError, match="eot"):
        apgd(model, x, y, eps=0.1, eot=0)
    with pytest.raises(ValueError, match="classification loss"):
        apgd(model, x, y, eps=0.1, loss="dlr", task=SegmentationTask())


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_targeted_task_losses_reach_the_target(loss):
    """Descending CE or the margin towards a target class: every sample whose distance to
    the target's half-space is below eps ends in it (the linear model's truth)."""
    eps = 0.15
    model, x, y, _ = _problem("l2", eps, seed=2)
    with torch.no_grad():
        z = model(x)
    target = z.argsort(dim=1, descending=True)[:, 1]
    w = model.weight
    gap = z.gather(1, y[:, None])[:, 0] - z.gather(1, target[:, None])[:, 0]
    reach = gap / (w[y] - w[target]).norm(dim=1)
    torch.manual_seed(0)
    r = apgd(model, x, y, eps=eps, norm="l2", loss=loss, target=target)
    keep = (reach < 0.95 * eps) | (reach > 1.05 * eps)
    assert torch.equal(r.success[keep], reach[keep] < eps)


@pytest.mark.parametrize("classes", [2, 3])
def test_dlr_with_few_classes_keeps_its_sign_and_fools_below_the_margin(classes):
    z = torch.tensor([[2.0, 1.0, -1.0][:classes]])
    y = torch.tensor([0])
    assert float(dlr_loss(z, y)) < 0 < float(dlr_loss(z, torch.tensor([1])))
    assert float(dlr_loss(z, y, torch.tensor([1]))) < 0
    if classes == 2:
        assert float(dlr_loss(z, y)) == pytest.approx(-1.0)  # the plain logit difference
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Linear(D, classes)
    with torch.no_grad():
        model.weight.copy_(torch.randn(classes, D, generator=g))
        model.bias.zero_()
    x = 0.3 + 0.4 * torch.rand(200, D, generator=g)
    with torch.no_grad():
        zz = model(x)
    yy = zz.argmax(1)
    w = model.weight
    dist = (zz.gather(1, yy[:, None]) - zz) / (w[yy][:, None] - w[None]).norm(dim=2)
    margin = dist.masked_fill(torch.nn.functional.one_hot(yy, classes).bool(),
                              float("inf")).min(1).values
    torch.manual_seed(0)
    r = apgd(model, x, yy, eps=0.15, norm="l2", loss="dlr")
    keep = (margin < 0.98 * 0.15) | (margin > 1.02 * 0.15)
    assert torch.equal(r.success[keep], margin[keep] < 0.15)


class NoisyGradient(torch.nn.Module):
    """A randomised model whose outputs are the linear model's but whose input gradient
    gets a fresh random matrix ``sigma R`` on every pass (``R x - (R x).detach()`` is 0
    in value): one pass's gradient is mostly noise, the mean over many follows the
    weights."""

    def __init__(self, model, sigma):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        noise = x @ torch.randn(x.shape[1], self.model.out_features)
        return self.model(x) + self.sigma * (noise - noise.detach())


def test_eot_averages_the_gradient_over_passes():
    """One APGD step from the clean point goes along the (mean) gradient: with EOT over 20
    passes it points nearly along the exact direction ``w_t - w_y``, with one pass not."""
    eps = 0.15
    model, x, y, _ = _problem("l2", eps, seed=4)
    noisy = NoisyGradient(model, sigma=2.0)
    with torch.no_grad():
        target = model(x).argsort(dim=1, descending=True)[:, 1]
    exact = model.weight[target] - model.weight[y]

    def alignment(eot):
        torch.manual_seed(0)
        r = apgd(noisy, x, y, eps=eps, norm="l2", loss="margin", target=target, steps=1,
                 random_start=False, eot=eot)
        cos = torch.nn.functional.cosine_similarity(r.x - x, exact.detach(), dim=1)
        return float(cos.mean())

    assert alignment(20) > 0.85 > 0.5 > alignment(1)  # measured: 0.90 and 0.29


def test_segmentation_apgd_finds_the_dice_threshold_crossing_where_pgd_does():
    """The analytic segmenter (tests/analytic.py): the margin loss's gradient is the same
    everywhere, so APGD without a random start walks the ray ``x + t d`` as 100-PGD does;
    the Dice first falls to 0.6 at ``t = 0.09 sqrt(N)``, and each run returns its point of
    lowest Dice, with success where that Dice is at or below the threshold."""
    model, x, y, d = segmentation_problem()
    task = SegmentationTask(threshold=0.6)
    cross = 0.09 * math.sqrt(SEG_PIXELS)
    for eps in (0.3, cross - 1e-3, cross + 1e-3, 0.5):
        r = apgd(model, x, y, eps=eps, norm="l2", loss="margin", random_start=False, task=task)
        dice = task.dice(model(r.x), y).item()
        assert dice == pytest.approx(dice_at_shift(eps / math.sqrt(SEG_PIXELS)))
        assert r.success.item() == (eps > cross) == (dice <= 0.6)
        assert (r.x - x).norm().item() <= eps * (1 + 1e-9)
        pgd_point = pgd(model, x, y, eps=eps, norm="l2", loss="margin", random_start=False,
                        task=task, step_size=eps / 10).x
        assert task.dice(model(pgd_point), y).item() == pytest.approx(dice)


@pytest.mark.parametrize("loss", ["dice_ce", "margin"])
def test_segmentation_apgd_targeted_at_the_empty_map_erases_the_foreground(loss):
    """The Dice-targeted attack: descending the loss towards an all-background map moves
    every foreground pixel down; with eps large enough every pixel turns background (Dice
    0), with a small eps none can (Dice 1)."""
    model, x, y, _ = segmentation_problem()
    task = SegmentationTask()
    empty = torch.zeros_like(y)
    big = apgd(model, x, y, eps=0.25, norm="linf", loss=loss, target=empty, task=task)
    assert big.success.item() and task.dice(model(big.x), y).item() == 0.0
    small = apgd(model, x, y, eps=0.01, norm="linf", loss=loss, target=empty, task=task)
    assert not small.success.item() and task.dice(model(small.x), y).item() == 1.0


@pytest.mark.parametrize(("norm", "eps", "loss"), [("l2", 0.5, "ce"), ("linf", 0.1, "dlr")])
def test_apgd_is_as_strong_as_torchattacks_apgd(digits_model, norm, eps, loss):
    """Peer check: the authors' algorithm as torchattacks implements it, same settings (100
    steps, one restart); ours fools at least as many samples, minus one point."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = digits_model
    torch.manual_seed(0)
    ours = apgd(model, x, y, eps=eps, norm=norm, loss=loss, steps=100).success
    peer = torchattacks.APGD(model, norm="L2" if norm == "l2" else "Linf", eps=eps,
                             steps=100, n_restarts=1, loss=loss, seed=0)
    with torch.no_grad():
        theirs = model(peer(x, y)).argmax(1) != y
    assert 0.05 < float(theirs.float().mean()) < 0.95  # a level where the attacks differ
    assert float(ours.float().mean()) >= float(theirs.float().mean()) - 0.01
