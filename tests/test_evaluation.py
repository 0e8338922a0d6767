"""The 100-PGD protocol against the exact margins of analytic models."""

import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ima import evaluate
from ima.evaluation import EvaluationResult, auc, save_result

from analytic import linear_problem, small_problem

EPS = [0.0, 0.02, 0.05, 0.1, 0.15]


def _kept_out_of_bands(model, x, y, norm, levels, band=0.02):
    margin = model.margin(x, norm)
    keep = torch.ones(len(y), dtype=torch.bool)
    for e in levels:
        keep &= (margin < (1 - band) * e) | (margin > (1 + band) * e)
    return x[keep], y[keep], margin[keep]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_accuracy_is_the_fraction_with_margin_above_eps(norm):
    model, x, y, _ = linear_problem(norm=norm, eps=0.1, n=600)
    x, y, margin = _kept_out_of_bands(model, x, y, norm, EPS)
    result = evaluate(model, TensorDataset(x, y), eps=EPS, norm=norm, steps=30)
    truth = [float((margin > e).float().mean()) for e in EPS]
    assert result.eps == EPS
    assert result.accuracy == pytest.approx(truth, abs=1e-9)
    assert result.n_samples == len(y)
    for loss in ("ce", "margin"):
        assert result.accuracy_per_loss[loss] == pytest.approx(truth, abs=1e-9)
    robust = torch.tensor(result.robust)
    assert torch.equal(robust, torch.stack([margin > e for e in EPS]))


def test_clean_misclassified_samples_count_as_wrong():
    model, x, y, margin = linear_problem(eps=0.1, n=200)
    y = y.clone()
    y[:10] = 1 - y[:10]
    result = evaluate(model, TensorDataset(x, y), eps=[0.0], steps=5)
    assert result.accuracy[0] == pytest.approx(1 - 10 / len(y))
    assert not any(result.robust[0][:10])


class TwoTraps(torch.nn.Module):
    """Three-class 2-D model on which CE-PGD and margin-PGD fool different samples.

    True class 0 (logit 0) everywhere below. Group A (x1 = 0.95, x2 = -100): the steep
    class-1 logit makes every softmax probability but class 0's underflow to exactly 0, so
    the CE gradient vanishes, while the margin loss follows z1 across x1 = 1. Group B
    (x1 = 0, x2 = 0.95): the largest other logit is the constant decoy z3 = -1, so the
    margin-loss gradient vanishes, while CE follows class 2 across x2 = 1.
    """

    def forward(self, x):
        x1, x2 = x[:, 0], x[:, 1]
        z0 = torch.zeros_like(x1)
        z1 = 10000 * (x1 - 1)
        z2 = 40 * (x2 - 1)
        z3 = -1 - 10000 * torch.relu(x1 - 0.5)
        return torch.stack([z0, z1, z2, z3], dim=1)


def test_worst_case_is_taken_per_sample_over_both_losses():
    a = torch.tensor([[0.95, -100.0]]).repeat(3, 1)
    b = torch.tensor([[0.0, 0.95]]).repeat(5, 1)
    c = torch.tensor([[0.0, -100.0]]).repeat(4, 1)  # far from every boundary
    x = torch.cat([a, b, c])
    y = torch.zeros(len(x), dtype=torch.long)
    model = TwoTraps()
    result = evaluate(model, TensorDataset(x, y), eps=[0.1], steps=100, random_start=False,
                      bounds=None)
    n = len(x)
    assert result.accuracy_per_loss["ce"] == pytest.approx([1.0, 1 - 5 / n])
    assert result.accuracy_per_loss["margin"] == pytest.approx([1.0, 1 - 3 / n])
    assert result.accuracy == pytest.approx([1.0, 4 / n])
    assert result.robust[1] == [False] * 8 + [True] * 4


def test_samples_fooled_at_a_smaller_eps_are_not_attacked_again():
    model, x, y, margin = linear_problem(eps=0.1, n=300)
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, inp):
            calls.append(inp.shape[0])
            return self.inner(inp)

    result = evaluate(Counting(), TensorDataset(x, y), eps=[0.05, 0.1], steps=10,
                      losses=("ce",), random_start=False, batch_size=1000)
    assert calls.pop(0) == 1  # the one-row check that the model returns one logits tensor
    assert calls.pop(0) == len(y)  # the clean predictions of the confusion matrices
    # clean pass, then at 0.05 all samples, at 0.1 only the survivors of 0.05
    survivors = int((margin > 0.05).sum())
    first_level = calls[1]
    assert first_level == len(y)
    assert max(calls[1 + 11 :]) <= survivors
    # the carried-over curve is the truth (exact margins, no band at 0.1) and equals an
    # independent run at the larger level alone
    assert result.accuracy[2] == pytest.approx(float((margin > 0.1).float().mean()))
    alone = evaluate(model, TensorDataset(x, y), eps=[0.1], steps=10, losses=("ce",),
                     random_start=False, batch_size=1000)
    assert alone.robust[1] == result.robust[2]


def test_accuracy_never_increases_with_eps_and_runs_on_loaders():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x = torch.rand(100, 5)
    with torch.no_grad():
        y = net(x).argmax(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    net.train()
    state = torch.get_rng_state()
    result = evaluate(net, loader, eps=[0.3, 0.1, 0.2], steps=20, max_samples=70)
    assert result.eps == [0.0, 0.1, 0.2, 0.3]
    # carrying fooled samples over can only remove robust samples against independent
    # runs per level, and at the first level it is the independent run
    for j, e in enumerate(result.eps[1:], start=1):
        alone = evaluate(net, loader, eps=[e], steps=20, max_samples=70, checks=False)
        assert all(a <= b for a, b in zip(result.robust[j], alone.robust[1], strict=True))
        if j == 1:
            assert result.robust[1] == alone.robust[1]
    assert result.n_samples == 70 and result.subset == "first 70 samples"
    assert net.training, "model mode restored"
    assert torch.equal(torch.get_rng_state(), state), "global RNG left as it was"
    again = evaluate(net, loader, eps=[0.3, 0.1, 0.2], steps=20, max_samples=70)
    assert again.robust == result.robust, "same seed, same result"


@pytest.mark.parametrize(("norm", "eps"), [("l2", [0.1, 0.2, 0.3]), ("linf", [0.05, 0.1, 0.15])])
def test_pooled_batches_give_the_per_batch_result_in_fewer_passes(monkeypatch, norm, eps):
    """A pool of batches attacked through one refilled working set gives every sample the
    result (and random start) it gets when its batch is attacked alone, in fewer forward
    passes: a fooled sample's place goes to a waiting one."""
    net, x, y = small_problem(n=300)
    passes = []
    counted = torch.nn.Sequential(net)
    counted.register_forward_pre_hook(lambda m, inp: passes.append(inp[0].shape[0]))
    common = dict(eps=eps, norm=norm, steps=20, batch_size=32, max_samples=250,
                  checks=False)
    pooled = evaluate(counted, TensorDataset(x, y), **common)
    pooled_passes, passes[:] = len(passes), []
    monkeypatch.setattr("ima.evaluation.inputs.POOL_BATCHES", 1)
    alone = evaluate(counted, TensorDataset(x, y), **common)
    assert pooled.robust == alone.robust
    assert pooled.accuracy_per_loss == alone.accuracy_per_loss
    assert 0.1 < pooled.accuracy[-1] < 0.9  # a real mix of fooled and robust samples
    assert pooled_passes < 0.8 * len(passes)
    assert max(passes) == 32  # the working set never exceeds batch_size


def test_batches_of_different_image_sizes_are_pooled_apart():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(16, 3))
    batches = []
    for size in (8, 8, 11):
        x = torch.rand(6, 1, size, size)
        with torch.no_grad():
            batches.append((x, net(x).argmax(1)))
    result = evaluate(net, batches, eps=[0.5], steps=10, checks=False)
    assert result.n_samples == 18 and result.accuracy[0] == 1.0


def test_auc_on_hand_made_curves():
    assert auc([0, 1, 2], [1, 1, 1]) == pytest.approx(1.0)
    assert auc([0, 1], [1, 0]) == pytest.approx(0.5)
    assert auc([0, 0.5, 2], [1.0, 0.5, 0.0]) == pytest.approx((0.5 * 0.75 + 1.5 * 0.25) / 2)
    assert auc([0], [0.8]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="start at 0"):
        auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="equal length"):
        auc([0, 1], [1])


def test_result_json_round_trip_and_file_naming(tmp_path):
    model, x, y, _ = linear_problem(eps=0.1, n=50)
    result = evaluate(model, TensorDataset(x, y), eps=[0.05], steps=5, split_name="test")
    path = save_result(tmp_path, result)
    assert path == tmp_path / "eval" / "pgd-l2-test.json"
    loaded = EvaluationResult.load(path)
    assert loaded == result
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["eps"] == [0.0, 0.05]
    # the same settings go to the same file; different settings never overwrite it
    assert save_result(tmp_path, loaded) == path
    other = evaluate(model, TensorDataset(x, y), eps=[0.1], steps=5, split_name="test")
    assert save_result(tmp_path, other) == tmp_path / "eval" / "pgd-l2-test-2.json"
    assert EvaluationResult.load(path) == result
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema_version"):
        EvaluationResult.load(path)


def test_bad_evaluation_input():
    model, x, y, _ = linear_problem(eps=0.1, n=20)
    data = TensorDataset(x, y)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        evaluate(model, data, eps=[-0.1])
    with pytest.raises(ValueError, match="norm must be one of"):
        evaluate(model, data, eps=[0.1], norm="l3")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        evaluate(model, data, eps=[0.1], steps=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        evaluate(model, data, eps=[0.1], losses=("hinge",))
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 1\]"):
        evaluate(model, TensorDataset(x, y + 5), eps=[0.1])


def test_a_killed_evaluation_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from ima.evaluation import attacks

    net, x, y = small_problem(n=300)
    data = TensorDataset(x, y)
    kwargs = dict(eps=[0.1, 0.2], steps=10, batch_size=32, checks=False)
    monkeypatch.setattr("ima.evaluation.inputs.POOL_BATCHES", 1)
    whole = evaluate(net, data, **kwargs)
    real, calls = attacks.PGDAttack.attack, []

    def killed_after_three(self, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(self, *args)

    partial = tmp_path / "partial.pt"
    monkeypatch.setattr(attacks.PGDAttack, "attack", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        evaluate(net, data, partial=partial, **kwargs)
    assert partial.is_file()
    monkeypatch.setattr(attacks.PGDAttack, "attack", real)
    resumed_calls = []
    monkeypatch.setattr(attacks.PGDAttack, "attack",
                        lambda self, *a: resumed_calls.append(1) or real(self, *a))
    resumed = evaluate(net, data, partial=partial, **kwargs)
    assert len(resumed_calls) == 10 - 3  # 300 samples in 10 batches, 3 already done
    assert resumed.robust == whole.robust and resumed.accuracy == whole.accuracy
    assert not partial.exists()
    # a partial file of other settings is not used
    monkeypatch.setattr(attacks.PGDAttack, "attack", killed_after_three)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        evaluate(net, data, partial=partial, **{**kwargs, "eps": [0.3]})
    monkeypatch.setattr(attacks.PGDAttack, "attack", real)
    assert evaluate(net, data, partial=partial, **kwargs).robust == whole.robust
