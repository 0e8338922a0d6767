"""``ima train`` end to end on a tiny moons config."""

import subprocess
import sys

import pytest
import yaml

from helpers import EPS_MAX, snapshot, tiny_config
from ima import load_run
from ima.cli import main


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "moons-ima.yaml"
    path.write_text(yaml.safe_dump(tiny_config(epochs=2)))
    return path


def _train(config_file, out, *extra):
    return main(["train", "--config", str(config_file), "--out", str(out), "--no-progress",
                 *extra])


def test_train_writes_a_run_folder(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(config_file, out) == 0
    assert f"trained ima for 2 epochs into {out}" in capsys.readouterr().out
    assert {"config.yaml", "metrics.csv", "checkpoint.pt", "checkpoints/epoch-002.pt"} <= set(
        snapshot(out))
    written = yaml.safe_load((out / "config.yaml").read_text())
    # fully resolved: the derived delta_eps and every default are written out
    assert written["method"]["delta_eps"] == pytest.approx(EPS_MAX / 2)
    assert written["method"]["beta"] == 0.5 and written["method"]["steps"] == 20
    assert written["optim"]["name"] == "adam" and written["data"]["noise"] == 0.2
    assert load_run(out).epoch == 2 and len(load_run(out).metrics()) == 2


def test_existing_run_is_refused_then_resumed(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(config_file, out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert _train(config_file, out) == 1
    err = capsys.readouterr().err
    assert "ima train: error:" in err and "already exists" in err and "--resume" in err
    assert snapshot(out) == before
    # resuming a finished run is a no-op that succeeds (the folder's config decides)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert snapshot(out) == before
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert snapshot(out) == before
    # --overwrite replaces it
    assert _train(config_file, out, "--overwrite", "--set", "train.epochs=1") == 0
    assert load_run(out).epoch == 1


@pytest.mark.parametrize(("override", "named"), [
    ("data.no_such_key=3", "data.no_such_key"),
    ("nosection.key=3", "nosection"),
    ("method.beta=2", "beta"),
])
def test_bad_set_exits_1_naming_the_key(config_file, tmp_path, capsys, override, named):
    assert _train(config_file, tmp_path / "run", "--set", override) == 1
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_set_and_threads_reach_the_config(config_file, tmp_path):
    out = tmp_path / "run"
    assert _train(config_file, out, "--set", "train.epochs=1", "--set", "method.beta=0.25",
                  "--threads", "1") == 0
    config = load_run(out).config
    assert config["train"]["epochs"] == 1 and config["method"]["beta"] == 0.25
    assert config["method"]["delta_eps"] == pytest.approx(EPS_MAX)  # derived from 1 epoch
    assert config["train"]["threads"] == 1


def test_usage_errors_exit_2(config_file, tmp_path, capsys):
    for argv in (["train", "--config", str(config_file)],  # no --out
                 ["train", "--out", str(tmp_path / "x")],  # no --config for a new run
                 # a resumed run runs its stored config, not another file
                 ["train", "--resume", str(tmp_path), "--config", str(config_file)]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_progress_bar_only_when_asked(config_file, tmp_path, capsys):
    assert _train(config_file, tmp_path / "quiet") == 0
    assert "%|" not in capsys.readouterr().err
    assert main(["train", "--config", str(config_file), "--out", str(tmp_path / "bar"),
                 "--set", "train.epochs=1"]) == 0
    assert "%|" in capsys.readouterr().err


def test_console_entry_point(config_file, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "ima", "train", "--config", str(config_file), "--out", str(out),
         "--no-progress", "--set", "train.epochs=1"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "trained ima for 1 epochs" in done.stdout
    assert (out / "checkpoint.pt").is_file() and load_run(out).epoch == 1
