"""MMA training against models whose geometry is known: its loss, its margin estimates
(AN-PGD) and where its margins settle on a separable problem."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from ima.margins import DirectMarginStore
from ima.methods import build_method

from analytic import gap_problem, linear_geometry, linear_problem

EPS_MAX = 0.15


def _linear(flip=True):
    """Linear model and samples whose margins avoid eps_max by 15 % either way (AN-PGD's
    ray may leave the exact normal by a few degrees after PGD's random start), with
    labels flipped on 10 samples so that some are misclassified."""
    model, x, y, margin = linear_problem(d=20, n=300, eps=EPS_MAX, band=0.15, seed=3)
    flipped = torch.zeros(len(y), dtype=torch.bool)
    if flip:
        flipped[torch.arange(0, 100, 10)] = True
        y = torch.where(flipped, 1 - y, y)
    return model, x, y, margin, flipped


@pytest.mark.parametrize("coeff", [1 / 3, 0.0])
def test_loss_and_margin_estimates_match_the_geometry(coeff):
    model, x, y, margin, wrong = _linear()
    n = len(x)
    method = build_method("mma", num_samples=n, epochs=10, bounds=(0.0, 1.0),
                          eps_max=EPS_MAX, clean_loss_coeff=coeff)
    torch.manual_seed(0)
    out = method(model, x, y, torch.arange(n), 0)

    # Correct samples whose margin is below eps_max are trained on a boundary point, where
    # both logits are equal (cross-entropy log 2); misclassified ones on the clean input.
    hit = ~wrong & (margin < EPS_MAX)
    assert 0 < hit.sum() < (~wrong).sum()
    clean = F.cross_entropy(model(x), y, reduction="none")
    expected = ((1 - coeff) * (clean[wrong].sum() + int(hit.sum()) * math.log(2)) / n
                + coeff * clean.mean())
    torch.testing.assert_close(out.loss, expected, rtol=1e-3, atol=0)
    assert out.logs["boundary_found"] == pytest.approx(float(hit.float().mean()))
    assert out.logs["clean_correct"] == pytest.approx(1 - float(wrong.float().mean()))

    # Margins replace the old ones at the end of the epoch: the distance to the boundary
    # along AN-PGD's ray (never below the exact margin, a few % above it at most), eps_max
    # where the boundary is farther than eps_max, 0 for misclassified samples.
    assert torch.equal(method.margins.margins, torch.full((n,), EPS_MAX / 2))  # min_eps
    stats = method.end_epoch(0)
    new = method.margins.margins
    assert (new[wrong] == 0).all()
    assert (new[hit] >= margin[hit] * (1 - 1e-4)).all()
    assert (new[hit] <= margin[hit] * 1.05 + 1e-3).all()
    assert (new[~wrong & ~hit] == EPS_MAX).all()
    assert stats["margin_max"] == pytest.approx(EPS_MAX)
    assert stats["margin_min"] == 0.0


def test_clean_loss_coeff_one_is_plain_cross_entropy_and_bad_values_are_refused():
    model, x, y, _, _ = _linear()
    method = build_method("mma", num_samples=len(x), epochs=3, bounds=(0.0, 1.0),
                          eps_max=EPS_MAX, clean_loss_coeff=1.0)
    out = method(model, x, y, torch.arange(len(x)), 0)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y))
    for key, value in [("clean_loss_coeff", 1.5), ("min_eps", 2 * EPS_MAX), ("min_eps", 0.0)]:
        with pytest.raises(ValueError, match=key):
            build_method("mma", num_samples=10, epochs=3, eps_max=EPS_MAX, **{key: value})
    derived = build_method("mma", num_samples=10, epochs=3, eps_max=EPS_MAX)
    assert derived.config.min_eps == EPS_MAX / 2


@pytest.mark.parametrize("norm, eps_max, expected", [
    ("l2", 5.0, 0.5), ("l2", 30.0, 0.5), ("l2", 1.0, 0.5), ("l2", 0.3, 0.15),
    ("linf", 0.3, 0.005), ("linf", 0.004, 0.002),
])
def test_min_eps_is_the_authors_fixed_radius_whatever_eps_max(norm, eps_max, expected):
    # BorealisAI/mma_training config.py fixes attack_mineps per norm (L2 0.5 for MNIST and
    # CIFAR-10 with any hinge_maxeps, Linf CIFAR-10 0.005); eps_max / 2 caps it for data of
    # a smaller scale.
    method = build_method("mma", num_samples=4, epochs=3, eps_max=eps_max, norm=norm)
    assert method.config.min_eps == pytest.approx(expected)
    assert torch.equal(method.margins.margins, torch.full((4,), method.config.min_eps))


# The separable 2-D problem of test_ima_separable.py: class 0 fills x1 in [-2, -0.5],
# class 1 fills x1 in [0.5, 2]; the gap's middle line is x1 = 0, half the gap is 0.5.
N = 150
EPOCHS = 10
GAP_EPS_MAX = 2.0
BATCH = 50


def test_mma_margins_grow_and_stop_at_the_boundary_not_at_eps_max():
    x, y = gap_problem(N)
    nearest = x[:, 0].abs() < 0.55
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():  # boundary at x1 = 0.25: off-centre, every sample correct
        model.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.25, -0.25]))
    method = build_method("mma", num_samples=len(x), epochs=EPOCHS, bounds=None,
                          eps_max=GAP_EPS_MAX)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    order_rng = torch.Generator().manual_seed(1)
    start_distance = linear_geometry(model, x)[1]
    for epoch in range(EPOCHS):
        distance = torch.empty(len(x))
        order = torch.randperm(len(x), generator=order_rng)
        for start in range(0, len(x), BATCH):
            i = order[start : start + BATCH]
            distance[i] = linear_geometry(model, x[i])[1]
            out = method(model, x[i], y[i], i, epoch)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        method.end_epoch(epoch)
        margins = method.margins.margins
        # every estimate is the distance (at the time of its batch) to the boundary along
        # AN-PGD's ray: in 2-D its direction is close to the normal
        assert (margins >= distance.clamp(max=GAP_EPS_MAX) - 1e-3).all(), epoch
        assert (margins <= distance.clamp(max=GAP_EPS_MAX) * 1.1 + 1e-2).all(), epoch

    # The class-1 samples nearest the start boundary (0.25 to 0.3 from it) grew to about
    # half the gap; the margins of the nearest samples stop there, far below eps_max.
    near1 = nearest & (y == 1)
    assert near1.sum() >= 2 and (start_distance[near1] < 0.31).all()
    margins = method.margins.margins
    assert (margins[near1] > 0.4).all()
    assert ((margins[nearest] > 0.4) & (margins[nearest] < 0.65)).all(), margins[nearest]
    assert margins[nearest].max() < GAP_EPS_MAX / 2
    assert linear_geometry(model, x)[1].min() > 0.4


def test_direct_store_rule_and_state_round_trip():
    store = DirectMarginStore(6, eps_max=1.0, init=0.5)
    assert torch.equal(store.margins, torch.full((6,), 0.5))
    store.record(torch.tensor([0, 1, 2, 3]), crossed=torch.tensor([True, True, False, True]),
                 distance=torch.tensor([0.2, 0.7, 5.0, 0.0]))
    # pending until the end of the epoch
    assert torch.equal(store.margins, torch.full((6,), 0.5))

    buffer = io.BytesIO()
    torch.save(store.state_dict(), buffer)
    buffer.seek(0)
    fresh = DirectMarginStore(6, eps_max=1.0, init=0.5)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))

    for s in (store, fresh):
        stats = s.end_epoch()
        torch.testing.assert_close(s.margins, torch.tensor([0.2, 0.7, 1.0, 0.0, 0.5, 0.5]))
        assert stats["margin_expanded"] == pytest.approx(2 / 6)  # 0.5 -> 0.7 and -> 1.0
        assert stats["margin_shrunk"] == pytest.approx(2 / 6)
    assert store.stats() == fresh.stats()
    with pytest.raises(ValueError, match="distance must be finite"):
        store.record(torch.tensor([0]), crossed=torch.tensor([True]),
                     distance=torch.tensor([float("nan")]))
