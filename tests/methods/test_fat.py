"""FAT: early-stopped PGD on a linear model whose margins are known, and the tau schedule."""

import pytest
import torch
import torch.nn.functional as F

from ima import lp
from ima.methods import build_method

from analytic import linear_problem

EPS = 0.1


def _fat(n, **kwargs):
    return build_method("fat", num_samples=n, epochs=120, bounds=(0.0, 1.0), eps=EPS, **kwargs)


def test_tau_follows_the_self_adjusting_schedule():
    # The authors' 120 epochs: tau 0 up to epoch 50, 1 up to epoch 90, 2 after (1-based).
    method = _fat(10)
    assert method.config.tau_adjust_epochs == (50, 90)
    assert [method.tau_at(e) for e in range(120)] == [0] * 50 + [1] * 40 + [2] * 30
    # the same fractions of a shorter run, and a schedule given by hand
    short = build_method("fat", num_samples=10, epochs=30, bounds=None, eps=EPS)
    assert short.config.tau_adjust_epochs == (12, 22)
    fixed = _fat(10, tau=3, tau_adjust_epochs=[])
    assert {fixed.tau_at(e) for e in range(120)} == {3}
    with pytest.raises(ValueError, match="tau_adjust_epochs must be >= 1"):
        _fat(10, tau_adjust_epochs=[0, 5])
    with pytest.raises(ValueError, match="tau must be >= 0"):
        _fat(10, tau=-1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fat_trains_on_points_stopped_tau_steps_after_crossing(norm):
    # Without random start, iterate j lies j * step along the shortest path to the
    # boundary: the first misclassified one is iterate ceil(margin / step), FAT keeps
    # iterate ceil(margin / step) + tau, and never leaves the eps-ball.
    model, x, y, margin = linear_problem(norm=norm, eps=EPS, n=600)
    step = EPS / 4  # the default: 10 steps, alpha 2.5
    ratio = margin / step
    clear = (ratio - ratio.round()).abs() > 1e-3  # avoid margins on a step boundary
    x, y, margin = x[clear], y[clear], margin[clear]
    vulnerable = margin < EPS
    assert 0 < vulnerable.sum() < len(y)
    method = _fat(len(x), norm=norm, random_start=False)
    index = torch.arange(len(x))
    for epoch, tau in ((0, 0), (60, 1), (100, 2)):
        r = method.friendly(model, x, y, epoch)
        moved = lp.sample_norm(r.x - x, norm)
        expected = torch.clamp((torch.ceil(margin / step) + tau) * step, max=EPS)
        torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)
        assert torch.equal(r.success, vulnerable)
        # the loss is the mean cross-entropy of those points alone (no clean term)
        out = method(model, x, y, index, epoch)
        assert out.logs["tau"] == tau
        torch.testing.assert_close(out.loss, F.cross_entropy(model(r.x), y))
        with torch.no_grad():
            torch.testing.assert_close(out.logits, model(x))
