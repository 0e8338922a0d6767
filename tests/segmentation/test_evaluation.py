"""Segmentation evaluation: TVDI and ADI under 100-PGD against the analytic model's truth,
result files, tables, and the helper for figures."""

import math

import pytest
import torch

from ima.evaluation import EvaluationResult, evaluate, segment_under_attack
from ima.reporting.tables import robustness_table

from analytic import SEG_PIXELS as N
from analytic import analytic_data, dice_at_shift


def test_tvdi_and_adi_under_attack_match_the_analytic_dice():
    model, ds = analytic_data()
    levels = [0.0, 0.3, 0.5]
    # the margin run without random start walks the ray and ends on the ball's surface
    r = evaluate(model, ds, eps=levels, losses=["margin"], random_start=False, steps=100)
    want = [dice_at_shift(e / math.sqrt(N)) for e in levels]
    assert want == pytest.approx([1.0, 14 / 19, 0.5])
    assert r.adi == pytest.approx(want, abs=1e-6)
    assert r.tvdi == pytest.approx(want, abs=1e-6)  # identical images: TVDI = Dice
    assert r.dice == [pytest.approx([w] * 3, abs=1e-6) for w in want]
    assert r.accuracy == [1.0, 1.0, 0.0]  # Dice 0.74 > 0.6 on the whole path; 0.5 is not
    assert r.params["early_stop"] is False and r.params["losses"] == ["margin"]
    # the task is read from the dataset; the default losses are the task's
    default = evaluate(model, ds, eps=[0.5], steps=20)
    assert default.params["losses"] == ["dice_ce", "margin"]
    assert default.adi[1] < 1.0 and default.accuracy[1] <= default.accuracy[0]


def test_result_file_round_trip_and_old_files(tmp_path):
    model, ds = analytic_data()
    r = evaluate(model, ds, eps=[0.3], steps=5)
    r.save(tmp_path / "seg.json")
    back = EvaluationResult.load(tmp_path / "seg.json")
    assert back.tvdi == r.tvdi and back.adi == r.adi and back.dice == r.dice
    data = r.to_dict()
    for key in ("tvdi", "adi", "dice"):
        del data[key]  # a classification file from before these fields existed
    old = EvaluationResult.from_dict(data)
    assert old.tvdi is None and old.adi is None


def test_report_tables_of_tvdi_and_adi():
    model, ds = analytic_data()
    r = evaluate(model, ds, eps=[0.3, 0.5], losses=["margin"], random_start=False, steps=100)
    table = robustness_table([("IMA", r)], metric="tvdi")
    assert table.header == ["Noise", "0", "0.3", "0.5"]  # no AUC column (Tables 10-15)
    assert table.rows == [["IMA", "100.00", "73.68", "50.00"]]
    assert table.title.startswith("Total Voxel Dice Index (%) under 100-PGD")
    assert robustness_table([("IMA", r)], metric="adi").title.startswith("Average Dice Index")
    assert robustness_table([("IMA", r)]).header[-1] == "AUC"
    r.tvdi = None
    with pytest.raises(ValueError, match="only segmentation results"):
        robustness_table([("ce", r)], metric="tvdi")
    with pytest.raises(ValueError, match="metric"):
        robustness_table([("ce", r)], metric="dice")


def test_segment_under_attack_for_figures():
    model, ds = analytic_data()
    x, y = ds.x[:2], ds.y[:2]
    state = torch.get_rng_state()
    clean = segment_under_attack(model, x, y, eps=0.0, task=ds.task)
    assert torch.equal(clean.x, x) and clean.dice.tolist() == [1.0, 1.0]
    hit = segment_under_attack(model, x, y, eps=0.5, steps=100, losses=["margin"],
                               random_start=False)
    assert hit.prediction.shape == y.shape and hit.prediction.dtype == torch.long
    with torch.no_grad():
        assert torch.equal(hit.prediction, model(hit.x).argmax(dim=1))
    assert hit.dice.tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    assert ((hit.x - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(TypeError, match="SegmentationTask"):
        from ima.tasks import ClassificationTask

        segment_under_attack(model, x, y, eps=0.5, task=ClassificationTask())
