"""The working set's check interval and compaction threshold (CPU: every iteration, at
once; GPU: every 4 iterations, a quarter) change the cost only, never the results (up to
the last bit of float32: a matrix product over a different number of rows may round
differently)."""

import pytest
import torch

from ima import bpgd, pgd
from ima.attacks import working_set
from ima.attacks.divergence import kl_attack

from analytic import RowCounter, small_problem


@pytest.fixture
def problem():
    return small_problem()


def _runs(net, x, y):
    out = {}
    for name, call in {
        "pgd-stop": lambda: pgd(net, x, y, eps=0.3, early_stop=True),
        "pgd-tau": lambda: pgd(net, x, y, eps=0.3, early_stop=True, tau=2),
        "pgd-last": lambda: pgd(net, x, y, eps=0.3, loss="margin"),
        "bpgd": lambda: bpgd(net, x, y, eps=torch.linspace(0.05, 0.5, len(x))),
        "kl": lambda: kl_attack(net, x, y, eps=0.3, steps=5),
    }.items():
        torch.manual_seed(0)
        out[name] = call()
    return out


def _assert_same(eager, lazy, atol, max_flips=0):
    for name, a in eager.items():
        b = lazy[name]
        if isinstance(a, torch.Tensor):
            assert torch.allclose(a, b, rtol=0, atol=atol), name
            continue
        assert torch.allclose(a.x, b.x, rtol=0, atol=atol), name
        assert (a.success != b.success).sum() <= max_flips, name
        if a.correct_steps is not None and not max_flips:
            assert torch.equal(a.correct_steps, b.correct_steps), name


@pytest.mark.parametrize(("every", "fraction", "bucket"),
                         [(4, 0.25, 16), (3, 0.9, 1), (50, 0.0, 1), (1, 0.0, 8)])
def test_lazy_compaction_gives_the_results_of_eager_compaction(problem, monkeypatch, every,
                                                               fraction, bucket):
    net, x, y = problem
    eager = _runs(net, x, y)
    monkeypatch.setitem(working_set.CHECK_EVERY, "cpu", every)
    monkeypatch.setitem(working_set.COMPACT_FRACTION, "cpu", fraction)
    monkeypatch.setitem(working_set.BUCKET, "cpu", bucket)
    lazy = _runs(net, x, y)
    _assert_same(eager, lazy, atol=1e-6)
    assert 0.2 < float(eager["pgd-stop"].success.float().mean()) < 0.9  # a real mix


def test_lazy_compaction_still_drops_finished_samples_in_buckets(problem, monkeypatch):
    net, x, y = problem
    monkeypatch.setitem(working_set.CHECK_EVERY, "cpu", 4)
    monkeypatch.setitem(working_set.COMPACT_FRACTION, "cpu", 0.25)
    monkeypatch.setitem(working_set.BUCKET, "cpu", 16)
    sizes = []
    net_sizes = torch.nn.Sequential(net)
    net_sizes.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    counter = RowCounter(net_sizes)
    torch.manual_seed(0)
    r = pgd(counter, x, y, eps=0.3, early_stop=True, steps=20)
    assert 0.2 < float(r.success.float().mean()) < 0.9
    assert counter.rows < 0.9 * 21 * len(y)
    assert len(set(sizes)) > 1
    assert all(n == len(y) or n % 16 == 0 for n in sizes)  # padded to the bucket


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_default_lazy_compaction_gives_the_results_of_eager_compaction(problem, monkeypatch):
    net, x, y = problem
    net, x, y = net.cuda(), x.cuda(), y.cuda()
    lazy = _runs(net, x, y)  # the GPU default: every 4 iterations, a quarter, buckets of 16
    monkeypatch.setitem(working_set.CHECK_EVERY, "cuda", 1)
    monkeypatch.setitem(working_set.COMPACT_FRACTION, "cuda", 0.0)
    monkeypatch.setitem(working_set.BUCKET, "cuda", 1)
    eager = _runs(net, x, y)
    _assert_same(eager, lazy, atol=1e-5, max_flips=1)


@pytest.mark.parametrize("width", [1, 7, 50])
@pytest.mark.parametrize(("every", "fraction", "bucket"), [(1, 0.0, 1), (4, 0.25, 16)])
def test_refilled_working_set_gives_the_results_of_the_whole_batch(problem, monkeypatch,
                                                                    width, every, fraction,
                                                                    bucket):
    net, x, y = problem
    whole = _runs(net, x, y)
    monkeypatch.setitem(working_set.CHECK_EVERY, "cpu", every)
    monkeypatch.setitem(working_set.COMPACT_FRACTION, "cpu", fraction)
    monkeypatch.setitem(working_set.BUCKET, "cpu", bucket)
    for name, early, tau, loss in (("pgd-stop", True, 0, "ce"), ("pgd-tau", True, 2, "ce"),
                                   ("pgd-last", False, 0, "margin")):
        torch.manual_seed(0)
        streamed = pgd(net, x, y, eps=0.3, early_stop=early, tau=tau, loss=loss, width=width)
        _assert_same({name: whole[name]}, {name: streamed}, atol=1e-6)


def test_refilling_keeps_every_forward_pass_full_until_the_stream_ends(problem):
    net, x, y = problem
    sizes = []
    counted = torch.nn.Sequential(net)
    counted.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    torch.manual_seed(0)
    r = pgd(counted, x, y, eps=0.3, early_stop=True, steps=20, width=16)
    assert 0.2 < float(r.success.float().mean()) < 0.9
    # every pass is full while samples wait, then the set only shrinks
    short = next(i for i, n in enumerate(sizes) if n < 16)
    assert set(sizes[:short]) == {16}
    assert all(a >= b for a, b in zip(sizes[short:], sizes[short + 1:], strict=False))
    # far fewer passes than batches of 16 attacked one after another (21 passes each)
    assert len(sizes) < 0.7 * 21 * (-(-len(y) // 16))
    assert sum(sizes) < 0.9 * 21 * len(y)


def test_width_is_checked(problem):
    net, x, y = problem
    with pytest.raises(ValueError, match="width"):
        pgd(net, x, y, eps=0.3, width=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_refilled_working_set_gives_the_results_of_the_whole_batch(problem):
    net, x, y = problem
    net, x, y = net.cuda(), x.cuda(), y.cuda()
    for early, tau in ((True, 0), (True, 2), (False, 0)):
        torch.manual_seed(0)
        whole = pgd(net, x, y, eps=0.3, early_stop=early, tau=tau)
        torch.manual_seed(0)
        streamed = pgd(net, x, y, eps=0.3, early_stop=early, tau=tau, width=40)
        _assert_same({"pgd": whole}, {"pgd": streamed}, atol=1e-5, max_flips=1)
