"""APGD (Croce and Hein 2020) against a multi-class linear model whose exact margins are
known: the distance to the region {argmax != y} is the smallest distance to a half-space
{z_j >= z_y}, i.e. min_j (z_y - z_j) / ||w_y - w_j||_q (q the dual norm)."""

import pytest
import torch

from ima import lp
from ima.attacks import apgd, dlr_loss
from ima.attacks.apgd import checkpoints

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
        apgd(model, x, y, eps=0.1, loss="margin")
    with pytest.raises(ValueError, match="target"):
        apgd(model, x, y, eps=0.1, loss="ce", target=y)


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
