"""Trust: nothing the user wrote is lost, nothing runs other than what was asked, and no
code named in someone else's run folder is imported without an opt-in (issue 14)."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

from helpers import snapshot, tiny_config
from ima import load_run, runs, train
from ima.cli import main
from ima.evaluation import EvaluationResult, evaluate, save_result


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch IMA run on moons, with checkpoints after epochs 1 and 2."""
    out = tmp_path_factory.mktemp("trust") / "run"
    train(tiny_config(epochs=2, train={"save_every": 1}), out, progress=False)
    return out


def _copy(run_dir, tmp_path, name="run"):
    import shutil

    target = tmp_path / name
    shutil.copytree(run_dir, target)
    return target


def _cli(*argv):
    return main([*map(str, argv)])


# --- 1, 2: --overwrite ------------------------------------------------------------------


def test_overwrite_refuses_a_project_folder_that_merely_has_a_config_yaml(tmp_path, capsys):
    project = tmp_path / "thesis"
    (project / "src").mkdir(parents=True)
    (project / "config.yaml").write_text("data: {name: moons}\n")
    (project / "thesis.tex").write_text("\\documentclass{article}\n")
    (project / "src" / "model.py").write_text("x = 1\n")
    before = snapshot(project)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=1)))
    assert _cli("train", "--config", config, "--out", project, "--overwrite",
                "--no-progress") == 1
    assert "not an ima run folder" in capsys.readouterr().err
    assert snapshot(project) == before


def test_overwrite_removes_only_what_ima_wrote(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "notes.txt").write_text("mine")
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "my-analysis.ipynb").write_text("{}")
    train(tiny_config(epochs=1), run, overwrite=True, progress=False)
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "eval" / "my-analysis.ipynb").read_text() == "{}"
    assert load_run(run).epoch == 1
    assert not (run / "checkpoints" / "epoch-002.pt").exists()


def test_overwrite_never_follows_links_nor_deletes_files_named_like_ima_files(finished,
                                                                              tmp_path):
    run = _copy(finished, tmp_path)
    outside, outside2 = tmp_path / "outside", tmp_path / "outside2"
    outside.mkdir()
    outside2.mkdir()
    (outside / "precious.json").write_text('{"mine": 1}')
    (outside2 / "a.png").write_text("png")
    import shutil

    shutil.rmtree(run / "eval", ignore_errors=True)
    (run / "eval").symlink_to(outside)
    (run / "figures").symlink_to(outside2)
    (run / "notes.json").symlink_to(outside / "precious.json")
    train(tiny_config(epochs=1), run, overwrite=True, progress=False)
    assert (outside / "precious.json").read_text() == '{"mine": 1}'
    assert (outside2 / "a.png").read_text() == "png"
    assert load_run(run).epoch == 1
    # files in ima's folders with names ima could have used but did not write
    run2 = _copy(finished, tmp_path, "run2")
    for folder in ("eval", "figures", "export"):
        (run2 / folder).mkdir(exist_ok=True)
    (run2 / "eval" / "my-notes.json").write_text("{}")
    (run2 / "figures" / "my-diagram.png").write_text("x")
    (run2 / "export" / "model-epoch-mine.txt").write_text("y")
    train(tiny_config(epochs=1), run2, overwrite=True, progress=False)
    assert (run2 / "eval" / "my-notes.json").read_text() == "{}"
    assert (run2 / "figures" / "my-diagram.png").read_text() == "x"
    assert (run2 / "export" / "model-epoch-mine.txt").read_text() == "y"


def test_overwrite_fails_at_the_first_step_before_deleting_anything(finished, tmp_path):
    # digits images into the Moons MLP: only the first forward pass can tell
    run = _copy(finished, tmp_path)
    before = snapshot(run)
    config = tiny_config(epochs=1, data={"name": "digits", "batch_size": 32})
    for key in ("n_train", "n_val", "n_test"):
        config["data"].pop(key)
    with pytest.raises(ValueError, match="does not fit the data"):
        train(config, run, overwrite=True, progress=False)
    assert snapshot(run) == before
    with pytest.raises(ValueError, match="does not fit the data"):
        train(config, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_the_first_step_trial_leaves_the_run_unchanged(tmp_path, monkeypatch):
    # the trial runs on copies and restores the random state: training equals a run made
    # without the trial (the weights after one epoch match exactly)
    from ima import training

    a = train(tiny_config(epochs=1), tmp_path / "a", progress=False)
    monkeypatch.setattr(training, "try_first_step", lambda *args: None)
    b = train(tiny_config(epochs=1), tmp_path / "b", progress=False)
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items(),
                              strict=True):
        assert torch.equal(v, w), k


def tuple_model():
    return TupleNet()


class TupleNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.linear(x), x


def test_a_model_returning_a_tuple_is_a_one_line_error(tmp_path):
    config = tiny_config(epochs=1, model={"name": "test_trust:tuple_model"})
    with pytest.raises(ValueError, match="one tensor of logits, got a tuple"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.zeros(8, dtype=torch.long))
    with pytest.raises(TypeError, match="one tensor of logits"):
        evaluate(TupleNet(), data, eps=[0.1], bounds=None, checks=False)


# --- 3: a kill while a kept checkpoint is written ----------------------------------------


def test_a_kept_checkpoint_lost_to_a_kill_is_written_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = runs.save_checkpoint

    def killed_at_the_kept_copy(path, payload):
        if Path(path).name == "epoch-002.pt":
            raise KeyboardInterrupt("killed")
        real(path, payload)

    monkeypatch.setattr(runs, "save_checkpoint", killed_at_the_kept_copy)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=3), out, progress=False)
    monkeypatch.setattr(runs, "save_checkpoint", real)
    # the latest never moved past the epoch whose kept copy is missing
    assert runs.load_checkpoint(runs.checkpoint_path(out))["epoch"] == 1
    (out / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / ".epoch-002.pt.a.tmp").write_bytes(b"half")
    train(None, out, resume=True, progress=False)
    assert load_run(out, epoch=2).epoch == 2
    assert sorted(p.name for p in out.rglob(".*.tmp")) == []


def test_resume_writes_a_kept_copy_that_older_versions_lost(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "checkpoints" / "epoch-002.pt").unlink()  # the latest is epoch 2: copy it back
    train(None, run, resume=True, progress=False)
    assert load_run(run, epoch=2).epoch == 2


# --- 4, 5: result files ------------------------------------------------------------------

_QUICK_EVAL = ["--eps", "0,0.1", "--max-samples", "16", "--steps", "3", "--no-progress",
               "--no-checks"]


def test_a_kept_checkpoints_result_has_its_own_file_and_says_its_epoch(finished, tmp_path,
                                                                       capsys):
    run = _copy(finished, tmp_path)
    common = _QUICK_EVAL
    assert _cli("evaluate", run, *common) == 0
    assert _cli("evaluate", run, *common, "--epoch", "1") == 0
    latest = EvaluationResult.load(run / "eval" / "pgd-l2-test.json")
    first = EvaluationResult.load(run / "eval" / "pgd-l2-test-epoch-001.json")
    assert (latest.epoch, latest.checkpoint) == (2, "latest")
    assert (first.epoch, first.checkpoint) == (1, "epoch-001")
    capsys.readouterr()
    assert _cli("report", run) == 0
    assert "(epoch" not in capsys.readouterr().out


def test_a_result_of_another_epoch_is_never_replaced_and_is_labelled(finished, tmp_path,
                                                                     capsys):
    run = _copy(finished, tmp_path)
    common = _QUICK_EVAL
    assert _cli("evaluate", run, *common) == 0
    train(None, run, resume=True, overrides=["train.epochs=3"], progress=False)
    assert _cli("evaluate", run, *common) == 0
    assert EvaluationResult.load(run / "eval" / "pgd-l2-test.json").epoch == 2
    assert EvaluationResult.load(run / "eval" / "pgd-l2-test-2.json").epoch == 3
    capsys.readouterr()
    assert _cli("report", run) == 0
    assert "(epoch 2 of 3)" in capsys.readouterr().out


def _result(seed: int) -> EvaluationResult:
    return EvaluationResult(attack="pgd", norm="l2", split="test", n_samples=1, subset=None,
                            seed=seed, params={}, eps=[0.0], accuracy=[1.0],
                            accuracy_per_loss={}, auc=1.0, robust=[[True]])


def _save_many(args):
    run_dir, first = args
    return [str(save_result(run_dir, _result(seed))) for seed in range(first, first + 25)]


def test_concurrent_evaluations_never_lose_a_result(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_save_many, [(tmp_path, 0), (tmp_path, 1000)])
    files = sorted((tmp_path / "eval").glob("*.json"))
    assert len(files) == 50 == len({p for ps in paths for p in ps})
    assert sorted(EvaluationResult.load(f).seed for f in files) == [
        *range(25), *range(1000, 1025)]


def test_result_files_metrics_and_checkpoints_get_the_mode_of_config_yaml(finished, tmp_path):
    run = _copy(finished, tmp_path, "fresh")
    train(tiny_config(epochs=1), run, overwrite=True, progress=False)
    save_result(run, _result(0))
    mode = stat.S_IMODE((run / "config.yaml").stat().st_mode)
    for name in ("metrics.csv", "checkpoint.pt", "checkpoints/epoch-001.pt",
                 "eval/pgd-l2-test.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == mode, name


# --- 6: a flag given is the value used ---------------------------------------------------


@pytest.mark.parametrize("flag, value", [
    ("--steps", "0"), ("--max-samples", "0"), ("--batch-size", "0"), ("--eps", ""),
    ("--eps", ",,,"), ("--eps", "0,-1"), ("--threads", "0"), ("--per-class", "0"),
    ("--draws", "0"), ("--check-samples", "0"), ("--epoch", "0"), ("--seed", "-1"),
    ("--eps", "nan"),
])
def test_zero_or_empty_values_are_errors_not_defaults(finished, flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        _cli("evaluate", finished, f"{flag}={value}")
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["train", "--config", "x.yaml", "--out", "o", "--threads", "0"],
    ["select", "RUN", "--min-val-acc", "1.5"],
    ["plot", "margins", "RUN", "--bins", "0"],
    ["plot", "samples", "RUN", "--n", "0"],
    ["export", "RUN", "--n-check", "0"],
    ["suggest-eps", "RUN", "--quantile", "2"],
])
def test_zero_values_are_errors_in_every_command(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "Traceback" not in capsys.readouterr().err


# --- 7: resume runs the stored config -----------------------------------------------------


def test_resume_refuses_an_edited_config_naming_the_keys(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("lr: 0.01", "lr: 0.02"))
    before = snapshot(run)
    assert _cli("train", "--resume", run, "--set", "train.epochs=3", "--no-progress") == 1
    err = capsys.readouterr().err
    assert "optim.lr" in err and "0.01 in the checkpoint" in err and "0.02 in config.yaml" in err
    assert snapshot(run) == before


def test_resume_accepts_safe_changes_records_them_and_refuses_the_rest(finished, tmp_path,
                                                                       capsys):
    run = _copy(finished, tmp_path)
    assert _cli("train", "--resume", run, "--set", "method.beta=0.7", "--no-progress") == 1
    assert "method.beta" in capsys.readouterr().err
    assert _cli("train", "--resume", run, "--set", "train.epochs=3", "--threads", "1",
                "--no-progress") == 0
    resumed = load_run(run)
    assert resumed.epoch == 3 and resumed.config["train"]["epochs"] == 3
    assert "# resumed after epoch 2 with --set train.epochs=3 (was 2)" in (
        run / "config.yaml").read_text()
    changes = runs.load_checkpoint(run / "checkpoint.pt")["config_changes"]
    assert changes == [{"after_epoch": 2, "changes": {"train.epochs": [2, 3]}}]
    # the derived delta_eps keeps its stored value: the margins' schedule is unchanged
    assert resumed.config["method"]["delta_eps"] == pytest.approx(0.15)
    # the rewritten config.yaml is the stored config: a plain resume accepts it
    assert _cli("train", "--resume", run, "--no-progress") == 0


def test_resume_refuses_fewer_epochs_and_epochs_that_would_change_the_schedule(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(epochs=2, optim={"schedule": "cosine"}), out, progress=False)
    with pytest.raises(ValueError, match="cosine"):
        train(None, out, resume=True, overrides=["train.epochs=4"], progress=False)
    with pytest.raises(ValueError, match="fewer than the 2 epochs"):
        train(None, out, resume=True, overrides=["train.epochs=1"], progress=False)


# --- 8: report labels and AUCs ------------------------------------------------------------


def test_report_labels_are_unique_and_aucs_over_different_levels_are_not_mixed(
        finished, tmp_path, capsys):
    a, b = _copy(finished, tmp_path / "a"), _copy(finished, tmp_path / "b")
    common = ["--max-samples", "16", "--steps", "3", "--no-progress", "--no-checks"]
    assert _cli("evaluate", a, "--eps", "0,0.1,0.2", *common) == 0
    assert _cli("evaluate", b, "--eps", "0,0.1", *common) == 0
    capsys.readouterr()
    assert _cli("report", a, b) == 0
    out = capsys.readouterr().out
    assert "| a/run " in out and "| b/run " in out
    assert "AUC over the levels all rows share (0, 0.1)" in out


# --- 10: no code from someone else's run folder -------------------------------------------


def test_opening_a_run_folder_that_names_code_needs_an_opt_in(finished, tmp_path, capsys,
                                                              monkeypatch):
    run = _copy(finished, tmp_path)
    marker = tmp_path / "ran"
    (tmp_path / "evil_factory.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from ima.models import build_model\n"
        "def model(**kw):\n    return build_model('moons_mlp')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["name"] = "evil_factory:model"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for argv in (["evaluate", run, "--max-samples", "4", "--no-progress"],
                 ["train", "--resume", run, "--no-progress"],
                 ["plot", "margins", run], ["suggest-eps", run], ["export", run]):
        assert _cli(*argv) == 1, argv
        err = capsys.readouterr().err
        assert "evil_factory" in err and "--trust-code" in err, argv
    assert not marker.exists()
    with pytest.raises(PermissionError, match="evil_factory"):
        load_run(run)
    assert load_run(run, trust_code=True).epoch == 2 and marker.exists()
    monkeypatch.setenv(runs.TRUST_CODE_ENV, "1")
    assert load_run(run).epoch == 2


def test_a_users_own_config_may_name_their_code(tmp_path):
    config = tiny_config(epochs=1, model={"name": "helpers_models:moons_mlp"})
    (tmp_path / "helpers_models.py").write_text(
        "from ima.models import build_model\n"
        "def moons_mlp():\n    return build_model('moons_mlp')\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        assert train(config, tmp_path / "run", progress=False).epoch == 1
    finally:
        sys.path.remove(str(tmp_path))


# --- one-line errors instead of tracebacks -------------------------------------------------


def test_device_cuda_without_cuda_is_a_one_line_error(finished, capsys):
    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    assert _cli("evaluate", finished, "--device", "cuda") == 1
    assert "sees no CUDA device" in capsys.readouterr().err


def test_checkpoint_of_another_model_or_method(finished, tmp_path, capsys):
    other = tmp_path / "other"
    train(tiny_config(epochs=1, model={"name": "moons_mlp", "num_classes": 3}), other,
          progress=False)
    run = _copy(finished, tmp_path)
    os.replace(other / "checkpoint.pt", run / "checkpoint.pt")
    assert _cli("evaluate", run, "--no-progress") == 1
    assert "weights of another model" in capsys.readouterr().err
    # resuming compares the checkpoint's config with config.yaml first
    assert _cli("train", "--resume", run, "--no-progress", "--set", "train.epochs=3") == 1
    assert "model.num_classes" in capsys.readouterr().err
    ce = tmp_path / "ce"
    train(tiny_config("ce", epochs=1), ce, progress=False)
    run = _copy(finished, tmp_path, "run2")
    os.replace(ce / "checkpoint.pt", run / "checkpoint.pt")
    assert _cli("evaluate", run, "--no-progress") == 1
    assert "does not hold the state of method 'ima'" in capsys.readouterr().err


def test_out_below_a_file_or_unwritable(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=1)))
    (tmp_path / "afile").write_text("x")
    assert _cli("train", "--config", config, "--out", tmp_path / "afile" / "run",
                "--no-progress") == 1
    assert "is a file" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert _cli("train", "--config", config, "--out", locked / "run", "--no-progress") == 1
        assert "permission" in capsys.readouterr().err


def test_output_files_naming_a_folder(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    assert _cli("evaluate", run, "--max-samples", "8", "--steps", "2", "--no-progress",
                "--no-checks") == 0
    for argv in (["report", run, "--csv", tmp_path], ["export", run, "--out", tmp_path]):
        with pytest.raises(SystemExit) as exc:
            _cli(*argv)
        assert exc.value.code == 2 and "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["[1, 2, 3]", '{"hello": "world"}', "not json"])
def test_a_foreign_json_file_in_eval_breaks_nothing(finished, tmp_path, content, capsys):
    run = _copy(finished, tmp_path)
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "notes.json").write_text(content)
    assert _cli("evaluate", run, "--max-samples", "8", "--steps", "2", "--no-progress") == 0
    assert _cli("report", run) == 0
    assert _cli("report", run, "--eval", "notes") == 1
    assert "not" in capsys.readouterr().err


def test_corrupt_metrics_on_resume(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    (run / "metrics.csv").write_text("epoch,loss\n1,0.5\ngarbage\x00,,,\n")
    assert _cli("train", "--resume", run, "--set", "train.epochs=3", "--no-progress") == 1
    assert "metrics.csv" in capsys.readouterr().err


def test_binary_config_file_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_bytes(bytes(range(256)))
    assert _cli("train", "--config", config, "--out", tmp_path / "o", "--no-progress") == 1
    err = capsys.readouterr().err
    assert "c.yaml" in err and "Traceback" not in err


@pytest.mark.parametrize("raw", ["[1, 2]", "42"])
def test_a_yaml_list_or_scalar_with_set_or_threads(tmp_path, capsys, raw):
    config = tmp_path / "c.yaml"
    config.write_text(raw)
    for extra in (["--set", "train.epochs=1"], ["--threads", "1"]):
        assert _cli("train", "--config", config, "--out", tmp_path / "o", "--no-progress",
                    *extra) == 1
        assert "mapping" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.uint8])
def test_evaluate_refuses_inputs_of_another_dtype(dtype):
    x = (torch.rand(8, 4) * (255 if dtype == torch.uint8 else 1)).to(dtype)
    data = torch.utils.data.TensorDataset(x, torch.zeros(8, dtype=torch.long))
    with pytest.raises(TypeError, match=str(dtype).replace("torch.", "")):
        evaluate(_Linear(), data, eps=[0.1], checks=False)


def test_evaluate_eps_forms():
    data = torch.utils.data.TensorDataset(torch.rand(8, 4), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one noise level"):
        evaluate(_Linear(), data, eps=[], checks=False)
    with pytest.raises(ValueError, match="at least one noise level"):
        evaluate(_Linear(), data, eps=torch.tensor([]), checks=False)
    model = _Linear()
    from_tensor = evaluate(model, data, eps=torch.tensor([0.1, 0.2], dtype=torch.float64),
                           steps=3, checks=False)
    from_list = evaluate(model, data, eps=[0.1, 0.2], steps=3, checks=False)
    assert from_tensor.eps == from_list.eps == [0.0, 0.1, 0.2]
    assert from_tensor.accuracy == from_list.accuracy


def test_foreign_result_json_loads_with_a_clear_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="not an ima evaluation result"):
        EvaluationResult.load(path)


_RESUME_SETTINGS = dict(eps=[0.0, 0.1], max_samples=64, steps=3, batch_size=16,
                        checks=False)


def _killed_evaluation(run, monkeypatch):
    """Run evaluate_run on ``run`` (4 batches of 16, one per pool) and kill it at the
    third batch; return the real PGD attack method."""
    from ima.evaluation import attacks, evaluate_run

    monkeypatch.setattr("ima.evaluation.inputs.POOL_BATCHES", 1)
    real, seen = attacks.PGDAttack.attack, []

    def killed(self, *args):
        if len(seen) == 2:
            raise KeyboardInterrupt("killed")
        seen.append(1)
        return real(self, *args)

    monkeypatch.setattr(attacks.PGDAttack, "attack", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run, **_RESUME_SETTINGS)
    monkeypatch.setattr(attacks.PGDAttack, "attack", real)
    return real


def test_evaluate_run_resumes_a_killed_evaluation_of_a_run_folder(finished, tmp_path,
                                                                   monkeypatch):
    from ima.evaluation import evaluate_run

    run = _copy(finished, tmp_path)
    whole, _ = evaluate_run(run, save=False, **_RESUME_SETTINGS)
    _killed_evaluation(run, monkeypatch)
    assert len(list((run / "eval").glob(".partial-*.pt"))) == 1
    result, path = evaluate_run(run, **_RESUME_SETTINGS)
    assert result.robust == whole.robust and path.name == "pgd-l2-test.json"
    assert result.epoch == 2 and result.checkpoint == "latest"
    assert list((run / "eval").glob(".partial-*.pt")) == []


def test_a_resumed_evaluation_never_mixes_precisions(finished, tmp_path, monkeypatch):
    from ima.evaluation import attacks, evaluate_run

    run = _copy(finished, tmp_path)
    real = _killed_evaluation(run, monkeypatch)
    calls = []
    monkeypatch.setattr(attacks.PGDAttack, "attack",
                        lambda self, *a: calls.append(1) or real(self, *a))
    evaluate_run(run, precision="bf16", **_RESUME_SETTINGS)
    assert len(calls) == 4  # every batch again: the fp32 batches are not reused


def test_select_reuses_only_results_of_the_same_precision(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    assert _cli("evaluate", run, "--epoch", "1", "--precision", "bf16", "--eps", "0,0.1",
                "--steps", "2", "--no-checks", "--no-progress") == 0
    from ima.analysis import evaluate_checkpoints

    results = evaluate_checkpoints(run, eps=[0.0, 0.1], steps=2)
    assert results[1].params.get("precision", "fp32") == "fp32"


def test_more_empty_values_are_errors(finished, capsys):
    for argv in (["plot", "curves", finished, "--out", ""],
                 ["train", "--resume", ""], ["train", "--config", "", "--out", "x"]):
        with pytest.raises(SystemExit) as exc:
            _cli(*argv)
        assert exc.value.code == 2 and "empty" in capsys.readouterr().err, argv


def test_steps_for_an_attack_without_iterations_is_an_error(finished, capsys):
    assert _cli("evaluate", finished, "--attack", "uniform-noise", "--steps", "999",
                "--no-progress") == 1
    assert "has no iterations" in capsys.readouterr().err


def test_config_refuses_eval_settings_that_would_fail_later():
    from ima.config import resolve_config

    base = {"data": {"name": "moons"}, "model": {"name": "moons_mlp"}}
    for bad, named in (({"attack": "bogus"}, "eval.attack"), ({"split": None}, "eval.split"),
                       ({"eps": []}, "eval.eps")):
        with pytest.raises(ValueError, match=named):
            resolve_config({**base, "eval": bad})


def test_a_module_in_the_current_folder_never_shadows_an_installed_one(finished, tmp_path,
                                                                        monkeypatch):
    import subprocess
    import sys

    marker = tmp_path / "shadowed"
    (tmp_path / "matplotlib.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    # the console script (``python -m`` puts the current folder first by itself)
    script = Path(sys.executable).parent / "ima"
    if not script.is_file():
        pytest.skip("no ima console script beside this Python")
    done = subprocess.run([str(script), "plot", "curves", str(finished),
                           "--out", str(tmp_path / "c")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


def test_the_same_folder_twice_gets_two_labels(finished):
    from ima.reporting.tables import unique_labels

    labels = unique_labels([finished, finished])
    assert len(set(labels)) == 2 and not any(label.startswith("//") for label in labels)


def test_a_run_from_before_a_config_key_existed_resumes(tmp_path):
    """A run whose stored config lacks keys added since (here the class names and the
    positive class) resumes: the stored config is resolved again, the new keys taking
    their defaults, instead of being taken for an edited config.yaml."""
    out = tmp_path / "run"
    train(tiny_config(epochs=1), out, progress=False)
    path = out / "checkpoint.pt"
    payload = runs.load_checkpoint(path)
    for section, key in (("data", "class_names"), ("eval", "positive_class")):
        del payload["config"][section][key]
    torch.save(payload, path)
    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["data"]["class_names"], old["eval"]["positive_class"]
    (out / "config.yaml").write_text(yaml.safe_dump(old))
    resumed = train(None, out, resume=True, overrides=["train.epochs=2"], progress=False)
    assert resumed.epoch == 2
