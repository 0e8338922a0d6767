"""Training passes of IMA, MMA and DDN on a model with batch norm: the boundary points go
through the model in a batch of all B rows, and a look at the clean batch leaves the
running statistics alone."""

import copy

import pytest
import torch
import torch.nn.functional as F

from ima import lp
from ima.methods import build_method
from ima.models import wrn_28_4

from analytic import BinaryLinear

EPS = 0.1
MOMENTUM = 0.1  # BatchNorm1d's default


def _bn_problem():
    """``BatchNorm1d`` then a linear classifier ``f = x_0 - 0.5`` on 8 samples; in eval mode
    (fresh running statistics) the norm is the identity up to 5e-6, so each sample's margin
    is ``|x_0 - 0.5|``: 0.03 for sample 0, at least 0.2 for the others."""
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(8, 4, generator=g)
    x[:, 0] = torch.tensor([0.53, 0.2, 0.25, 0.3, 0.7, 0.75, 0.8, 0.85])
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(4), BinaryLinear(torch.eye(4)[0], -0.5))
    y = (x[:, 0] > 0.5).long()
    return model, x, y


def _train_batches(model):
    """The inputs of every training-mode pass through the model's batch norm."""
    seen = []
    bn = model[0]
    bn.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone())
                             if m.training else None)
    return seen


def _assert_running_stats(bn, batches):
    """Running statistics of a fresh BatchNorm1d after exactly these training batches."""
    mean, var = torch.zeros(bn.num_features), torch.ones(bn.num_features)
    for b in batches:
        mean = (1 - MOMENTUM) * mean + MOMENTUM * b.mean(0)
        var = (1 - MOMENTUM) * var + MOMENTUM * b.var(0, unbiased=True)
    assert int(bn.num_batches_tracked) == len(batches)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)


def _one_boundary_row(x, batch, margin, reach):
    """``batch`` is ``x`` with row 0 moved onto the far side of the boundary, by at least
    its margin and at most ``reach``; returns that row."""
    assert batch.shape == x.shape
    torch.testing.assert_close(batch[1:], x[1:], rtol=0, atol=0)
    distance = float(lp.sample_norm(batch[:1] - x[:1], "l2"))
    assert margin * (1 - 1e-4) <= distance <= reach
    assert batch[0, 0] <= 0.5  # class 0 side (BN's eval scale moves it by 5e-6 at most)
    return batch[0]


@pytest.mark.parametrize("name", ["ima", "mma"])
def test_one_crossing_sample_trains_in_a_batch_of_all_rows(name):
    model, x, y = _bn_problem()
    n = len(x)
    before = copy.deepcopy(model)
    seen = _train_batches(model)
    if name == "ima":
        method = build_method("ima", num_samples=n, epochs=10, bounds=(0.0, 1.0),
                              eps_max=1.0, delta_eps=EPS)
    else:  # min_eps 0.075 above the margin 0.03; search reach 1.05 * 0.15 below 0.2
        method = build_method("mma", num_samples=n, epochs=10, bounds=(0.0, 1.0),
                              eps_max=0.15)
    torch.manual_seed(0)
    # one boundary row: a pass over just the crossed samples would stop BatchNorm1d
    # ("Expected more than 1 value per channel when training")
    out = method(model, x, y, torch.arange(n), 0)
    assert out.logs["boundary_found"] == pytest.approx(1 / n)

    # Two training passes, each of all B rows: the clean batch, then the clean batch with
    # sample 0 replaced by its boundary point; running statistics from exactly those.
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], x, rtol=0, atol=0)
    _one_boundary_row(x, seen[1], 0.03, EPS if name == "ima" else 0.075)
    _assert_running_stats(model[0], seen)

    # The documented loss, each term from the pass that holds its row.
    before.train()
    clean = F.cross_entropy(before(x), y, reduction="none")
    at_boundary = F.cross_entropy(before(seen[1]), y, reduction="none")[0]
    if name == "ima":  # Algorithm 1, beta 0.5, every sample correct
        expected = (0.5 * clean.sum() + 0.5 * at_boundary) / n
    else:  # MMA, c = 1/3, every sample correct
        c = 1 / 3
        expected = (1 - c) * at_boundary / n + c * clean.mean()
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.logits, before(x).detach())


def test_ddn_clean_output_leaves_no_trace_in_running_statistics():
    model, x, y = _bn_problem()
    n = len(x)
    before = copy.deepcopy(model)
    seen = _train_batches(model)
    method = build_method("ddn", num_samples=n, epochs=3, bounds=(0.0, 1.0), eps_max=EPS,
                          steps=20)
    out = method(model, x, y, torch.arange(n), 0)

    # One training pass (the adversarial batch) updates the statistics; the clean output
    # returned for training accuracy is the training-mode output, and leaves none.
    _assert_running_stats(model[0], seen[:1])
    before.train()
    adv = seen[0]
    torch.testing.assert_close(out.loss, F.cross_entropy(before(adv), y))
    torch.testing.assert_close(out.logits, before(x).detach())
    assert not torch.equal(adv, x)


def test_ima_step_on_wide_resnet_28_4():
    """The paper's CIFAR-10 network (25 BatchNorm2d) through one cheap IMA step."""
    torch.manual_seed(0)
    model = wrn_28_4()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # both correct, so BPGD runs on both
    model.train()
    method = build_method("ima", num_samples=2, epochs=1, bounds=(0.0, 1.0), eps_max=8.0,
                          steps=2, n_binary=1)
    out = method(model, x, y, torch.arange(2), 0)
    out.loss.backward()
    assert out.logs["boundary_found"] > 0  # the batch with boundary points ran
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 10) and model.training
