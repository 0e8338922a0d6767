"""PGD and BPGD against the exact margins of a linear classifier."""

import pytest
import torch

from ima import bpgd, lp, pgd

from analytic import BinaryLinear, RowCounter, linear_problem

EPS = 0.1
NORMS = ["l2", "linf"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_fools_exactly_the_samples_with_margin_below_eps(norm, loss, early_stop, random_start):
    model, x, y, margin = linear_problem(norm=norm, eps=EPS)
    vulnerable = margin < EPS
    assert 0 < vulnerable.sum() < len(y), "the problem must have both kinds of sample"
    r = pgd(model, x, y, eps=EPS, norm=norm, loss=loss, early_stop=early_stop,
            random_start=random_start)
    assert torch.equal(r.success, vulnerable)
    assert (lp.sample_norm(r.x - x, norm) <= EPS * (1 + 1e-5)).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    # success means the returned point really is misclassified, and only then
    wrong = model(r.x).argmax(1) != y
    assert torch.equal(wrong, r.success)


@pytest.mark.parametrize("norm", NORMS)
def test_bpgd_success_set_and_boundary_points(norm):
    model, x, y, margin = linear_problem(norm=norm, eps=EPS)
    r = bpgd(model, x, y, eps=EPS, norm=norm)
    assert torch.equal(r.success, margin < EPS)
    found = r.x[r.success]
    # On the boundary within a small relative tolerance, and on its wrong side.
    assert (model.margin(found, norm) <= 1e-3 * EPS).all()
    assert (model(found).argmax(1) != y[r.success]).all()
    assert (lp.sample_norm(r.x - x, norm) <= EPS * (1 + 1e-5)).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    # Case-0 samples get their last iterate, which is still correctly classified.
    assert (model(r.x[~r.success]).argmax(1) == y[~r.success]).all()
    # A boundary point is never nearer than the exact margin.
    assert (lp.sample_norm(found - x[r.success], norm) >= margin[r.success] * (1 - 1e-4)).all()


def test_bpgd_bracket_is_narrower_than_a_step_over_two_to_the_n_binary():
    model, x, y, margin = linear_problem(norm="l2", eps=EPS)
    for n_binary in (0, 3, 10):
        r = bpgd(model, x, y, eps=EPS, norm="l2", random_start=False, n_binary=n_binary)
        step = 4.0 * EPS / 20
        # Without a random start every bracketed segment is one projected step, at most
        # `step` long (projection is non-expansive), so the boundary is that close.
        distance = model.margin(r.x[r.success], "l2")
        assert (distance <= step / 2**n_binary + 1e-6).all()  # + float32 rounding
        assert (model(r.x[r.success]).argmax(1) != y[r.success]).all()


def test_bpgd_leaves_misclassified_samples_unchanged():
    model, x, y, margin = linear_problem(norm="l2", eps=EPS)
    y_wrong = y.clone()
    y_wrong[:5] = 1 - y_wrong[:5]
    r = bpgd(model, x, y_wrong, eps=EPS)
    assert not r.success[:5].any()
    assert torch.equal(r.x[:5], x[:5])


def test_bpgd_spends_no_compute_after_crossing():
    # Without random start the first step is 0.2 * eps long: samples with margin below
    # that cross at step 1; samples with margin above eps never cross.
    model, x, y, margin = linear_problem(norm="l2", eps=EPS, n=2000)
    near, far = margin < 0.15 * EPS, margin > 1.05 * EPS
    x, y = torch.cat([x[near], x[far]]), torch.cat([y[near], y[far]])
    n_near, n_far = int(near.sum()), int(far.sum())
    assert n_near > 0 and n_far > 0
    counter = RowCounter(model)
    steps, n_binary = 20, 10
    r = bpgd(counter, x, y, eps=EPS, steps=steps, n_binary=n_binary, random_start=False)
    assert int(r.success.sum()) == n_near
    b = n_near + n_far
    # clean check + start point + step 1 for everyone, then only the far samples; the
    # bisection classifies 3 points per crossed sample for every 2 of its n_binary halvings
    bisection = (3 * (n_binary // 2) + n_binary % 2) * n_near
    expected = b + b + b + (steps - 1) * n_far + bisection
    assert counter.rows == expected


def test_pgd_early_stop_keeps_first_adversarial_iterate():
    model, x, y, margin = linear_problem(norm="l2", eps=EPS, n=2000)
    counter = RowCounter(model)
    r = pgd(counter, x, y, eps=EPS, early_stop=True, random_start=False)
    # stopped at the first misclassified iterate: no further than one step past the margin
    moved = lp.sample_norm(r.x - x, "l2")[r.success]
    assert (moved <= margin[r.success] + 4 * EPS / 20 + 1e-6).all()
    assert counter.rows < (20 + 1) * len(y)


@pytest.mark.parametrize("attack", [pgd, bpgd])
def test_eps_zero_changes_nothing(attack):
    model, x, y, _ = linear_problem(norm="l2", eps=EPS)
    r = attack(model, x, y, eps=0.0)
    assert torch.equal(r.x, x)
    assert not r.success.any()


@pytest.mark.parametrize("attack", [pgd, bpgd])
@pytest.mark.parametrize("norm", NORMS)
def test_per_sample_eps_equals_sample_by_sample(attack, norm):
    model, x, y, margin = linear_problem(norm=norm, eps=EPS, n=40)
    eps = torch.linspace(0.0, 0.2, len(y))
    r = attack(model, x, y, eps=eps, norm=norm, random_start=False)
    for i in range(len(y)):
        ri = attack(model, x[i : i + 1], y[i : i + 1], eps=float(eps[i]), norm=norm,
                    random_start=False)
        # BPGD's bisection may take the other branch at a point within float rounding of
        # the boundary, so it agrees up to the final bracket's width.
        assert torch.allclose(r.x[i], ri.x[0], atol=1e-6 if attack is pgd else 5e-4)
        assert bool(r.success[i]) == bool(ri.success[0])
    assert torch.equal(r.success, margin < eps)


@pytest.mark.parametrize("attack", [pgd, bpgd])
def test_model_mode_and_parameter_grads_untouched(attack):
    model, x, y, _ = linear_problem(norm="l2", eps=EPS)
    net = torch.nn.Sequential(torch.nn.Dropout(0.5), model)
    net.train()
    net[1].eval()  # a sub-module deliberately frozen by the user
    sentinel = torch.full_like(model.linear.weight, 7.0)
    model.linear.weight.grad = sentinel.clone()
    attack(net, x, y, eps=EPS)
    assert net.training and net[0].training and not net[1].training
    assert torch.equal(model.linear.weight.grad, sentinel)
    assert model.linear.bias.grad is None
    assert not x.requires_grad


def test_attacks_run_in_eval_mode():
    model, x, y, margin = linear_problem(norm="l2", eps=EPS)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, inp):
            seen.append(self.training)
            return inp

    net = torch.nn.Sequential(Probe(), model).train()
    bpgd(net, x, y, eps=EPS)
    pgd(net, x, y, eps=EPS)
    assert seen and not any(seen)


def test_bounds_are_respected_near_the_edges():
    torch.manual_seed(1)
    w = torch.randn(10)
    model = BinaryLinear(w, 0.0)
    x = torch.rand(300, 10)  # many samples touch the bounds
    y = (model.f(x) > 0).long().detach()
    for norm in ("l2", "linf"):
        for attack in (pgd, bpgd):
            r = attack(model, x, y, eps=0.8, norm=norm, bounds=(0.0, 1.0))
            assert r.x.min() >= 0 and r.x.max() <= 1
            assert (lp.sample_norm(r.x - x, norm) <= 0.8 * (1 + 1e-5)).all()


def test_unbounded_data_is_not_clipped():
    model = BinaryLinear(torch.tensor([1.0, 0.0]), 0.0)
    x = torch.tensor([[5.0, -3.0], [-2.0, 7.0]])
    y = torch.tensor([1, 0])
    r = pgd(model, x, y, eps=10.0, bounds=None, random_start=False)
    assert r.success.all()
    assert torch.allclose(lp.sample_norm(r.x - x, "l2"), torch.full((2,), 10.0), atol=1e-5)


def test_correct_steps_count_the_iterates_before_crossing():
    # Without random start, iterate j lies j * step along the shortest path to the
    # boundary, so exactly ceil(margin / step) of the `steps` iterates are still correct
    # when the margin is below eps, and all of them when it is above.
    model, x, y, margin = linear_problem(norm="l2", eps=EPS, n=600)
    steps, step = 20, 4.0 * EPS / 20
    ratio = margin / step
    clear = (ratio - ratio.round()).abs() > 1e-3  # avoid margins on a step boundary
    x, y, margin = x[clear], y[clear], margin[clear]
    r = pgd(model, x, y, eps=EPS, steps=steps, random_start=False)
    expected = torch.where(margin < EPS, torch.ceil(margin / step), steps).long()
    assert torch.equal(r.correct_steps, expected)


def test_fat_budget_tau_attacks_tau_more_steps_after_the_first_crossing():
    model, x, y, margin = linear_problem(norm="l2", eps=EPS, n=600)
    step = 4.0 * EPS / 20
    ratio = margin / step
    clear = ((ratio - ratio.round()).abs() > 1e-3) & (margin < EPS)
    x, y, margin = x[clear], y[clear], margin[clear]
    for tau in (0, 2):
        r = pgd(model, x, y, eps=EPS, random_start=False, early_stop=True, tau=tau)
        assert r.success.all()
        moved = lp.sample_norm(r.x - x, "l2")
        expected = torch.clamp((torch.ceil(margin / step) + tau) * step, max=EPS)
        assert torch.allclose(moved, expected, atol=1e-5)
    with pytest.raises(ValueError, match="needs early_stop=True"):
        pgd(model, x, y, eps=EPS, tau=1)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        pgd(model, x, y, eps=EPS, early_stop=True, tau=-1)
