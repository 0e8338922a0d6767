"""IMA on a linearly separable 2-D problem with a known gap (section 2.3's equilibrium).

Class 0 fills x1 in [-2, -0.5], class 1 fills x1 in [0.5, 2], x2 in [-1, 1]: the gap is
1.0, its middle line is x1 = 0 and the nearest samples lie 0.5 from it. A linear model
starts with a separating but off-centre boundary (x1 = 0.25). For a linear model the
exact L2 distance of every sample to the boundary is known at every step, so each margin
update of Algorithm 2 can be checked against the truth while the real method trains.
"""

import torch

from ima.methods import build_method

from analytic import gap_problem, linear_geometry

N = 150  # per class
EPOCHS = 40
DELTA = 0.05
EPS_MAX = 2.0
BATCH = 50


def test_ima_margins_grow_then_settle_at_half_the_gap():
    x, y = gap_problem(N)
    nearest = (x[:, 0].abs() < 0.55)  # the samples within 0.05 of the gap's edges
    assert int(nearest.sum()) >= 4
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():  # f = 2 x1 - 0.5: boundary at x1 = 0.25, all samples correct
        model.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        model.bias.copy_(torch.tensor([0.25, -0.25]))
    method = build_method("ima", num_samples=len(x), epochs=EPOCHS, bounds=None,
                          eps_max=EPS_MAX, delta_eps=DELTA)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    order_rng = torch.Generator().manual_seed(1)

    expected_growth = torch.full((len(x),), DELTA)  # float32, like the store
    for epoch in range(EPOCHS):
        before = method.margins.margins.clone()
        # the exact distance and correctness of each sample when its batch was used
        distance = torch.empty(len(x))
        correct = torch.empty(len(x), dtype=torch.bool)
        order = torch.randperm(len(x), generator=order_rng)
        for start in range(0, len(x), BATCH):
            i = order[start : start + BATCH]
            f, d = linear_geometry(model, x[i])
            distance[i], correct[i] = d, (f > 0) == (y[i] == 1)
            out = method(model, x[i], y[i], i, epoch)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        method.end_epoch(epoch)
        after = method.margins.margins

        # Algorithm 2 against the truth. A ball that does not reach the boundary cannot
        # hold a boundary point: the margin grows by exactly delta_eps (then the clip).
        # A ball that clearly crosses it holds one at distance d' with d <= d' <= E:
        # the margin shrinks into [(d + E) / 2, E]. Misclassified samples keep theirs.
        clear = correct & (distance > before * (1 + 1e-4))
        grown = torch.clamp(before + DELTA, max=EPS_MAX)
        assert torch.equal(after[clear], grown[clear]), f"epoch {epoch}"
        crossing = correct & (distance < before * 0.98)
        assert (after[crossing] >= (distance[crossing] + before[crossing]) / 2 - 1e-5).all()
        assert (after[crossing] <= before[crossing] + 1e-6).all()
        assert torch.equal(after[~correct], before[~correct])

        if epoch < 6:
            # Early on, every ball (radius <= 0.35) is clear of the boundary, so every
            # margin, the nearest samples' included, is exactly (epoch + 2) delta_eps.
            expected_growth = expected_growth + DELTA
            assert torch.equal(after, expected_growth), f"epoch {epoch}"

    f, distance = linear_geometry(model, x)
    assert ((f > 0) == (y == 1)).all()
    margins = method.margins.margins
    # The nearest samples' margins settle near half the gap, far below eps_max; every
    # estimate is close to the sample's true distance to the learned boundary (capped at
    # eps_max), within the few delta_eps by which Algorithm 2 oscillates around it.
    assert ((margins[nearest] > 0.4) & (margins[nearest] < 0.65)).all(), margins[nearest]
    assert ((margins - distance.clamp(max=EPS_MAX)).abs() < 3 * DELTA).all()
    # The learned boundary lies in the middle of the gap: where it crosses x2 = -1, 0
    # and 1 it is within 0.1 (a fifth of the half-gap) of x1 = 0, so no training
    # sample is nearer to it than 0.4.
    with torch.no_grad():
        w = model.weight[1] - model.weight[0]
        b = model.bias[1] - model.bias[0]
        for x2 in (-1.0, 0.0, 1.0):
            x1_star = float(-(b + w[1] * x2) / w[0])
            assert abs(x1_star) < 0.1, (x2, x1_star)
    assert distance.min() > 0.4
