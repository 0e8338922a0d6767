"""BPGD and PGD on a small non-linear network against a brute-force reference."""

import pytest
import torch

from ima import bpgd, lp, pgd

from analytic import small_problem

EPS, STEPS, ALPHA, N_BINARY = 0.3, 20, 4.0, 10


@pytest.fixture
def problem():
    return small_problem()


def pgd_path(net, x, y, norm):
    """Iterates 0 (clean), 1 (start = clean here) and the PGD steps, as a list of tensors."""
    step = ALPHA * EPS / STEPS
    path = [x, x]
    for k in range(1, STEPS + 1):
        path.append(pgd(net, x, y, eps=EPS, norm=norm, steps=k, step_size=step,
                        random_start=False).x)
    return path


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_bpgd_matches_a_fine_line_search_along_the_pgd_path(problem, norm):
    net, x, y = problem
    path = pgd_path(net, x, y, norm)
    with torch.no_grad():
        wrong = torch.stack([net(p).argmax(1) != y for p in path])  # (iterates, B)
    crossed = wrong.any(0)
    assert 0 < crossed.sum() < len(y)

    r = bpgd(net, x, y, eps=EPS, norm=norm, steps=STEPS, alpha=ALPHA, n_binary=N_BINARY,
             random_start=False)
    assert torch.equal(r.success, crossed)
    assert (lp.sample_norm(r.x - x, norm) <= EPS * (1 + 1e-5)).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    with torch.no_grad():
        assert (net(r.x[r.success]).argmax(1) != y[r.success]).all()

    # Brute force: on the segment between the last correct and the first wrong iterate,
    # a fine grid locates the label changes; BPGD's point must be within its final
    # bracket of one of them.
    grid = torch.linspace(0, 1, 2001)
    for i in crossed.nonzero().squeeze(1).tolist():
        k = int(wrong[:, i].float().argmax())
        a, b = path[k - 1][i], path[k][i]
        points = a + grid[:, None] * (b - a)
        with torch.no_grad():
            labels_wrong = net(points).argmax(1) != y[i]
        changes = grid[1:][labels_wrong[1:] != labels_wrong[:-1]]
        assert len(changes), "the segment must contain a label change"
        # position of BPGD's point along the segment
        t = float(((r.x[i] - a) @ (b - a)) / (b - a).pow(2).sum())
        assert torch.allclose(a + t * (b - a), r.x[i], atol=1e-5), "point is off the segment"
        tolerance = 1 / 2**N_BINARY + 1 / (len(grid) - 1)
        assert (changes - t).abs().min() <= tolerance


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_early_stopped_pgd_never_reports_a_correct_point(problem, norm):
    net, x, y = problem
    for loss in ("ce", "margin"):
        r = pgd(net, x, y, eps=EPS, norm=norm, early_stop=True, loss=loss)
        with torch.no_grad():
            wrong = net(r.x).argmax(1) != y
        assert torch.equal(wrong, r.success)
        assert (lp.sample_norm(r.x - x, norm) <= EPS * (1 + 1e-5)).all()


def test_pgd_increases_the_loss_it_is_given(problem):
    net, x, y = problem
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        clean = ce(net(x), y, reduction="none")
    r = pgd(net, x, y, eps=0.05, random_start=False)
    with torch.no_grad():
        attacked = ce(net(r.x), y, reduction="none")
    assert (attacked >= clean - 1e-6).all()
    assert attacked.mean() > clean.mean()


def test_random_start_bpgd_finds_misclassified_points(problem):
    net, x, y = problem
    torch.manual_seed(3)
    r = bpgd(net, x, y, eps=EPS)
    assert r.success.any()
    with torch.no_grad():
        assert (net(r.x[r.success]).argmax(1) != y[r.success]).all()
        assert (net(r.x[~r.success]).argmax(1) == y[~r.success]).all()
