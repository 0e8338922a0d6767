"""DDN adversarial training's loss on a linear model whose geometry is known."""

import pytest
import torch
import torch.nn.functional as F

from ima import ddn
from ima.methods import build_method

from analytic import linear_problem

EPS_MAX = 0.1


def _problem():
    """Linear model, samples with exact margins (none within 2 % of eps_max), labels
    flipped on 10 samples (misclassified from the start)."""
    model, x, y, margin = linear_problem(d=20, n=300, eps=EPS_MAX, seed=3)
    wrong = torch.zeros(len(y), dtype=torch.bool)
    wrong[torch.arange(0, 100, 10)] = True
    return model, x, torch.where(wrong, 1 - y, y), margin, wrong


def _method(n, **kwargs):
    return build_method("ddn", num_samples=n, epochs=3, bounds=(0.0, 1.0), eps_max=EPS_MAX,
                        **kwargs)


def test_loss_is_mean_cross_entropy_at_the_capped_minimal_adversarial_points():
    model, x, y, margin, wrong = _problem()
    n = len(x)
    out = _method(n)(model, x, y, torch.arange(n), 0)

    # By the geometry alone. Correct samples with margin < eps_max: DDN's point lies just
    # past the boundary (within 2 % of the margin), where both logits are about equal;
    # correct samples beyond: the point is eps_max along the normal, so the score drops
    # by eps_max * ||w||; misclassified samples: the clean input. No clean term.
    f = model.f(x).detach()
    sign = 2 * y.float() - 1
    near = ~wrong & (margin < EPS_MAX)
    assert 0 < near.sum() < (~wrong).sum()
    moved = sign * f - EPS_MAX * model.w.norm()
    per_sample = torch.where(near, torch.log(torch.tensor(2.0)), F.softplus(-moved))
    per_sample = torch.where(wrong, F.softplus(-sign * f), per_sample)
    torch.testing.assert_close(out.loss, per_sample.mean(), rtol=2e-3, atol=0)
    assert out.logs["adv_fooled"] == pytest.approx(float((near | wrong).float().mean()))
    assert out.logs["clean_correct"] == pytest.approx(1 - float(wrong.float().mean()))

    # By hand from the attack (deterministic): the same value and the same gradients.
    adv = ddn(model, x, y, max_norm=EPS_MAX)
    expected = F.cross_entropy(model(adv.x), y)
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=0)
    params = list(model.parameters())
    for g, e in zip(torch.autograd.grad(out.loss, params), torch.autograd.grad(expected, params),
                    strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def test_a_tiny_cap_gives_the_clean_loss_and_bad_values_are_refused():
    model, x, y, _, _ = _problem()
    method = build_method("ddn", num_samples=len(x), epochs=3, bounds=(0.0, 1.0), eps_max=1e-6,
                          steps=20)
    out = method(model, x, y, torch.arange(len(x)), 0)
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y), rtol=1e-4, atol=0)
    for key, value in [("eps_max", 0.0), ("gamma", 1.0), ("steps", 0), ("init_norm", -1.0)]:
        with pytest.raises(ValueError, match=key):
            build_method("ddn", num_samples=10, epochs=3, **{"eps_max": EPS_MAX, key: value})
