"""The CLI end to end: train, evaluate and report on a small Moons config."""

import csv

import pytest
import yaml

from ima.cli import main
from ima.evaluation import EvaluationResult

CONFIG = {
    "data": {"name": "moons", "n_train": 256, "n_val": 64, "n_test": 64, "batch_size": 64},
    "model": {"name": "moons_mlp"},
    "method": {"name": "ima", "eps_max": 0.3},
    "train": {"epochs": 2, "threads": 1},
    "eval": {"eps": [0.0, 0.1, 0.3], "steps": 10},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for method in ("ce", "ima"):
        config = root / f"moons-{method}.yaml"
        method_section = CONFIG["method"] if method == "ima" else {"name": "ce"}
        config.write_text(yaml.safe_dump({**CONFIG, "method": method_section}))
        code = main(["train", "--config", str(config), "--out", str(root / method),
                     "--no-progress"])
        assert code == 0
    return root


def test_train_evaluate_report(runs, capsys, tmp_path):
    for method in ("ce", "ima"):
        assert main(["evaluate", str(runs / method), "--no-progress"]) == 0
        result = EvaluationResult.load(runs / method / "eval" / "pgd-l2-test.json")
        assert result.eps == [0.0, 0.1, 0.3] and result.n_samples == 64
        assert result.params["steps"] == 10
    out = capsys.readouterr().out
    assert "| Noise | 0" in out and "pgd-l2-test.json" in out

    csv_file, md_file = tmp_path / "t.csv", tmp_path / "t.md"
    assert main(["report", str(runs / "ce"), str(runs / "ima"), "--csv", str(csv_file),
                 "--markdown", str(md_file)]) == 0
    out = capsys.readouterr().out
    rows = list(csv.reader(csv_file.open()))
    assert rows[0] == ["Noise", "0", "0.1", "0.3", "AUC"]
    assert [r[0] for r in rows[1:]] == ["ce", "ima"]
    for row in rows[1:]:
        values = [float(v) for v in row[1:4]]
        assert all(0 <= v <= 100 for v in values) and values == sorted(values, reverse=True)
    assert md_file.read_text() in out + "\n" or md_file.read_text().strip() in out


def test_evaluate_options_and_errors(runs, capsys):
    assert main(["evaluate", str(runs / "ima"), "--eps", "0,0.2", "--max-samples", "16",
                 "--steps", "5", "--no-progress"]) == 0
    # different settings never overwrite the first evaluation
    result = EvaluationResult.load(runs / "ima" / "eval" / "pgd-l2-test-2.json")
    assert result.n_samples == 16 and result.subset == "first 16 samples"
    assert main(["report", str(runs / "ce"), "--eval", "nothing-here"]) == 1
    assert "has no evaluation 'nothing-here'" in capsys.readouterr().err
    assert main(["evaluate", str(runs / "missing"), "--no-progress"]) == 1
    with pytest.raises(SystemExit):
        main(["evaluate", str(runs / "ima"), "--eps", "a,b"])


def test_evaluate_speed_options_are_recorded_and_bad_devices_refused(runs, capsys, tmp_path):
    def newest():
        files = (runs / "ce" / "eval").glob("pgd-l2-test*.json")
        return EvaluationResult.load(max(files, key=lambda f: f.stat().st_mtime_ns))

    common = ["evaluate", str(runs / "ce"), "--device", "cpu", "--eps", "0,0.1,0.3",
              "--no-progress"]
    assert main(common) == 0
    plain = newest()
    assert "precision" not in plain.params
    assert main([*common, "--precision", "bf16", "--channels-last"]) == 0
    fast = newest()
    assert fast.params["precision"] == "bf16" and fast.params["channels_last"] is True
    # bf16 on a 2-D MLP: the same accuracies within a few of the 64 samples
    assert all(abs(a - b) <= 3 / 64 for a, b in zip(plain.accuracy, fast.accuracy,
                                                      strict=True))
    assert main(["evaluate", str(runs / "ce"), "--device", "nonsense", "--no-progress"]) == 1
    assert "not a valid torch device" in capsys.readouterr().err
    assert main(["evaluate", str(runs / "ce"), "--precision", "fp16", "--device", "cpu",
                 "--no-progress"]) == 1
    assert "needs a CUDA device" in capsys.readouterr().err
