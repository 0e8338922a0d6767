import pytest
import torch
from scipy import stats

from ima import lp

NORMS = ["l2", "linf"]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", [(7, 2), (5, 3, 4, 4)])
def test_projection_idempotent_and_non_expanding(norm, shape, gen):
    delta = torch.randn(shape, generator=gen) * 2
    eps = torch.rand(shape[0], generator=gen) + 0.1
    p = lp.project(delta, eps, norm)
    assert torch.allclose(lp.project(p, eps, norm), p, atol=1e-6)
    assert (lp.sample_norm(p, norm) <= eps * (1 + 1e-6)).all()
    assert (lp.sample_norm(p, norm) <= lp.sample_norm(delta, norm) + 1e-6).all()
    inside = delta * 1e-3
    assert torch.equal(lp.project(inside, 10.0, norm), inside)


def test_l2_projection_is_the_nearest_point(gen):
    delta = torch.randn(50, 3, generator=gen) * 3
    p = lp.project(delta, 1.0, "l2")
    # Any other point of the ball is at least as far from delta.
    others = lp.project(torch.randn(50, 3, generator=gen), 1.0, "l2")
    assert ((delta - p).norm(dim=1) <= (delta - others).norm(dim=1) + 1e-6).all()


@pytest.mark.parametrize("norm", NORMS)
def test_per_sample_eps_broadcasts_over_images(norm, gen):
    delta = torch.randn(4, 3, 5, 5, generator=gen)
    eps = torch.tensor([0.0, 0.1, 1.0, 100.0])
    p = lp.project(delta, eps, norm)
    for i in range(4):
        assert torch.allclose(p[i : i + 1], lp.project(delta[i : i + 1], float(eps[i]), norm))
    s = lp.sample_ball(delta, eps, norm, generator=gen)
    assert (lp.sample_norm(s, norm) <= eps * (1 + 1e-6)).all()
    assert torch.equal(s[0], torch.zeros_like(s[0]))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_sample_ball_is_uniform_in_volume(norm, d, gen):
    eps = 0.7
    x = torch.zeros(4000, d)
    s = lp.sample_ball(x, eps, norm, generator=gen)
    r = lp.sample_norm(s, norm) / eps
    assert (r <= 1 + 1e-6).all()
    # For a uniform point of a d-dimensional ball (any norm), P(r <= t) = t**d.
    result = stats.kstest(r.numpy(), lambda t: t.clip(0, 1) ** d)
    assert result.pvalue > 1e-3


def test_sample_ball_l2_direction_is_isotropic(gen):
    s = lp.sample_ball(torch.zeros(20000, 3), 1.0, "l2", generator=gen)
    assert s.mean(0).abs().max() < 0.02
    cov = (s.T @ s) / s.shape[0]
    assert torch.allclose(cov, torch.eye(3) * cov.diagonal().mean(), atol=0.01)


def test_ascent_direction(gen):
    g = torch.randn(6, 2, 3, generator=gen)
    g[2] = 0
    d2 = lp.ascent_direction(g, "l2")
    assert torch.allclose(lp.sample_norm(d2, "l2")[[0, 1, 3, 4, 5]], torch.ones(5))
    assert torch.equal(d2[2], torch.zeros(2, 3)), "zero gradient must give a zero step"
    dinf = lp.ascent_direction(g, "linf")
    assert torch.equal(dinf, g.sign())
    # Steepest ascent: <g, d> equals the dual norm of g.
    flat = g.reshape(6, -1)
    assert torch.allclose((flat * d2.reshape(6, -1)).sum(1), flat.norm(dim=1), atol=1e-5)
    assert torch.allclose((flat * dinf.reshape(6, -1)).sum(1), flat.abs().sum(1), atol=1e-5)


def test_sample_norm_and_clip():
    x = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    assert torch.equal(lp.sample_norm(x, "l2"), torch.tensor([5.0, 0.0]))
    assert torch.equal(lp.sample_norm(x, "linf"), torch.tensor([4.0, 0.0]))
    assert torch.equal(lp.clip_to_bounds(x, (0.0, 1.0)), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert lp.clip_to_bounds(x, None) is x


@pytest.mark.parametrize(
    "eps, error, match",
    [
        (-0.1, ValueError, "eps must be >= 0"),
        (float("nan"), ValueError, "NaN"),
        (float("inf"), ValueError, "finite"),
        (torch.tensor([0.1, -1.0, 0.1]), ValueError, ">= 0"),
        (torch.ones(2), ValueError, r"shape \(3,\)"),
        ("0.1", TypeError, "float or a tensor"),
        (True, TypeError, "float or a tensor"),
    ],
)
def test_bad_eps(eps, error, match):
    with pytest.raises(error, match=match):
        lp.per_sample_eps(eps, torch.zeros(3, 2))


def test_unknown_norm():
    with pytest.raises(ValueError, match="norm must be one of"):
        lp.project(torch.zeros(2, 2), 1.0, "l1")
