"""Evaluation with SPSA, white noise, AutoAttack and minimal norms; clinical metrics; the
sanity checks, against the exact margins of a linear model."""

import json
import logging

import pytest
import torch
from torch.utils.data import TensorDataset

from ima import evaluate, lp
from ima.attacks import AttackResult, pgd
from ima.evaluation import EvaluationResult
from ima.stats import wilson_interval
from ima.tasks import ClassificationTask

from analytic import linear_problem

LEVELS = [0.05, 0.1, 0.15]

MODEL_CHECKS = ["deterministic", "logits", "gradients", "batch_independent"]


def _clear_of(levels, margin, low=0.85, high=1.02):
    """Samples whose margin is outside ``[low * e, high * e]`` for every level ``e``
    (SPSA's Adam may stop a little short of the L2 sphere)."""
    keep = torch.ones(len(margin), dtype=torch.bool)
    for e in levels:
        keep &= (margin < low * e) | (margin > high * e)
    return keep


@pytest.fixture(scope="module")
def problem():
    model, x, y, margin = linear_problem(d=10, n=200, eps=0.1, seed=5)
    keep = _clear_of(LEVELS, margin)
    return model, x[keep], y[keep], margin[keep]


def _truth(margin, levels):
    return [float((margin > e).float().mean()) for e in levels]


def test_spsa_on_the_first_samples_of_each_class(problem):
    model, x, y, margin = problem
    result = evaluate(model, TensorDataset(x, y), eps=LEVELS, attack="spsa", per_class=6,
                      steps=60, split_name="test", batch_size=5)
    first = [i for c in (0, 1) for i in (y == c).nonzero().squeeze(1)[:6].tolist()]
    assert result.indices == sorted(first)
    assert result.subset == "first 6 samples of each class" and result.n_samples == 12
    assert result.labels == y[result.indices].tolist()
    assert result.accuracy == pytest.approx(_truth(margin[result.indices], result.eps))
    assert result.params["n_samples"] == 2048 and result.params["steps"] == 60
    assert result.accuracy_per_loss == {"margin": result.accuracy}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_white_noise_never_beats_the_white_box_attack(norm):
    eps = [0.05, 0.1] if norm == "l2" else [0.01, 0.03]
    model, x, y, margin = linear_problem(d=10, n=200, eps=eps[-1], norm=norm, seed=6)
    data = TensorDataset(x, y)
    white = evaluate(model, data, eps=eps, norm=norm, steps=30)
    assert white.accuracy == pytest.approx(_truth(margin, white.eps), abs=0.02)
    found = {}
    for attack in ("uniform-noise", "gaussian-noise"):
        noise = found[attack] = evaluate(model, data, eps=eps, norm=norm, attack=attack)
        assert noise.params["draws"] == 10 and "steps" not in noise.params
        assert all(a >= b for a, b in zip(noise.accuracy, white.accuracy, strict=True))
        assert noise.accuracy[-1] > white.accuracy[-1], "random noise is a weak attack"
        average = noise.extra["accuracy_average"]
        assert all(a >= w for a, w in zip(average, noise.accuracy, strict=True))
        if attack == "uniform-noise":  # inside the ball: never fools a sample PGD cannot
            robust_pgd, robust_noise = torch.tensor(white.robust), torch.tensor(noise.robust)
            assert not (robust_pgd & ~robust_noise).any()
    more = evaluate(model, data, eps=eps, norm=norm, attack="uniform-noise",
                    options={"draws": 40})
    fewer = found["uniform-noise"].accuracy
    assert all(a <= b + 0.02 for a, b in zip(more.accuracy, fewer, strict=True))


@pytest.mark.parametrize("attack, norm", [("ddn-min", "l2"), ("bpgd-min", "l2"),
                                          ("bpgd-min", "linf")])
def test_minimal_norms_match_the_exact_margins(attack, norm):
    model, x, y, margin = linear_problem(d=10, n=150, eps=0.1, norm=norm, seed=7)
    y = y.clone()
    y[:3] = 1 - y[:3]  # misclassified clean: radius 0
    levels = [0.02, 0.05, 0.1] if norm == "l2" else [0.005, 0.01, 0.02]
    result = evaluate(model, TensorDataset(x, y), eps=levels, norm=norm, attack=attack)
    radii = torch.tensor([float("nan") if r is None else r for r in result.radii])
    assert (radii[:3] == 0).all()
    found, exact = radii[3:], margin[3:]
    assert not torch.isnan(found).any()
    # DDN's radius cannot shrink below init_norm * 0.95**100 = 0.006 in 100 steps
    usual = exact > 0.02 if attack == "ddn-min" else exact > 0
    assert (found >= exact * (1 - 1e-4)).all()
    assert (found[usual] <= exact[usual] * 1.02 + 1e-6).all()
    truth = [0.0 if e == 0 else float((margin[3:] > e).sum()) / len(y) for e in result.eps]
    truth[0] = (len(y) - 3) / len(y)
    assert result.accuracy == pytest.approx(truth, abs=1.5 / len(y))
    assert [c["name"] for c in result.checks] == ["monotone", "unbounded", *MODEL_CHECKS]
    assert result.checks[1]["passed"] is True


def test_art_autoattack_evaluation_where_installed(problem):
    pytest.importorskip("art", reason="needs the autoattack extra (adversarial-robustness-toolbox)")
    model, x, y, margin = problem
    result = evaluate(model, TensorDataset(x, y), eps=LEVELS, attack="autoattack-art",
                      per_class=8, options={"restarts": 1})
    assert result.accuracy == pytest.approx(_truth(margin[result.indices], result.eps))
    assert result.params["library"] == "adversarial-robustness-toolbox"


def test_autoattack_evaluation_is_exact_on_the_linear_model(problem, caplog):
    """Our AutoAttack on 2-D-free vectors (no Square: it needs images, said in a warning)
    fools exactly the samples whose margin is below each level; which component fooled
    each sample first is kept per level."""
    model, x, y, margin = problem
    with caplog.at_level(logging.WARNING, logger="ima"):
        result = evaluate(model, TensorDataset(x, y), eps=LEVELS, attack="autoattack",
                          checks=False)
    assert result.accuracy == pytest.approx(_truth(margin, result.eps))
    assert result.params["library"] == "ima" and result.params["version"] == "standard"
    assert "square" in caplog.text and "images" in caplog.text
    firsts = {k: v for k, v in result.extra.items() if k.startswith("fooled_by_")}
    assert sorted(firsts) == ["fooled_by_apgd-ce", "fooled_by_apgd-t", "fooled_by_fab-t"]
    fooled = [sum(v[i] for v in firsts.values()) for i in range(len(result.eps))]
    assert fooled == pytest.approx([1 - a for a in result.accuracy])
    subset = evaluate(model, TensorDataset(x, y), eps=LEVELS, attack="autoattack",
                      options={"attacks": ["fab-t"]}, checks=False)
    assert subset.accuracy == result.accuracy
    assert list(subset.extra) == ["fooled_by_fab-t"]
    with pytest.raises(ValueError, match="square needs images"):
        evaluate(model, TensorDataset(x, y), eps=LEVELS, attack="autoattack",
                 options={"attacks": ["square"]}, checks=False)
    with pytest.raises(ValueError, match="attack"):
        evaluate(model, TensorDataset(x, y), eps=LEVELS, attack="autoattack",
                 options={"attacks": ["apgd"]}, checks=False)


def test_clinical_metrics_of_a_binary_model(problem):
    model, x, y, margin = problem
    result = evaluate(model, TensorDataset(x, y), eps=LEVELS, steps=30, checks=False)
    assert result.checks == []
    robust = torch.tensor(result.robust)
    n = len(y)
    for i, (lo, hi) in enumerate(result.accuracy_ci):
        assert (lo, hi) == pytest.approx(wilson_interval(int(robust[i].sum()), n))
        assert lo <= result.accuracy[i] <= hi
    assert result.class_counts == {"0": int((y == 0).sum()), "1": int((y == 1).sum())}
    for c in (0, 1):
        mask = y == c
        expected = robust[:, mask].float().mean(dim=1).tolist()
        assert result.per_class_accuracy[str(c)] == pytest.approx(expected)
        assert result.per_class_accuracy_ci[str(c)][1] == pytest.approx(
            list(wilson_interval(int(robust[1, mask].sum()), int(mask.sum())))
        )
    # against the truth: a positive (class 1) sample is robust at eps iff its exact margin
    # is above eps (the fixture keeps margins clear of every level)
    assert result.positive_class == 1
    assert result.sensitivity == pytest.approx(_truth(margin[y == 1], result.eps))
    assert result.specificity == pytest.approx(_truth(margin[y == 0], result.eps))
    positives = int((y == 1).sum())
    assert result.sensitivity_ci[2] == pytest.approx(list(wilson_interval(
        int((margin[y == 1] > result.eps[2]).sum()), positives)))


def test_three_classes_have_no_sensitivity():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.rand(60, 4)
    y = torch.randint(0, 3, (60,))
    result = evaluate(net, TensorDataset(x, y), eps=[0.1], steps=5, checks=False)
    assert set(result.per_class_accuracy) == {"0", "1", "2"}
    assert result.sensitivity is None and result.positive_class is None


def test_new_fields_round_trip_and_old_files_still_load(problem, tmp_path):
    model, x, y, _ = problem
    result = evaluate(model, TensorDataset(x, y), eps=LEVELS, attack="ddn-min",
                      split_name="test")
    path = tmp_path / "r.json"
    result.save(path)
    assert EvaluationResult.load(path) == result
    # a file written before these fields existed (schema_version 1, no optional fields)
    data = json.loads(path.read_text())
    old = {k: data[k] for k in ("attack", "norm", "split", "n_samples", "subset", "seed",
                                "params", "eps", "accuracy", "accuracy_per_loss", "auc",
                                "robust", "schema_version")}
    path.write_text(json.dumps(old))
    loaded = EvaluationResult.load(path)
    assert loaded.accuracy_ci is None and loaded.checks == [] and loaded.radii is None
    for mine, stored in zip(loaded.intervals(), result.accuracy_ci, strict=True):
        assert mine == pytest.approx(stored)


# --- sanity checks ---------------------------------------------------------------------


def test_healthy_evaluations_pass_every_check(problem):
    model, x, y, _ = problem
    data = TensorDataset(x, y)
    white = evaluate(model, data, eps=LEVELS, steps=30, split_name="test")
    assert [c["name"] for c in white.checks] == ["monotone", "unbounded", *MODEL_CHECKS,
                                                 "whitebox_vs_blackbox"]
    assert [c["passed"] for c in white.checks] == [True, True, True, True, True, True, None]
    assert "--attack spsa" in white.checks[-1]["detail"]
    black = evaluate(model, data, eps=LEVELS, attack="spsa", per_class=10, steps=40,
                     split_name="test", options={"n_samples": 256},
                     references={"pgd-l2-test.json": white})
    assert [c["passed"] for c in black.checks] == [True] * 7
    assert "pgd-l2-test.json" in black.checks[-1]["detail"]
    assert black.failed_checks() == []


class Quantised(torch.nn.Module):
    """The linear model behind a rounding of its input: zero gradients (masked)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 1e4) / 1e4)


def test_checks_catch_gradient_masking(problem, caplog):
    model, x, y, _ = problem
    masked = Quantised(model)
    data = TensorDataset(x, y)
    with caplog.at_level(logging.WARNING, logger="ima.evaluation.sanity"):
        white = evaluate(masked, data, eps=LEVELS, steps=20, split_name="test")
        checks = {c["name"]: c for c in white.checks}
        assert checks["unbounded"]["passed"] is False
        black = evaluate(masked, data, eps=LEVELS, attack="spsa", per_class=10, steps=40,
                         split_name="test", options={"n_samples": 256},
                         references=[white])
    checks = {c["name"]: c for c in black.checks}
    assert checks["whitebox_vs_blackbox"]["passed"] is False
    assert black.accuracy[2] < white.accuracy[2] - 0.2
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'unbounded' failed" in warned and "'whitebox_vs_blackbox' failed" in warned


def test_monotone_check_catches_an_attack_that_gives_up_at_large_eps(problem, monkeypatch):
    model, x, y, _ = problem

    def lazy(model, x, y, *, eps, norm, bounds, task, **unused):
        if eps > 0.07:  # broken: returns x unchanged at the larger levels
            return AttackResult(x.clone(), torch.zeros(len(y), dtype=torch.bool))
        return pgd(model, x, y, eps=eps, norm=norm, steps=20, early_stop=True,
                   bounds=bounds, task=task)

    monkeypatch.setattr("ima.evaluation.attacks.spsa", lazy)
    result = evaluate(model, TensorDataset(x, y), eps=LEVELS, attack="spsa")
    checks = {c["name"]: c for c in result.checks}
    assert checks["monotone"]["passed"] is False
    assert "resisted a larger one" in checks["monotone"]["detail"]
    assert checks["unbounded"]["passed"] is True


def test_bad_evaluation_choices(problem):
    model, x, y, _ = problem
    data = TensorDataset(x, y)
    with pytest.raises(ValueError, match="attack must be one of"):
        evaluate(model, data, eps=[0.1], attack="cw")
    with pytest.raises(ValueError, match="supports norm 'l2'"):
        evaluate(model, data, eps=[0.1], attack="ddn-min", norm="linf")
    with pytest.raises(ValueError, match="not known to attack 'spsa'"):
        evaluate(model, data, eps=[0.1], attack="spsa", options={"draws": 3})
    with pytest.raises(ValueError, match="not both"):
        evaluate(model, data, eps=[0.1], per_class=2, max_samples=5)
    with pytest.raises(ValueError, match="draws must be >= 1"):
        evaluate(model, data, eps=[0.1], attack="gaussian-noise", options={"draws": 0})
    with pytest.raises(ValueError, match="per_class needs one class label"):
        evaluate(model, TensorDataset(x, x[:, :2]), eps=[0.1], per_class=2)


def test_gaussian_noise_has_the_stated_size():
    torch.manual_seed(0)
    for d in (2, 100):
        x = torch.zeros(20000, d)
        noise = lp.sample_gaussian(x, 0.3, "l2")
        assert float(lp.sample_norm(noise, "l2").mean()) == pytest.approx(0.3, rel=0.01)
    noise = lp.sample_gaussian(torch.zeros(200, 100), 0.1, "linf")
    assert float(noise.std()) == pytest.approx(0.1, rel=0.02)


class _Softmax(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=1)


class _Noisy(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.01 * torch.randn_like(x))


class _Rounded(torch.nn.Module):
    """Rounds its input: a zero gradient almost everywhere (gradient masking)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


class _BatchMean(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x - x.mean(dim=0, keepdim=True) + 0.5)


@pytest.mark.parametrize(("wrap", "flag"), [(_Softmax, "logits"), (_Noisy, "deterministic"),
                                            (_Rounded, "gradients"),
                                            (_BatchMean, "batch_independent")])
def test_model_checks_flag_gradient_masking(problem, wrap, flag):
    """AutoAttack's flags: each broken model fails its check and only its check."""
    from ima.evaluation.sanity import model_checks

    model, x, y, _ = problem
    task = ClassificationTask()
    assert all(c["passed"] for c in model_checks(model, x[:40], y[:40], task))
    checks = {c["name"]: c for c in model_checks(wrap(model), x[:40], y[:40], task)}
    assert checks[flag]["passed"] is False
    assert all(c["passed"] is not False for name, c in checks.items() if name != flag), checks


def test_results_record_the_input_size_and_tables_give_the_rms_of_l2_levels(problem):
    from ima.reporting.tables import robustness_table

    model, x, y, _ = problem
    result = evaluate(model, TensorDataset(x, y), eps=[0.5], steps=5, checks=False)
    assert result.input_values == 10
    title = robustness_table([("m", result)]).title
    assert "per-value RMS of each level (eps / sqrt(10)): 0, 0.158" in title
    back = EvaluationResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back.input_values == 10
    linf = evaluate(model, TensorDataset(x, y), eps=[0.5], norm="linf", steps=5, checks=False)
    assert "RMS" not in robustness_table([("m", linf)]).title
