"""AutoAttack through the Adversarial Robustness Toolbox (optional extra ima[autoattack])."""

import sys

import pytest
import torch

from ima import lp
from ima.attacks import art_autoattack

from analytic import linear_problem

EPS = 0.1


def test_missing_library_names_the_extra(monkeypatch):
    model, x, y, _ = linear_problem(d=10, n=10, eps=EPS)
    monkeypatch.setitem(sys.modules, "art", None)
    monkeypatch.setitem(sys.modules, "art.attacks.evasion", None)
    with pytest.raises(ImportError, match=r"pip install 'ima\[autoattack\]'"):
        art_autoattack(model, x, y, eps=EPS)


@pytest.mark.parametrize("norm, eps", [("l2", EPS), ("linf", 0.03)])
def test_autoattack_finds_what_the_exact_margins_allow(norm, eps):
    pytest.importorskip("art", reason="needs the autoattack extra (adversarial-robustness-toolbox)")
    torch.manual_seed(0)
    model, x, y, margin = linear_problem(d=10, n=60, eps=eps, norm=norm, seed=3)
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    r = art_autoattack(model, x, y, eps=eps, norm=norm, restarts=1)
    assert torch.equal(r.success, margin < eps)
    assert torch.equal(model(r.x).argmax(1) != y, r.success)
    assert (lp.sample_norm(r.x - x, norm) <= eps * (1 + 1e-5)).all()
    assert r.x.min() >= 0 and r.x.max() <= 1
    assert model.training, "mode restored"
    assert all((p.grad == 3.0).all() and p.requires_grad for p in model.parameters())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # ART's Square divides 0 by 0 at times
def test_autoattack_on_images_runs_square_too():
    pytest.importorskip("art", reason="needs the autoattack extra (adversarial-robustness-toolbox)")
    torch.manual_seed(0)
    model, x, y, margin = linear_problem(d=36, n=30, eps=EPS, seed=4)
    images = x.reshape(-1, 1, 6, 6)

    class OnImages(torch.nn.Module):
        def forward(self, z):
            return model(z.flatten(1))

    r = art_autoattack(OnImages(), images, y, eps=EPS, restarts=1, square_queries=20)
    assert torch.equal(r.success, margin < EPS)


def test_bad_autoattack_input():
    model, x, y, _ = linear_problem(d=10, n=10, eps=EPS)
    with pytest.raises(ValueError, match="one eps for the whole batch"):
        art_autoattack(model, x, y, eps=torch.linspace(0.1, 0.2, len(y)))
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        art_autoattack(model, x, y, eps=EPS, restarts=0)
