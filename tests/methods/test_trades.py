"""TRADES: the KL attack ascends the divergence inside the ball, and the loss by hand."""

import pytest
import torch
import torch.nn.functional as F

from ima import lp
from ima.attacks import kl_attack, kl_divergence
from ima.data import build_dataset
from ima.methods import build_method
from ima.models import digits_cnn

BOUNDS = (0.0, 1.0)


@pytest.fixture(scope="module")
def problem():
    """A small digits CNN trained a little on 64 real images in [0, 1]."""
    torch.manual_seed(0)
    data = build_dataset("digits", "train")
    x, y = data.x[:64], data.y[:64]
    model = digits_cnn(width=8)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, x, y


@pytest.mark.parametrize("norm, eps", [("l2", 1.0), ("linf", 0.1)])
def test_kl_attack_raises_the_divergence_and_stays_in_the_ball(problem, norm, eps):
    model, x, y = problem
    torch.manual_seed(1)
    r = kl_attack(model, x, y, eps=eps, norm=norm, steps=20, bounds=BOUNDS)
    assert (lp.sample_norm(r.x - x, norm) <= eps * (1 + 1e-5)).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    with torch.no_grad():
        clean = model(x)
        attacked = kl_divergence(clean, model(r.x))
        # the same budget spent at random: a uniform point of the ball
        noisy = kl_divergence(clean, model(lp.clip_to_bounds(x + lp.sample_ball(x, eps, norm),
                                                              BOUNDS)))
        assert torch.equal(r.success, model(r.x).argmax(1) != y)
    assert (attacked > noisy).float().mean() > 0.95
    assert attacked.mean() > 10 * noisy.mean()


def test_trades_loss_is_cross_entropy_plus_beta_kl(problem):
    model, x, y = problem
    model.train()
    method = build_method("trades", num_samples=len(x), epochs=3, bounds=BOUNDS, eps=1.0,
                          beta=6.0, steps=10)
    torch.manual_seed(2)
    out = method(model, x, y, torch.arange(len(x)), 0)
    torch.manual_seed(2)  # the same start noise: the same x'
    x_adv = kl_attack(model, x, y, eps=1.0, steps=10, bounds=BOUNDS).x
    logits = model(x)
    # the authors' form: KLDivLoss(sum) of log q against p, divided by the batch size
    kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="sum") / len(x)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, y) + 6.0 * kl)
    assert out.logs["kl"] == pytest.approx(float(kl.detach()), rel=1e-5)
    assert kl > 0
