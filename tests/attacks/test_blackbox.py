"""SPSA (black-box) against the exact margins of a linear classifier."""

import pytest
import torch

from ima import lp, pgd
from ima.attacks import spsa

from analytic import BinaryLinear, RowCounter, linear_problem

EPS = 0.1


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def problem():
    # Few samples in few dimensions keep 2048-pair SPSA fast (about 4096 queries per sample
    # and step on a 10-dimensional linear model).
    return linear_problem(d=10, n=60, eps=EPS, seed=3)


class Quantised(torch.nn.Module):
    """A linear model behind a rounding of its input: gradients are exactly zero (masked),
    the outputs the same as the model's up to 1e-4 per input element."""

    def __init__(self, inner: BinaryLinear):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 1e4) / 1e4)


@pytest.mark.parametrize("norm, eps", [("l2", EPS), ("linf", 0.03)])
def test_spsa_finds_what_the_exact_margins_allow(norm, eps):
    model, x, y, margin = linear_problem(d=10, n=60, eps=eps, norm=norm, seed=3)
    r = spsa(model, x, y, eps=eps, norm=norm)
    clear = margin < 0.9 * eps  # Adam on an L2 ball settles a little short of the sphere
    assert clear.sum() > 5 and (margin > eps).sum() > 5
    assert r.success[clear].all()
    assert not r.success[margin > eps].any()
    assert torch.equal(model(r.x).argmax(1) != y, r.success)
    assert (lp.sample_norm(r.x - x, norm) <= eps * (1 + 1e-5)).all()
    assert r.x.min() >= 0 and r.x.max() <= 1


def test_spsa_needs_no_gradient_where_pgd_is_masked(problem):
    inner, x, y, margin = problem
    model = Quantised(inner)
    clear = margin < 0.9 * EPS
    masked = pgd(model, x, y, eps=EPS, steps=50, random_start=False, early_stop=True)
    assert not masked.success.any(), "zero gradients leave PGD where it started"
    r = spsa(model, x, y, eps=EPS)
    assert r.success[clear].all()
    assert not r.success[margin > EPS].any()


def test_early_stop_keeps_the_first_adversarial_iterate_and_saves_queries(problem):
    model, x, y, margin = problem
    counted = RowCounter(model)
    spsa(counted, x, y, eps=EPS, steps=20, n_samples=64, early_stop=True)
    early = counted.rows
    counted.rows = 0
    last = spsa(counted, x, y, eps=EPS, steps=20, n_samples=64, early_stop=False)
    assert early < counted.rows
    # without early stop the result is the last iterate: on the eps sphere for the fooled
    norms = lp.sample_norm(last.x - x, "l2")[last.success]
    assert (norms > 0.9 * EPS).all()


def test_queries_per_step_and_query_batch(problem):
    model, x, y, _ = problem
    counted = RowCounter(model)
    x1, y1 = x[:3], y[:3]
    spsa(counted, x1, y1, eps=1e-6, steps=2, n_samples=10, early_stop=False)
    # 3 passes classifying the iterates, 2 steps of 2 * 10 queries per sample
    assert counted.rows == 3 * 3 + 2 * 3 * 20
    results = []
    for query_batch in (4096, 7):
        torch.manual_seed(1)
        results.append(spsa(model, x, y, eps=EPS, steps=3, n_samples=16,
                            query_batch=query_batch, early_stop=False).x)
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)  # summation order


def test_spsa_leaves_the_model_as_it_was(problem):
    model, x, y, _ = problem
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    spsa(model, x, y, eps=EPS, steps=2, n_samples=8, bounds=None)
    assert model.training
    assert all((p.grad == 7.0).all() for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"eps": -0.1}, ValueError, "eps must be >= 0"),
        ({"eps": 0.1, "norm": "l1"}, ValueError, "norm must be one of"),
        ({"eps": 0.1, "steps": 0}, ValueError, "steps must be >= 1"),
        ({"eps": 0.1, "n_samples": 0}, ValueError, "n_samples must be >= 1"),
        ({"eps": 0.1, "delta": 0.0}, ValueError, "delta must be > 0"),
        ({"eps": 0.1, "lr": -1.0}, ValueError, "lr must be > 0"),
        ({"eps": 0.1, "query_batch": 1}, ValueError, "query_batch must be >= 2"),
        ({"eps": 0.1, "bounds": (0.5, 0.6)}, ValueError, "must lie inside bounds"),
    ],
)
def test_bad_spsa_input(problem, kwargs, error, match):
    model, x, y, _ = problem
    with pytest.raises(error, match=match):
        spsa(model, x, y, **kwargs)
