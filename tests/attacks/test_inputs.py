"""Bad inputs to the attacks raise clear errors naming the problem."""

import pytest
import torch

from ima import bpgd, pgd

from analytic import linear_problem

ATTACKS = [pgd, bpgd]


@pytest.fixture
def problem():
    model, x, y, _ = linear_problem(n=20)
    return model, x, y


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"eps": -0.1}, ValueError, "eps must be >= 0"),
        ({"eps": float("nan")}, ValueError, "eps must not be NaN"),
        ({"eps": 0.1, "norm": "l1"}, ValueError, "norm must be one of"),
        ({"eps": 0.1, "loss": "hinge"}, ValueError, "loss must be one of"),
        ({"eps": 0.1, "steps": 0}, ValueError, "steps must be >= 1"),
        ({"eps": 0.1, "steps": 2.5}, TypeError, "steps must be an integer"),
        ({"eps": 0.1, "alpha": 0.0}, ValueError, "alpha must be > 0"),
        ({"eps": 0.1, "step_size": -1.0}, ValueError, "step_size must be >= 0"),
        ({"eps": 0.1, "bounds": (1.0, 0.0)}, ValueError, "low < high"),
        ({"eps": 0.1, "bounds": 1.0}, TypeError, "bounds must be None or a pair"),
        ({"eps": torch.ones(3)}, ValueError, "one per sample"),
    ],
)
def test_bad_parameters(problem, attack, kwargs, error, match):
    model, x, y = problem
    with pytest.raises(error, match=match):
        attack(model, x, y, **kwargs)


@pytest.mark.parametrize("attack", ATTACKS)
def test_bad_data(problem, attack):
    model, x, y = problem
    with pytest.raises(ValueError, match="same number of samples"):
        attack(model, x, y[:-1], eps=0.1)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        attack(model, bad, y, eps=0.1)
    with pytest.raises(ValueError, match=r"x must lie inside bounds \(0.0, 1.0\)"):
        attack(model, x + 1.0, y, eps=0.1)
    attack(model, x + 1.0, y, eps=0.1, bounds=None)  # fine when unbounded
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 1\]"):
        attack(model, x, y + 2, eps=0.1)
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 1\]"):
        attack(model, x, y - 1, eps=0.1)
    with pytest.raises(TypeError, match="integer tensor"):
        attack(model, x, y.float(), eps=0.1)
    with pytest.raises(TypeError, match="floating-point"):
        attack(model, x.long(), y, eps=0.1)


def test_bpgd_n_binary_checked(problem):
    model, x, y = problem
    with pytest.raises(ValueError, match="n_binary must be >= 0"):
        bpgd(model, x, y, eps=0.1, n_binary=-1)


def test_pgd_start_points_are_checked_and_kept_inside_the_ball():
    model, x, y, margin = linear_problem(n=200, eps=0.1)
    with pytest.raises(ValueError, match="start must be a tensor shaped like x"):
        pgd(model, x, y, eps=0.1, start=x[:-1])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="start contains 1 NaN"):
        pgd(model, x, y, eps=0.1, start=bad)
    # far outside every ball (and the bounds): projected back before the first iterate is
    # judged, so exactly the samples with margin below eps are fooled
    far = x + 5.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    r = pgd(model, x, y, eps=0.1, start=far, early_stop=True, steps=50)
    assert float((r.x - x).norm(dim=1).max()) <= 0.1 + 1e-6
    assert float(r.x.min()) >= 0.0 and float(r.x.max()) <= 1.0
    assert torch.equal(r.success, margin < 0.1)
