"""Models trained elsewhere (issue: models trained elsewhere cannot reach the CLI):
``ima import-model`` and ``ima.import_model`` make a run folder from a user's factory and
its state_dict, every command reads it, bad weights are one-line errors that leave no
folder, and nothing existing is overwritten."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml

import ima
from helpers import snapshot
from ima import runs
from ima.cli import main
from ima.evaluation import EvaluationResult, save_result
from user_code import trained, write_user_module

MODULE = "import_model_user_code"
QUICK_EVAL = ["--max-samples", "12", "--steps", "2", "--no-checks", "--no-progress"]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's folder: their module, a config naming it, and state_dicts saved by
    their own script (the exact weights, a 4-class model's, a DataParallel-style one
    and a whole pickled model)."""
    folder = tmp_path_factory.mktemp("user")
    sys.path.insert(0, str(folder))
    module = write_user_module(folder, MODULE)
    model = trained(module)
    torch.save(model.state_dict(), folder / "weights.pt")
    torch.save(trained(module, 4).state_dict(), folder / "weights-4.pt")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()},
               folder / "weights-module.pt")
    torch.save(model, folder / "whole-model.pt")
    config = {"data": {"name": f"{MODULE}:bars"}, "model": {"name": f"{MODULE}:small_cnn"},
              "eval": {"eps": [0.0, 0.5, 1.0], "steps": 3}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    yield folder, module, config
    sys.path.remove(str(folder))


def _import(folder, out, weights="weights.pt", *extra):
    return main(["import-model", "--config", str(folder / "config.yaml"), "--weights",
                 str(folder / weights), "--out", str(out), *extra])


def _cli(*argv):
    return main(["--trust-code", *map(str, argv)])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_imported_model_is_a_run_folder_every_command_reads(user, tmp_path, capsys,
                                                               monkeypatch):
    folder, module, _ = user
    out = tmp_path / "mine"
    assert _import(folder, out) == 0
    printed = capsys.readouterr().out
    assert f"imported {MODULE}:small_cnn" in printed and "--trust-code" in printed
    assert sorted(snapshot(out)) == [".ima-run", "checkpoint.pt", "config.yaml"]
    marker = json.loads((out / ".ima-run").read_text())
    assert marker["imported_from"] == str((folder / "weights.pt").resolve())
    assert runs.imported_from(out) == marker["imported_from"]

    run = ima.load_run(out, trust_code=True)
    assert run.epoch == 0 and run.metrics() == [] and run.config["method"]["name"] == "ce"
    x = torch.rand(5, 1, 6, 6)
    torch.testing.assert_close(run.model(x), trained(module)(x), rtol=0, atol=0)

    assert _cli("evaluate", out, *QUICK_EVAL) == 0
    result = EvaluationResult.load(out / "eval" / "pgd-l2-test.json")
    assert (result.epoch, result.checkpoint, result.n_samples) == (0, "latest", 12)
    assert result.accuracy[0] == 1.0  # the weights classify every clean image
    capsys.readouterr()
    assert _cli("report", out) == 0
    assert "| mine " in capsys.readouterr().out
    assert _cli("plot", "noise", out) == 0
    assert (out / "figures" / "noise.png").is_file()
    assert _cli("export", out) == 0
    assert (out / "export" / "model-epoch-000.pt").is_file()
    # the config names the user's code: opening the folder needs the opt-in
    capsys.readouterr()
    monkeypatch.delenv(runs.TRUST_CODE_ENV)
    assert main(["evaluate", str(out), *QUICK_EVAL]) == 1
    assert "--trust-code" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv, said", [
    (["select", "{out}", "--min-val-acc", "0.5"], "select chooses among the checkpoints"),
    (["plot", "curves", "{out}"], "no training metrics"),
    (["train", "--resume", "{out}", "--no-progress"], "--init-from"),
    (["suggest-eps", "{out}"], "no margins"),
])
def test_commands_that_need_training_say_so_in_one_line(user, tmp_path, capsys, argv, said):
    out = tmp_path / "mine"
    assert _import(user[0], out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert _cli(*[a.format(out=out) for a in argv]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "imported by `ima import-model`" in line and said in line
    assert snapshot(out) == before


@pytest.mark.parametrize("weights, extra, said", [
    ("weights-module.pt", [], "missing: conv.weight, conv.bias, head.weight and 1 more; "
     "unexpected: module.conv.weight"),
    ("weights-4.pt", [], "shape mismatch: head.weight (4, 2) in the weights, (3, 2) in the "
     "model"),
    ("weights-4.pt", ["--set", "model.num_classes=4"], "gives 4 classes but data "
     f"'{MODULE}:bars' has 3"),
    ("whole-model.pt", [], "a whole pickled model (torch.save(model)) is not supported"),
    ("config.yaml", [], "is not a file torch.save wrote"),
])
def test_bad_weights_are_one_line_errors_and_leave_no_folder(user, tmp_path, capsys,
                                                             weights, extra, said):
    out = tmp_path / "mine"
    assert _import(user[0], out, weights, *extra) == 1
    assert said in _one_line(capsys.readouterr().err)
    assert not out.exists()


def test_an_existing_folder_is_never_overwritten(user, tmp_path, capsys):
    folder = user[0]
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    before = snapshot(project)
    for extra in ([], ["--overwrite"]):
        assert _import(folder, project, "weights.pt", *extra) == 1
        assert "project" in _one_line(capsys.readouterr().err)
        assert snapshot(project) == before
    out = tmp_path / "mine"
    assert _import(folder, out) == 0
    (out / "notes.txt").write_text("kept")
    before = snapshot(out)
    assert _import(folder, out) == 1
    assert "already exists" in _one_line(capsys.readouterr().err)
    assert snapshot(out) == before
    # --overwrite replaces an ima run folder, keeping what ima did not write
    assert _import(folder, out, "weights.pt", "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "kept"


def test_python_import_of_a_model_instance(user, tmp_path):
    _, module, config = user
    model = trained(module)
    run = ima.import_model(config, model=model, out=tmp_path / "mine")
    assert run.epoch == 0 and model.training is False
    assert "SmallCNN passed to ima.import_model" in runs.imported_from(run.dir)
    x = torch.rand(4, 1, 6, 6)
    torch.testing.assert_close(run.model(x), model(x), rtol=0, atol=0)
    # a factory that builds another network than the one passed
    other = module.Doubled()
    other.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="different outputs"):
        ima.import_model(config, model=other, out=tmp_path / "other")
    with pytest.raises(TypeError, match="not both"):
        ima.import_model(config, tmp_path / "w.pt", tmp_path / "x", model=model)
    with pytest.raises(ValueError, match="method.name 'ima'"):
        ima.import_model({**config, "method": {"name": "ima", "eps_max": 1.0}}, model=model,
                         out=tmp_path / "x")
    assert not (tmp_path / "other").exists() and not (tmp_path / "x").exists()


def test_a_result_of_ima_evaluate_reaches_report_and_plot(user, tmp_path, capsys):
    """The README's route: a model evaluated in one's own script, its result saved into
    the imported run folder, then reported and plotted by the CLI."""
    _, module, config = user
    run = ima.import_model(config, model=trained(module), out=tmp_path / "mine")
    result = ima.evaluate(run.model, run.dataset("test"), eps=[0.5], steps=2,
                          split_name="test", checks=False)
    path = save_result(run.dir, result)
    assert path == run.dir / "eval" / "pgd-l2-test.json"
    capsys.readouterr()
    assert _cli("report", run.dir) == 0
    assert "| mine " in capsys.readouterr().out
    assert _cli("plot", "noise", run.dir, "--out", tmp_path / "noise.png") == 0
    assert (tmp_path / "noise.pdf").is_file()
