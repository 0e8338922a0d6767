"""``ima evaluate --attack ...`` and ``ima report --ci`` on a tiny Moons run."""

import csv

import pytest
import yaml

from ima.cli import main
from ima.evaluation import EvaluationResult

CONFIG = {
    "data": {"name": "moons", "n_train": 256, "n_val": 64, "n_test": 64, "batch_size": 64},
    "model": {"name": "moons_mlp"},
    "method": {"name": "ce"},
    "train": {"epochs": 2, "threads": 1},
    "eval": {"eps": [0.0, 0.1, 0.3], "steps": 10},
}

MODEL_CHECKS = ["deterministic", "logits", "gradients", "batch_independent"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-attacks")
    config = root / "moons.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    assert main(["train", "--config", str(config), "--out", str(root / "ce"),
                 "--no-progress"]) == 0
    return root / "ce"


def _load(run, name):
    return EvaluationResult.load(run / "eval" / f"{name}.json")


def test_spsa_on_a_per_class_subset_checked_against_pgd(run, capsys):
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--attack", "spsa", "--per-class", "2", "--steps", "5",
                 "--spsa-samples", "64", "--no-progress"]) == 0
    out = capsys.readouterr().out
    result = _load(run, "spsa-l2-test")
    assert result.n_samples == 4 and result.subset == "first 2 samples of each class"
    assert result.params["steps"] == 5 and result.params["n_samples"] == 64
    assert len(result.indices) == 4 and sorted(result.labels) == [0, 0, 1, 1]
    assert [c["name"] for c in result.checks] == ["monotone", "unbounded", *MODEL_CHECKS,
                                                  "whitebox_vs_blackbox"]
    assert "pgd-l2-test.json" in result.checks[-1]["detail"]
    assert "5-step SPSA" in out and "sensitivity (class 1 positive)" in out
    assert "check whitebox_vs_blackbox:" in out


def test_spsa_defaults_to_ten_per_class(run):
    assert main(["evaluate", str(run), "--attack", "spsa", "--steps", "2", "--spsa-samples",
                 "8", "--eps", "0.1", "--no-checks", "--no-progress"]) == 0
    result = _load(run, "spsa-l2-test-2")
    assert result.n_samples == 20 and result.subset == "first 10 samples of each class"
    assert result.checks == []


@pytest.mark.parametrize("attack", ["uniform-noise", "gaussian-noise", "ddn-min", "bpgd-min"])
def test_other_attacks(run, attack, capsys):
    extra = ["--draws", "3"] if "noise" in attack else ["--steps", "20"]
    assert main(["evaluate", str(run), "--attack", attack, "--max-samples", "32",
                 "--no-progress", *extra]) == 0
    result = _load(run, f"{attack}-l2-test")
    assert result.attack == attack and result.n_samples == 32
    if "noise" in attack:
        assert result.params["draws"] == 3
    else:
        if not (run / "eval" / "pgd-l2-test.json").is_file():
            assert main(["evaluate", str(run), "--no-checks", "--no-progress"]) == 0
        assert main(["report", str(run), "--eval", f"pgd-l2-test,{attack}-l2-test"]) == 0
        assert "ce pgd-l2-test" in capsys.readouterr().out
        assert len(result.radii) == 32
        # accuracy at each eps: clean-correct with a radius above it
        robust = [sum(1 for r, ok in zip(result.radii, result.robust[0], strict=True)
                      if ok and (r is None or r > e)) / 32 for e in result.eps]
        assert result.accuracy == pytest.approx(robust)


def test_art_autoattack_or_its_install_hint(run, capsys):
    code = main(["evaluate", str(run), "--attack", "autoattack-art", "--max-samples", "8",
                 "--eps", "0.1", "--no-checks", "--no-progress"])
    try:
        import art  # noqa: F401
    except ImportError:
        assert code == 1
        assert "pip install 'ima[autoattack]'" in capsys.readouterr().err
    else:
        assert code == 0
        assert _load(run, "autoattack-art-l2-test").n_samples == 8


def test_autoattack_subset_and_version_flags(run, capsys):
    assert main(["evaluate", str(run), "--attack", "autoattack", "--max-samples", "8",
                 "--eps", "0.1", "--aa-attacks", "apgd-ce,fab-t", "--no-checks",
                 "--no-progress"]) == 0
    result = _load(run, "autoattack-l2-test")
    assert result.params["attacks"] == ["apgd-ce", "fab-t"] and result.n_samples == 8
    assert "AutoAttack (apgd-ce+fab-t)" in capsys.readouterr().out
    for flags in (["--aa-attacks", "apgd-ce,apgd-ce"], ["--aa-attacks", "pgd"],
                  ["--aa-version", "fast"], ["--square-queries", "0"], ["--eot", "0"]):
        with pytest.raises(SystemExit):
            main(["evaluate", str(run), "--attack", "autoattack", *flags])
    # a flag of another attack is an error, not ignored
    assert main(["evaluate", str(run), "--attack", "pgd", "--eot", "5", "--no-progress"]) == 1
    assert "not known to attack 'pgd'" in capsys.readouterr().err


def test_report_with_confidence_intervals(run, capsys, tmp_path):
    assert main(["evaluate", str(run), "--eps", "0.1", "--no-checks", "--no-progress"]) == 0
    capsys.readouterr()
    csv_file, md_file = tmp_path / "t.csv", tmp_path / "t.md"
    assert main(["report", str(run), "--eval", "pgd-l2-test", "--ci", "--csv",
                 str(csv_file), "--markdown", str(md_file)]) == 0
    out = capsys.readouterr().out
    assert "Wilson 95 % interval" in out
    assert f"wrote {csv_file}" in out and f"wrote {md_file}" in out  # every file it wrote
    cells = list(csv.reader(csv_file.open()))[1]
    value, interval = cells[1].split(" [")
    lo, hi = (float(v) for v in interval.rstrip("]").split(", "))
    assert lo <= float(value) <= hi


def test_bad_attack_options(run, capsys):
    # the attack checks its own options (the CLI only maps flags to them)
    assert main(["evaluate", str(run), "--attack", "pgd", "--draws", "3"]) == 1
    assert "options 'draws' are not known to attack 'pgd'" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--attack", "ddn-min", "--norm", "linf",
                 "--no-progress"]) == 1
    assert "supports norm 'l2'" in capsys.readouterr().err
