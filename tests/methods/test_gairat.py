"""GAIRAT's instance weights on a linear model whose margins are known."""

import pytest
import torch
import torch.nn.functional as F

from ima.methods import build_method
from ima.methods.gairat import gair_weights

from analytic import linear_problem

EPS = 0.1
STEPS = 10


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_samples_near_the_boundary_get_larger_weights(norm):
    model, x, y, margin = linear_problem(norm=norm, eps=EPS, n=600)
    step = EPS / 4  # the default: 10 steps, alpha 2.5
    ratio = margin / step
    clear = (ratio - ratio.round()).abs() > 1e-3  # avoid margins on a step boundary
    x, y, margin = x[clear], y[clear], margin[clear]
    n = len(x)
    method = build_method("gairat", num_samples=n, epochs=60, bounds=(0.0, 1.0), eps=EPS,
                          norm=norm, random_start=False)
    assert method.config.begin_epoch == 30  # half of the epochs (appendix G.1)

    # kappa: iterate j lies j * step along the shortest path to the boundary, so exactly
    # ceil(margin / step) iterates are correct when the margin is below eps, else all
    r = method.attack(model, x, y)
    kappa = r.correct_steps
    expected = torch.where(margin < EPS, torch.ceil(margin / step), STEPS).long()
    assert torch.equal(kappa, expected)
    assert len(set(kappa.tolist())) >= 4  # several distances to the boundary

    # from epoch 30 (1-based) on: the Tanh weights, normalised to sum to the batch size
    w = method.weights(kappa, 29)
    raw = (1 + torch.tanh(-1.0 + 5 * (1 - 2 * kappa.float() / STEPS))) / 2
    torch.testing.assert_close(w, raw * n / raw.sum())
    torch.testing.assert_close(w.sum(), torch.tensor(float(n)))
    # smaller margin -> smaller kappa -> larger weight
    by_margin = w[margin.argsort()]
    assert (by_margin[1:] <= by_margin[:-1] * (1 + 1e-6)).all()
    assert w[kappa == kappa.min()].min() > 5 * w[kappa == STEPS].max()
    # before it, every weight is one
    assert torch.equal(method.weights(kappa, 28), torch.ones(n))

    # the loss: plain adversarial cross-entropy before begin_epoch, weighted after
    index = torch.arange(n)
    ce = F.cross_entropy(model(r.x), y, reduction="none")
    torch.testing.assert_close(method(model, x, y, index, 28).loss, ce.mean())
    torch.testing.assert_close(method(model, x, y, index, 29).loss, (w * ce).mean())


def test_weights_stay_finite_when_every_raw_weight_underflows():
    kappa = torch.tensor([10, 10, 9, 0])
    w = gair_weights(kappa, steps=STEPS, lam=-60.0)  # (1 + tanh(-65)) / 2 == 0 in floats
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.sum(), torch.tensor(4.0))
    assert w[3] > w[2] > w[0] == w[1]
