"""The Square attack (Linf) against a multi-class linear model on 8x8 images whose exact
Linf margins are known: min_j (z_y - z_j) / ||w_y - w_j||_1."""

import pytest
import torch

from ima import lp
from ima.attacks import square
from ima.attacks.square import square_fraction

K = 4


def _problem(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(K, 64, generator=g)
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, K))
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.zero_()
        z = model(x)
    y = z.argmax(1)
    diff = w[y][:, None, :] - w[None, :, :]
    gap = z.gather(1, y[:, None]) - z
    distance = (gap / diff.abs().sum(dim=2).clamp_min(1e-12)).masked_fill(
        torch.nn.functional.one_hot(y, K).bool(), float("inf"))
    return model, x, y, distance.min(dim=1).values


def test_square_fools_samples_well_inside_and_never_those_outside_the_ball():
    model, x, y, margin = _problem()
    eps = 0.02
    torch.manual_seed(0)
    r = square(model, x, y, eps=eps, queries=1000)
    inside, outside = margin < 0.5 * eps, margin > eps
    assert inside.sum() > 10 and outside.sum() > 10
    assert r.success[inside].all()
    assert not r.success[outside].any()
    assert (lp.sample_norm(r.x - x, "linf") <= eps + 1e-6).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    assert (model(r.x[r.success]).argmax(1) != y[r.success]).all()


def test_more_queries_find_more():
    model, x, y, margin = _problem(seed=1)
    eps = 0.02
    found = []
    for queries in (5, 1000):
        torch.manual_seed(0)
        found.append(int(square(model, x, y, eps=eps, queries=queries).success.sum()))
    assert found[0] < found[1] <= int((margin < eps).sum())


def test_fraction_schedule_and_bad_inputs():
    assert square_fraction(0.8, 5, 10000) == 0.8
    assert square_fraction(0.8, 30, 10000) == 0.4
    assert square_fraction(0.8, 9000, 10000) == pytest.approx(0.8 / 512)
    assert square_fraction(0.8, 250, 5000) == 0.8 / 8  # rescaled: query 500 of 10000
    model, x, y, _ = _problem(n=4)
    with pytest.raises(ValueError, match="norm"):
        square(model, x, y, eps=0.1, norm="l2")
    with pytest.raises(ValueError, match="images"):
        square(model, x.flatten(1), y, eps=0.1)


def test_square_is_as_strong_as_torchattacks_square(digits_model):
    """Peer check: torchattacks' Square, same budget (1000 queries), p_init 0.8, one
    restart; ours fools at least as many samples, minus one point."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = digits_model
    x, y = x[:200], y[:200]
    torch.manual_seed(0)
    ours = square(model, x, y, eps=0.1, queries=1000).success
    peer = torchattacks.Square(model, norm="Linf", eps=0.1, n_queries=1000, n_restarts=1,
                               p_init=0.8, seed=0)
    with torch.no_grad():
        theirs = model(peer(x, y)).argmax(1) != y
    assert 0.05 < float(theirs.float().mean()) < 0.95
    assert float(ours.float().mean()) >= float(theirs.float().mean()) - 0.01
