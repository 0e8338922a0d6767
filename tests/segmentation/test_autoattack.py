"""AutoAttack on segmenters: the cascade's Dice components against the analytic model's
truth, and at least the strength of 100-PGD on a trained U-Net on ``shapes``."""

import math

import pytest
import torch

from ima import evaluate, train
from ima.attacks import autoattack
from ima.tasks import SegmentationTask

from analytic import SEG_PIXELS, analytic_data, dice_at_shift, segmentation_problem


def test_autoattack_fools_the_analytic_segmenter_exactly_past_the_crossing():
    """Every pixel of the analytic model is its own threshold unit: the cheapest way to
    Dice 0.6 flips the pixels closest to 0.5. In Linf that takes an ``eps`` above the
    smallest gaps: with eps beyond the 4th background gap (0.09) the Dice can reach
    0.6 and every component run fools the image; below the first gaps nothing flips."""
    model, x, y, _ = segmentation_problem()
    task = SegmentationTask()
    # Linf: moving every pixel by e towards the other class flips those with gap < e
    small = autoattack(model, x, y, eps=0.015, norm="linf", task=task, square_queries=200)
    assert small.components == ("apgd-ce", "apgd-margin", "apgd-t", "square")
    assert not small.success.item() and small.clean_correct.item()
    assert task.dice(model(small.x), y).item() == 1.0  # nothing can flip
    big = autoattack(model, x, y, eps=0.095, norm="linf", task=task, square_queries=200)
    assert big.success.item() and big.fooled_by.item() == 0
    assert task.dice(model(big.x), y).item() <= 0.6
    assert (big.x - x).abs().max().item() <= 0.095 + 1e-12


def test_every_component_alone_and_no_fab_for_segmenters():
    model, x, y, _ = segmentation_problem()
    task = SegmentationTask()
    for name in ("apgd-ce", "apgd-margin", "apgd-t", "square"):
        torch.manual_seed(0)
        r = autoattack(model, x, y, eps=0.2, norm="linf", attacks=[name], task=task,
                       square_queries=300)
        assert r.success.item(), name
        assert task.dice(model(r.x), y).item() <= 0.6
    with pytest.raises(ValueError, match="fab-t and apgd-dlr attack classifiers"):
        autoattack(model, x, y, eps=0.2, attacks=["fab-t"], task=task)


def test_evaluation_tvdi_and_adi_under_autoattack_match_the_analytic_dice():
    """L2 on the analytic data: 100-PGD with the margin loss walks the ray to the sphere
    (Dice ``dice_at_shift(eps / sqrt(N))``); AutoAttack, attacking every sample at every
    level and keeping the lowest Dice, is at least as low at every level and fools the
    images exactly where the ray does."""
    model, ds = analytic_data()
    levels = [0.0, 0.3, 0.5]
    pgd = evaluate(model, ds, eps=levels, losses=["margin"], random_start=False, steps=100)
    aa = evaluate(model, ds, eps=levels, attack="autoattack", checks=False,
                  options={"square_queries": 300})
    assert aa.accuracy == pgd.accuracy == [1.0, 1.0, 0.0]
    assert all(a <= p + 1e-9 for a, p in zip(aa.tvdi, pgd.tvdi, strict=True))
    assert all(a <= p + 1e-9 for a, p in zip(aa.adi, pgd.adi, strict=True))
    assert aa.tvdi[0] == 1.0 and aa.tvdi[2] <= dice_at_shift(0.5 / math.sqrt(SEG_PIXELS))
    assert aa.params["threshold"] == 0.6 and aa.params["library"] == "ima"
    assert sorted(aa.extra) == ["fooled_by_apgd-ce", "fooled_by_apgd-margin",
                                "fooled_by_apgd-t", "fooled_by_square"]


@pytest.mark.slow
def test_autoattack_is_at_least_as_strong_as_100_pgd_on_shapes(tmp_path):
    run = train({"data": {"name": "shapes", "n_train": 64, "n_val": 8, "n_test": 24,
                          "size": 16, "batch_size": 16},
                 "model": {"name": "unet", "width": 4, "depth": 1},
                 "method": {"name": "ce"}, "optim": {"lr": 0.01},
                 "train": {"epochs": 8, "threads": 1}}, tmp_path / "run", progress=False)
    test = run.dataset("test")
    levels = [0.0, 0.25, 0.5, 1.0]
    torch.manual_seed(0)
    pgd = evaluate(run.model, test, eps=levels, checks=False)
    aa = evaluate(run.model, test, eps=levels, attack="autoattack", checks=False,
                  options={"square_queries": 500})
    assert pgd.accuracy[0] > 0.5
    assert all(a <= p for a, p in zip(aa.accuracy, pgd.accuracy, strict=True))
    assert all(a <= p + 1e-9 for a, p in zip(aa.tvdi, pgd.tvdi, strict=True))
