"""Measuring a dataset's class distances before training (noise levels in its units)."""

import math

import pytest
import torch

from ima.analysis.data_scale import measure_data, rms


def test_half_distances_to_the_nearest_other_class_are_exact():
    x = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 3]])
    y = torch.tensor([0, 1, 0])
    scale = measure_data(x, y)
    assert scale.half_distance["l2"] == pytest.approx([0.5, 0.5, math.sqrt(10) / 2])
    assert scale.half_distance["linf"] == pytest.approx([0.5, 0.5, 1.5])
    assert scale.values == 4 and scale.n_samples == 3
    assert scale.eps_max("l2") == pytest.approx(0.5)  # the median
    assert scale.room("linf", 0.6) == pytest.approx(1 / 3)
    assert rms(2.0, 16) == 0.5


def test_subset_levels_and_summary_on_real_digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target)
    scale = measure_data(x, y, bounds=(0.0, 1.0), max_samples=500)
    assert scale.n_samples == 500 and scale.values == 64
    q = scale.quantiles("l2")
    assert 0 < q[0.05] < q[0.5] < q[0.95]
    levels = scale.levels("l2")
    assert levels[0] == 0 and levels[-1] == pytest.approx(q[0.5], rel=1e-2)
    assert [scale.room("l2", e) for e in levels] == sorted(
        [scale.room("l2", e) for e in levels], reverse=True)
    text = scale.summary()
    assert "RMS" in text and "grey levels" in text and "suggested eps_max" in text


def test_bad_inputs():
    with pytest.raises(ValueError, match="two classes"):
        measure_data(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="one label per sample"):
        measure_data(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_samples"):
        measure_data(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), max_samples=1)


def test_measure_command_before_any_training(capsys, tmp_path):
    from pathlib import Path

    from ima.cli import main

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert main(["measure", "--config", str(configs / "digits-ce.yaml"), "--max-samples",
                 "300"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digits (train): 300 samples, 64 input values each")
    assert "suggested eps_max" in out and "RMS" in out
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(SystemExit):
        main(["measure", "--config", str(configs / "shapes-ce.yaml")])
    assert "segmentation dataset" in capsys.readouterr().err


def test_measure_reads_only_the_data_section(capsys, tmp_path):
    """A config whose model is the user's code (not importable here) is measured: the
    model is never imported; a bad data section is still an error."""
    from ima.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: 'no_such_module:net'}\n")
    assert main(["measure", "--config", str(config), "--max-samples", "100"]) == 0
    assert "100 samples, 64 input values" in capsys.readouterr().out
    config.write_text("data: {name: digits, batch_size: 0}\n")
    assert main(["measure", "--config", str(config)]) == 1
    assert "data.batch_size" in capsys.readouterr().err
