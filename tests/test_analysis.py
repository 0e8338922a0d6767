"""Analyses on known answers: the Moons Bayes boundary, boundary distances, checkpoint
selection (appendix C.2), eps suggestion (appendix C.3) and the selection tables."""

import logging

import numpy as np
import pytest
from sklearn.datasets import make_moons

from ima.analysis import (
    checkpoint_epochs,
    compare_boundaries,
    epoch_table,
    eps_max_table,
    margin_bound,
    moons_bayes_score,
    select_checkpoint,
    suggest_eps,
    zero_crossings,
)
from ima.evaluation import EvaluationResult
from ima.runs import read_metrics


def test_bayes_far_from_the_boundary():
    # points on the generating curves, far from the other class
    score = moons_bayes_score(np.array([[0.0, 1.0], [-1.0, 0.0], [1.0, -0.5], [2.0, 0.5]]),
                              noise=0.2)
    assert score[0] < -4 and score[1] < -4  # outer moon: class 0, posterior < 2%
    assert score[2] > 4 and score[3] > 4  # inner moon: class 1


def test_bayes_point_symmetry():
    # x -> (1, 0.5) - x maps the outer half circle onto the inner one: classes swap
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, size=(500, 2))
    for noise in (0.05, 0.2, 0.5):
        a = moons_bayes_score(x, noise=noise)
        b = moons_bayes_score(np.array([1.0, 0.5]) - x, noise=noise)
        np.testing.assert_allclose(a, -b, atol=1e-8)
    # the centre of symmetry is on the boundary
    assert moons_bayes_score(np.array([[0.5, 0.25]]), noise=0.2)[0] == pytest.approx(0, abs=1e-9)


def test_bayes_posterior_matches_sampled_frequencies():
    x, y = make_moons(200_000, noise=0.2, random_state=0)
    points = np.array([[0.2, 0.5], [1.5, 0.0], [-0.5, 0.5], [0.0, 0.3]])
    posterior = 1 / (1 + np.exp(-moons_bayes_score(points, noise=0.2)))
    for p, q in zip(points, posterior, strict=True):
        near = ((x - p) ** 2).sum(1) < 0.06**2
        assert near.sum() > 200
        assert y[near].mean() == pytest.approx(q, abs=0.06)


def test_bayes_without_noise_is_the_nearest_curve():
    # just above the outer circle's top vs just below the inner circle's bottom
    score = moons_bayes_score(np.array([[0.0, 1.05], [1.0, -0.55], [0.5, 0.25]]), noise=0.0)
    assert score[0] < 0 < score[1]
    assert score[2] == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        moons_bayes_score(np.zeros((3, 3)), noise=0.2)


def test_zero_crossings_and_boundary_distance():
    xs = np.linspace(0, 1, 101)
    ys = np.linspace(0, 1, 51)
    gx, _ = np.meshgrid(xs, ys)
    points = zero_crossings(xs, ys, gx - 0.303)
    np.testing.assert_allclose(points[:, 0], 0.303, atol=1e-9)
    assert len(points) == len(ys)

    c = compare_boundaries(xs, ys, gx - 0.3, gx - 0.5)
    assert c.mean_distance == pytest.approx(0.2, abs=1e-6)
    assert c.hausdorff == pytest.approx(0.2, abs=1e-6)
    assert c.disagreement == pytest.approx(0.2, abs=0.011)
    same = compare_boundaries(xs, ys, gx - 0.3, gx - 0.3)
    assert same.mean_distance == 0 and same.disagreement == 0
    # only the box counts: there the boundaries agree, no disagreement either
    boxed = compare_boundaries(xs, ys, gx - 0.3, np.where(gx > 0.8, -1.0, gx - 0.3),
                               box=(0.0, 0.7, 0.0, 1.0))
    assert boxed.mean_distance == pytest.approx(0, abs=1e-9) and boxed.disagreement == 0
    flat = compare_boundaries(xs, ys, np.ones_like(gx), gx - 0.5)
    assert np.isnan(flat.mean_distance) and flat.disagreement == pytest.approx(0.5, abs=0.011)


METRICS = """epoch,loss,train_acc,val_acc,margin_mean
1,1.0,0.70,0.80,0.1
2,0.8,0.85,0.92,0.2
3,0.7,0.90,0.93,0.3
4,0.6,0.92,0.91,0.4
5,0.6,0.93,0.89,0.5
6,0.6,0.94,0.88,0.6
"""


def test_select_checkpoint_from_metrics(tmp_path):
    (tmp_path / "metrics.csv").write_text(METRICS)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("epoch-002.pt", "epoch-004.pt", "epoch-006.pt", "epoch-x.pt", "notes.txt"):
        (folder / name).touch()
    epochs = checkpoint_epochs(tmp_path)
    assert epochs == [2, 4, 6]
    metrics = read_metrics(tmp_path)

    chosen = select_checkpoint(metrics, epochs, min_val_acc=0.9)
    assert chosen.epoch == 4  # epoch 6 has more margin but 0.88 validation accuracy
    assert [c["eligible"] for c in chosen.candidates] == [True, True, False]
    assert "epoch 4" in chosen.reason
    # a lower threshold lets the latest (largest margins) through; epoch 1 (0.80) has
    # no checkpoint and is irrelevant
    assert select_checkpoint(metrics, epochs, min_val_acc=0.85).epoch == 6
    assert select_checkpoint(metrics, [1, 2], min_val_acc=0.85).epoch == 2
    none = select_checkpoint(metrics, epochs, min_val_acc=0.95)
    assert none.epoch is None and "best is epoch 2 with 92.00%" in none.reason
    assert "accuracy 95.00%;" in none.reason  # percent, as the tables
    assert "91.00% >= 90.00%" in chosen.reason

    for few in ([], [4]):
        with pytest.raises(ValueError, match="two or more saved checkpoints"):
            select_checkpoint(metrics, few, min_val_acc=0.9)
    with pytest.raises(ValueError, match="val_acc"):
        select_checkpoint([{"epoch": 2, "loss": 1.0}], [2, 4], min_val_acc=0.9)
    with pytest.raises(ValueError, match="min_val_acc"):
        select_checkpoint(metrics, epochs, min_val_acc=90)


def test_margin_bound():
    config = {"method": {"name": "ima", "eps_max": 0.3, "delta_eps": 0.1}}
    assert margin_bound(config, 1) == pytest.approx(0.2)  # margins start at delta_eps
    assert margin_bound(config, 5) == pytest.approx(0.3)  # clipped at eps_max
    assert margin_bound({"method": {"name": "ce"}}, 5) is None


def test_suggest_eps_quantile(caplog):
    margins = np.arange(1, 101) / 100  # 0.01 .. 1.00
    s = suggest_eps(margins, quantile=0.25, eps_max=1.0)
    assert s.eps == pytest.approx(np.quantile(margins, 0.25))
    assert s.eps == pytest.approx(0.2575)
    assert (margins > s.eps).mean() == pytest.approx(0.75)
    assert s.n_samples == 100 and s.at_eps_max == pytest.approx(0.01)
    assert s.quantiles[0.5] == pytest.approx(0.505)
    assert "0.25 quantile" in s.summary() and "75%" in s.summary()
    assert suggest_eps(margins, quantile=0.1).eps == pytest.approx(0.109)

    clipped = np.r_[np.full(80, 0.3), np.linspace(0.01, 0.29, 20)]
    with caplog.at_level(logging.WARNING, logger="ima.analysis"):
        s = suggest_eps(clipped, quantile=0.25, eps_max=0.3)
    assert s.eps == pytest.approx(0.3) and "lower bound" in caplog.text
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="quantile"):
            suggest_eps(margins, quantile=bad)
    with pytest.raises(ValueError, match="at least one"):
        suggest_eps([], quantile=0.25)
    with pytest.raises(ValueError, match="finite"):
        suggest_eps([0.1, float("nan")])


def _result(eps, accuracy, split="test"):
    return EvaluationResult(
        attack="pgd", norm="l2", split=split, n_samples=10, subset=None, seed=0,
        params={"steps": 100}, eps=eps, accuracy=accuracy,
        accuracy_per_loss={"ce": accuracy}, auc=0.5, robust=[[True] * 10 for _ in eps],
    )


def test_selection_tables():
    config = {"method": {"name": "ima", "eps_max": 3.0, "delta_eps": 0.5}}
    results = {2: _result([0.0, 1.0], [0.95, 0.40]), 4: _result([0.0, 1.0], [0.93, 0.55])}
    metrics = [{"epoch": 2, "val_acc": 0.94}, {"epoch": 4, "val_acc": 0.9}]
    selection = select_checkpoint(metrics, [2, 4], min_val_acc=0.9)
    table = eps_max_table(config, results, metrics, selection)
    assert table.header == ["Noise", "0", "1", "0 (Validation)"]
    assert table.rows[0] == ["epoch 2: eps_max = 2 x 0.5 = 1", "95.00", "40.00", "94.00"]
    assert table.rows[1][0].endswith("(chosen)") and table.rows[1][1:] == ["93.00", "55.00",
                                                                          "90.00"]
    h = epoch_table(results)
    assert h.header == ["Epoch", "2", "4", "Best epoch"]
    # percent, as in eps_max_table: select prints one unit throughout
    assert h.rows == [["noise=0", "95.00", "93.00", "2"], ["noise=1", "40.00", "55.00", "4"]]
    assert "Accuracy (%)" in h.title
    assert "| epoch 2: eps_max" in table.to_markdown()
