"""Our AutoAttack (the cascade of APGD-CE, APGD-T, FAB-T and Square) against the exact
margins of a multi-class linear model on 8x8 images, its bookkeeping, and against
ART's and torchattacks' AutoAttack on a trained digits CNN."""

import pytest
import torch

from ima import autoattack
from ima.attacks.autoattack import RAND_EOT, components_of
from ima.tasks import ClassificationTask

from analytic import RowCounter, image_linear_problem

K = 4
BAND = (0.98, 1.02)


def _problem(norm, n=120, seed=0):
    return image_linear_problem(n, seed, norm, K)


@pytest.mark.parametrize(("norm", "eps"), [("l2", 0.15), ("linf", 0.02)])
def test_autoattack_fools_exactly_the_samples_whose_margin_is_below_eps(norm, eps):
    model, x, y, margin = _problem(norm)
    torch.manual_seed(0)
    r = autoattack(model, x, y, eps=eps, norm=norm, square_queries=300)
    keep = (margin < BAND[0] * eps) | (margin > BAND[1] * eps)
    truth = margin < eps
    assert 10 < truth.sum() < len(y) - 10
    assert torch.equal(r.success[keep], truth[keep])
    assert r.components == ("apgd-ce", "apgd-t", "fab-t", "square") and r.skipped == {}
    fooled = r.success.nonzero().squeeze(1)
    assert (model(r.x[fooled]).argmax(1) != y[fooled]).all()
    assert torch.equal(r.x[~r.success], x[~r.success])  # robust: the clean input
    delta = (r.x - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all() and r.x.min() >= 0 and r.x.max() <= 1
    assert ((r.fooled_by >= 0) == r.success).all()


def test_each_component_runs_only_on_the_samples_still_robust():
    model, x, y, margin = _problem("l2")
    counter = RowCounter(model)
    torch.manual_seed(0)
    alone = autoattack(counter, x, y, eps=5.0, norm="l2", attacks=["apgd-ce"])
    rows_alone = counter.rows
    assert alone.success.all()  # a ball this large fools every sample
    counter.rows = 0
    torch.manual_seed(0)
    both = autoattack(counter, x, y, eps=5.0, norm="l2", attacks=["apgd-ce", "fab-t"])
    assert counter.rows == rows_alone  # nothing left for FAB-T
    assert list(both.seconds) == ["apgd-ce"] and (both.fooled_by == 0).all()
    # a small ball: the second component sees only the survivors of the first
    counter.rows = 0
    torch.manual_seed(0)
    r = autoattack(counter, x, y, eps=0.15, norm="l2", attacks=["apgd-t", "apgd-ce"])
    assert set(r.fooled_by.tolist()) <= {-1, 0, 1}
    assert int((r.fooled_by == 0).sum()) == int(((margin < 0.15) & (r.fooled_by >= 0)).sum())


def test_clean_errors_are_not_attacked_and_count_as_fooled():
    model, x, y, _ = _problem("linf")
    wrong = y.clone()
    wrong[:5] = (y[:5] + 1) % K
    r = autoattack(model, x, wrong, eps=0.0, norm="linf", square_queries=10)
    assert r.success[:5].all() and not r.clean_correct[:5].any()
    assert (r.fooled_by[:5] == -1).all() and torch.equal(r.x[:5], x[:5])
    assert not r.success[5:].any()  # eps 0: nothing else falls


def test_rand_version_averages_each_iterate_over_twenty_passes():
    model, x, y, margin = _problem("l2", n=40)
    counter = RowCounter(model)
    assert components_of("rand", ClassificationTask(), x.shape) == (("apgd-ce", "apgd-dlr"), {})
    torch.manual_seed(0)
    r = autoattack(counter, x, y, eps=0.15, norm="l2", version="rand", steps=10)
    rand_rows = counter.rows
    counter.rows = 0
    torch.manual_seed(0)
    autoattack(counter, x, y, eps=0.15, norm="l2", version="rand", steps=10, eot=1)
    assert rand_rows > 0.8 * RAND_EOT * counter.rows  # each iterate: 20 passes, not 1
    keep = (margin < BAND[0] * 0.15) | (margin > BAND[1] * 0.15)
    assert torch.equal(r.success[keep], (margin < 0.15)[keep])
    assert r.components == ("apgd-ce", "apgd-dlr")


def test_per_sample_eps_and_bad_inputs():
    model, x, y, margin = _problem("l2", n=40)
    eps = torch.where(torch.arange(40) < 20, 0.0, 5.0)
    r = autoattack(model, x, y, eps=eps, norm="l2", attacks=["apgd-ce"])
    assert not r.success[:20].any() and r.success[20:].all()
    for kw, match in (({"version": "fast"}, "version"), ({"attacks": ["apgd-ce"] * 2}, "twice"),
                      ({"attacks": ["pgd"]}, "attack"), ({"attacks": []}, "non-empty"),
                      ({"targets": 0}, "targets"), ({"eot": 0}, "eot"),
                      ({"square_queries": 0}, "square_queries")):
        with pytest.raises(ValueError, match=match):
            autoattack(model, x, y, eps=0.1, **kw)
    with pytest.raises(TypeError, match="cascade"):
        autoattack(model, x, y, eps=0.1, cascade=1)
    flat = torch.nn.Sequential(torch.nn.Linear(64, K))
    with pytest.raises(ValueError, match="square needs images"):
        autoattack(flat, x.flatten(1), y, eps=0.1, attacks=["square"])
    plain = autoattack(flat, x.flatten(1), y, eps=0.1, attacks=None, square_queries=10)
    assert "square" in plain.skipped and plain.components == ("apgd-ce", "apgd-t", "fab-t")


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.5)])
def test_as_strong_as_art_and_torchattacks_autoattack(digits_model, norm, eps):
    """The issue's peer check on a trained digits CNN (first 100 correctly classified test
    images): our robust accuracy is at most the lower of ART's and torchattacks'
    AutoAttack (its APGD, APGD-T and FAB set to the standard's 100 iterations) plus half a
    point."""
    torchattacks = pytest.importorskip("torchattacks")
    pytest.importorskip("art")
    from ima.attacks import art_autoattack

    model, x, y = digits_model
    x, y = x[:100], y[:100]
    torch.manual_seed(0)
    ours = float((~autoattack(model, x, y, eps=eps, norm=norm).success).float().mean())
    art = art_autoattack(model, x, y, eps=eps, norm=norm, restarts=1)
    art_acc = float((~art.success).float().mean())
    peer = torchattacks.AutoAttack(model, norm="L2" if norm == "l2" else "Linf", eps=eps,
                                   version="standard", n_classes=10, seed=0)
    for part in peer._autoattack.attacks:  # torchattacks' default is 10 iterations
        if not isinstance(part, torchattacks.Square):
            part.steps = 100  # the standard version's
    with torch.no_grad():
        ta_acc = float((model(peer(x, y)).argmax(1) == y).float().mean())
    assert 0.05 < ta_acc < 0.95
    assert ours <= min(art_acc, ta_acc) + 0.005
