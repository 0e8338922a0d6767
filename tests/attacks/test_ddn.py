"""DDN (minimal L2 attack) against the exact margins of a linear classifier."""

import pytest
import torch

from ima import ddn, lp, pgd

from analytic import RowCounter, linear_problem

EPS = 0.2  # PGD's fixed budget; every nearest boundary point lies inside [0, 1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def problem():
    return linear_problem(eps=EPS)


def test_ddn_finds_a_perturbation_as_small_as_the_exact_margin(problem):
    model, x, y, margin = problem
    r = ddn(model, x, y)
    assert r.success.all()
    assert (model(r.x).argmax(1) != y).all()  # success means misclassified
    assert r.x.min() >= 0 and r.x.max() <= 1
    assert r.clean_correct.all()
    norm = lp.sample_norm(r.x - x, "l2")
    # Never nearer than the boundary, and within 2 % of it. From init_norm = 1 the radius
    # shrinks at most by (1 - gamma) per step, so 100 steps cannot go below
    # 0.95**100 = 0.006: margins under 0.02 are only checked against that floor.
    assert (norm >= margin * (1 - 1e-4)).all()
    usual = margin > 0.02
    assert usual.sum() > 0.8 * len(x)
    assert (norm[usual] <= 1.02 * margin[usual]).all()
    assert (norm[~usual] <= 0.02).all()


def test_ddn_norm_is_below_that_of_pgd_with_a_fixed_budget(problem):
    model, x, y, margin = problem
    fixed = pgd(model, x, y, eps=EPS)
    fooled = fixed.success
    assert torch.equal(fooled, margin < EPS) and 0 < fooled.sum() < len(x)
    pgd_norm = lp.sample_norm(fixed.x - x, "l2")[fooled]
    ddn_norm = lp.sample_norm(ddn(model, x, y).x - x, "l2")[fooled]
    # PGD's last iterate sits on the eps sphere, beyond the boundary; DDN stops near it.
    assert (pgd_norm > 0.99 * EPS).all()
    assert (ddn_norm < pgd_norm).all()
    assert ddn_norm.mean() < 0.6 * pgd_norm.mean()


def test_max_norm_caps_the_perturbation_and_success_is_rechecked():
    cap = 0.1
    model, x, y, margin = linear_problem(eps=cap)  # no margin within 2 % of the cap
    r = ddn(model, x, y, max_norm=cap)
    norm = lp.sample_norm(r.x - x, "l2")
    assert (norm <= cap * (1 + 1e-5)).all()
    assert torch.equal(r.success, margin < cap)
    assert torch.equal(model(r.x).argmax(1) != y, r.success)
    # a per-sample cap
    caps = torch.where(margin < cap, 0.5 * margin, torch.full_like(margin, 1.0))
    r = ddn(model, x, y, max_norm=caps)
    assert not r.success[margin < cap].any()
    assert (lp.sample_norm(r.x - x, "l2") <= caps + 1e-6).all()  # float32 rounding of x + delta


def test_never_fooled_returns_x_and_misclassified_returns_x_with_success(problem):
    model, x, y, margin = problem
    y = y.clone()
    y[:5] = 1 - y[:5]  # misclassified from the start: adversarial at norm 0
    r = ddn(model, x, y, steps=3)  # 3 steps reach radius ~1.16 at most, far beyond every margin
    assert torch.equal(r.clean_correct[:5], torch.zeros(5, dtype=torch.bool))
    assert r.success[:5].all() and torch.equal(r.x[:5], x[:5])
    # With one step, iterate 1 lies at radius (1 + gamma) * init_norm: too small to cross
    # for every sample whose margin exceeds it, which is then returned unchanged.
    r = ddn(model, x, y, steps=1, init_norm=0.01)
    far = margin > 0.011
    far[:5] = False
    assert not r.success[far].any()
    assert torch.equal(r.x[far], x[far])


def test_samples_misclassified_at_the_start_cost_no_pass_after_the_first(problem):
    model, x, y, _ = problem
    y = y.clone()
    y[:7] = 1 - y[:7]
    counter = RowCounter(model)
    steps = 10
    r = ddn(counter, x, y, steps=steps)
    b = len(y)
    assert counter.rows == b + steps * (b - 7)  # iteration 0 for all, then the correct ones
    assert r.success[:7].all() and torch.equal(r.x[:7], x[:7])
    plain = ddn(model, x[7:], y[7:], steps=steps)  # the rest are searched as if alone
    assert torch.allclose(r.x[7:], plain.x, atol=1e-6)
    assert torch.equal(r.success[7:], plain.success)


def test_unbounded_data_and_mode_and_gradients_untouched(problem):
    model, x, y, margin = problem
    model.train()
    r = ddn(model, x, y, bounds=None)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    usual = margin > 0.02
    norm = lp.sample_norm(r.x - x, "l2")
    assert (norm[usual] <= 1.02 * margin[usual]).all() and r.success.all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"steps": 2.5}, TypeError, "steps must be an integer"),
        ({"gamma": 0.0}, ValueError, "gamma must be > 0"),
        ({"gamma": 1.0}, ValueError, "gamma must be < 1"),
        ({"init_norm": 0.0}, ValueError, "init_norm must be > 0"),
        ({"step_size": -1.0}, ValueError, "step_size must be > 0"),
        ({"max_norm": -0.5}, ValueError, "max_norm must be >= 0"),
        ({"max_norm": torch.ones(3)}, ValueError, "max_norm must be a float or a tensor"),
        ({"bounds": (1.0, 0.0)}, ValueError, "low < high"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    model, x, y, _ = linear_problem(n=20)
    with pytest.raises(error, match=match):
        ddn(model, x, y, **kwargs)


def test_bad_data():
    model, x, y, _ = linear_problem(n=20)
    with pytest.raises(ValueError, match="same number of samples"):
        ddn(model, x, y[:-1])
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        ddn(model, bad, y)
    with pytest.raises(ValueError, match="x must lie inside bounds"):
        ddn(model, x + 1.0, y)
    with pytest.raises(ValueError, match="labels y must be in"):
        ddn(model, x, y + 2)
