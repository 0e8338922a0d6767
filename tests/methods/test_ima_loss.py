"""Algorithm 1's loss, computed by hand on a linear model whose geometry is known."""

import math

import pytest
import torch
import torch.nn.functional as F

from ima import bpgd
from ima.config import resolve_config
from ima.methods import build_method

from analytic import linear_problem

EPS = 0.1  # every margin starts at delta_eps = EPS


def _problem():
    """Linear model, samples with exact margins, and labels flipped on 12 samples (6 near
    the boundary, 6 far from it) so that X0 is not empty."""
    model, x, y, margin = linear_problem(d=20, n=300, eps=EPS, seed=3)
    near = (margin < EPS).nonzero().squeeze(1)
    far = (margin > EPS).nonzero().squeeze(1)
    flip = torch.cat([near[:6], far[:6]])
    y = y.clone()
    y[flip] = 1 - y[flip]
    return model, x, y, margin, flip


def _method(n, **kwargs):
    # eps_max far above the margins, so no clipping; delta_eps sets the initial margins
    return build_method("ima", num_samples=n, epochs=10, bounds=(0.0, 1.0), eps_max=1.0,
                        delta_eps=EPS, **kwargs)


@pytest.mark.parametrize("beta", [0.5, 0.2, 1.0])
def test_loss_matches_algorithm_1(beta):
    model, x, y, margin, flip = _problem()
    n = len(x)
    correct = torch.ones(n, dtype=torch.bool)
    correct[flip] = False
    # the flipped samples are exactly the misclassified ones
    assert torch.equal((model(x).argmax(1) == y), correct)
    method = _method(n, beta=beta)

    torch.manual_seed(7)
    out = method(model, x, y, torch.arange(n), 0)
    grads = torch.autograd.grad(out.loss, list(model.parameters()))

    # By hand: BPGD with the same random numbers on X1 only, then the formula.
    torch.manual_seed(7)
    ones = correct.nonzero().squeeze(1)
    boundary = bpgd(model, x[ones], y[ones], eps=EPS, bounds=(0.0, 1.0))
    hit = boundary.success
    l0 = F.cross_entropy(model(x[~correct]), y[~correct], reduction="sum")
    l1 = F.cross_entropy(model(x[ones]), y[ones], reduction="sum")
    l2 = F.cross_entropy(model(boundary.x[hit]), y[ones][hit], reduction="sum")
    expected = ((1 - beta) * (l0 + l1) + beta * l2) / n
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=0)
    for g, e in zip(grads, torch.autograd.grad(expected, list(model.parameters())), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)

    # Against the geometry alone: a boundary point is found exactly for the correctly
    # classified samples whose margin is below their eps (never for a flipped sample,
    # however near the boundary); on the boundary both logits are equal, so each such
    # point costs log 2. Clean cross-entropy of the linear model: softplus(-(2y-1) f(x)).
    assert torch.equal(hit, margin[ones] < EPS)
    n_found = int((margin[correct] < EPS).sum())
    assert 0 < n_found < len(ones)
    sign = 2 * y.float() - 1
    clean = F.softplus(-sign * model.f(x)).sum()
    analytic = ((1 - beta) * clean + beta * n_found * math.log(2)) / n
    torch.testing.assert_close(out.loss, analytic, rtol=1e-3, atol=0)
    assert out.logs["boundary_found"] == pytest.approx(n_found / n)
    assert out.logs["clean_correct"] == pytest.approx(len(ones) / n)

    # Algorithm 2 from the same pass: crossed samples shrink to (d + E) / 2 with the exact
    # margin <= d <= E, the others expand to 2 E, misclassified samples keep E.
    method.end_epoch(0)
    new = method.margins.margins
    assert torch.equal(new[flip], torch.full((len(flip),), EPS))
    shrunk = ones[hit]
    assert (new[shrunk] >= (margin[shrunk] + EPS) / 2 - 1e-6).all()
    assert (new[shrunk] <= EPS + 1e-6).all()
    torch.testing.assert_close(new[ones[~hit]], torch.full((int((~hit).sum()),), 2 * EPS))


def test_beta_zero_is_plain_mean_cross_entropy():
    model, x, y, _, _ = _problem()
    out = _method(len(x), beta=0.0)(model, x, y, torch.arange(len(x)), 0)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y), rtol=1e-6, atol=0)


def test_all_misclassified_batch_gives_half_the_clean_loss():
    model, x, y, _, _ = _problem()
    wrong = 1 - model(x).argmax(1)
    out = _method(len(x))(model, x, wrong, torch.arange(len(x)), 0)
    torch.testing.assert_close(out.loss, 0.5 * F.cross_entropy(model(x), wrong))
    assert out.logs["boundary_found"] == 0 and out.logs["clean_correct"] == 0


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_beta_outside_unit_interval_is_refused(beta):
    with pytest.raises(ValueError, match="beta"):
        _method(10, beta=beta)
    raw = {"data": {"name": "moons"}, "model": {"name": "moons_mlp"},
           "method": {"name": "ima", "eps_max": 0.3, "beta": beta}}
    with pytest.raises(ValueError, match="beta"):
        resolve_config(raw)
