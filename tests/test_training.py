"""The training loop and run folders: resume, bad input, checkpoints, warm start."""

import shutil
from collections import OrderedDict

import pytest
import torch

import ima
import ima.runs as runs
import ima.training as training
from helpers import EPS_MAX, Payload, assert_same_state, snapshot, tiny_config
from ima import load_run, train
from ima.data import build_dataset

STEP = {"optim": {"schedule": "step", "milestones": [3]}}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Uninterrupted 4-epoch IMA runs (plain and with a step schedule)."""
    root = tmp_path_factory.mktemp("base")
    return {
        "none": train(tiny_config(), root / "none", progress=False).dir,
        "step": train(tiny_config(**STEP), root / "step", progress=False).dir,
    }


def _crash(monkeypatch, where):
    """Make the run die in epoch 3 at ``where`` (as a killed process would)."""

    class Killed(Exception):
        pass

    if where == "mid-epoch":  # after the epoch's training steps, before anything is saved
        calls = []
        real = training.clean_accuracy

        def fake(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise Killed
            return real(*args, **kwargs)

        monkeypatch.setattr(training, "clean_accuracy", fake)
    elif where == "before-metrics":
        real = training._write_metrics

        def fake(run_dir, rows):
            if len(rows) == 3:
                raise Killed
            return real(run_dir, rows)

        monkeypatch.setattr(training, "_write_metrics", fake)
    else:  # "before-checkpoint": metrics of epoch 3 written, its checkpoint not
        real = runs.save_checkpoint

        def fake(path, payload):
            if payload["epoch"] == 3:
                raise Killed
            return real(path, payload)

        monkeypatch.setattr(runs, "save_checkpoint", fake)
    return Killed


def _assert_same_run(a, b):
    ra, rb = load_run(a), load_run(b)
    assert ra.epoch == rb.epoch == 4
    assert_same_state(ra.model.state_dict(), rb.model.state_dict(), "model")
    assert torch.equal(ra.method.margins.margins, rb.method.margins.margins)
    ca, cb = runs.load_checkpoint(runs.checkpoint_path(a)), runs.load_checkpoint(
        runs.checkpoint_path(b))
    for key in ("optimizer", "scheduler", "method", "rng"):
        assert_same_state(ca[key], cb[key], key)
    ma, mb = ra.metrics(), rb.metrics()
    assert [r["epoch"] for r in ma] == [r["epoch"] for r in mb] == [1, 2, 3, 4]
    for row_a, row_b in zip(ma, mb, strict=True):
        assert row_a.keys() == row_b.keys()
        assert {k: v for k, v in row_a.items() if k != "time_s"} == {
            k: v for k, v in row_b.items() if k != "time_s"}


@pytest.mark.parametrize("schedule", ["none", "step"])
@pytest.mark.parametrize("where", ["mid-epoch", "before-metrics", "before-checkpoint"])
def test_resume_after_a_crash_equals_an_uninterrupted_run(base, tmp_path, monkeypatch,
                                                           schedule, where):
    config = tiny_config(**STEP) if schedule == "step" else tiny_config()
    with monkeypatch.context() as m:
        killed = _crash(m, where)
        with pytest.raises(killed):
            train(config, tmp_path / "run", progress=False)
    assert load_run(tmp_path / "run").epoch == 2
    # the config argument is ignored on resume: the folder's own config.yaml is used
    run = train(None, tmp_path / "run", resume=True, progress=False)
    assert run.epoch == 4
    _assert_same_run(base[schedule], tmp_path / "run")
    if schedule == "step":  # lr 0.01 until the milestone after epoch 3, then 0.001
        assert [r["lr"] for r in run.metrics()] == pytest.approx([0.01, 0.01, 0.01, 0.001])


def test_resuming_a_finished_run_changes_nothing(base, tmp_path):
    shutil.copytree(base["none"], tmp_path / "run")
    before = snapshot(tmp_path / "run")
    run = train(None, tmp_path / "run", resume=True, progress=False)
    assert run.epoch == 4
    assert snapshot(tmp_path / "run") == before


# --- bad input: a clear error, and nothing written or overwritten -------------------------

BAD_CONFIGS = {
    "beta": (tiny_config(method={"beta": 1.5}), ValueError, "beta"),
    "eps_max": (tiny_config(method={"eps_max": 0.0}), ValueError, "eps_max"),
    "method": (tiny_config(method={"name": "no_such_method"}), ValueError, "no_such_method"),
    "optimizer": (tiny_config(optim={"name": "rmsprop"}), ValueError, "optim.name"),
    "train key": (tiny_config(train={"epoch": 3}), ValueError, "train.epoch"),
    "data key": (tiny_config(data={"n_trian": 3}), ValueError, "data.n_trian"),
    "model key": (tiny_config(model={"width": 3}), ValueError, "model.width"),
    "method key": (tiny_config(method={"eps": 0.1}), ValueError, "eps"),
    "section": ({**tiny_config(), "trian": {"epochs": 3}}, ValueError, "trian"),
    "nan data": ({**tiny_config(), "data": {"name": "helpers:nan_data"}}, ValueError, "NaN"),
}


@pytest.fixture
def existing(base, tmp_path):
    """A copy of a finished run, and a snapshot of its files."""
    shutil.copytree(base["none"], tmp_path / "run")
    return tmp_path / "run", snapshot(tmp_path / "run")


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_refused_before_any_file_is_touched(case, existing, tmp_path):
    config, error, match = BAD_CONFIGS[case]
    run_dir, before = existing
    with pytest.raises(error, match=match):
        train(config, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    # not even --overwrite may wipe the old run when the new one cannot start
    with pytest.raises(error, match=match):
        train(config, run_dir, overwrite=True, progress=False)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(("override", "match"), [
    ("train.no_such_key=1", "train.no_such_key"),
    ("no_section.key=1", "no_section"),
    ("train.epochs", "section.key=value"),
    ("method.beta=-1", "beta"),
])
def test_bad_override(override, match, existing):
    run_dir, before = existing
    with pytest.raises(ValueError, match=match):
        train(tiny_config(), run_dir, overwrite=True, overrides=[override], progress=False)
    assert snapshot(run_dir) == before


def test_existing_run_is_never_overwritten_unless_asked(existing):
    run_dir, before = existing
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        train(tiny_config(), run_dir, progress=False)
    assert snapshot(run_dir) == before
    with pytest.raises(ValueError, match="not both"):
        runs.prepare_run_dir(run_dir, resume=True, overwrite=True)
    assert snapshot(run_dir) == before


def test_overwrite_replaces_a_run(existing):
    run_dir, before = existing
    run = train(tiny_config("ce", epochs=1), run_dir, overwrite=True, progress=False)
    assert run.epoch == 1 and run.config["method"] == {"name": "ce"}
    assert sorted(snapshot(run_dir)) == [".ima-run", "checkpoint.pt", "checkpoints/epoch-001.pt",
                                         "config.yaml", "metrics.csv"]


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    before = snapshot(folder)
    with pytest.raises(FileExistsError, match="not an ima run folder"):
        train(tiny_config(), folder, overwrite=True, progress=False)
    assert snapshot(folder) == before


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        train(None, tmp_path, resume=True, progress=False)


def test_missing_checkpoint_epoch(base):
    with pytest.raises(FileNotFoundError, match=r"epoch 99.*epoch-002\.pt"):
        load_run(base["none"], epoch=99)


def test_corrupt_checkpoint(existing):
    run_dir, _ = existing
    (run_dir / "checkpoint.pt").write_bytes(b"\x00garbage, not a checkpoint" * 10)
    before = snapshot(run_dir)
    with pytest.raises(ValueError, match="corrupt"):
        load_run(run_dir)
    with pytest.raises(ValueError, match="corrupt"):
        train(None, run_dir, resume=True, progress=False)
    assert snapshot(run_dir) == before
    (run_dir / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="corrupt"):
        load_run(run_dir)


def test_checkpoint_that_would_run_code_is_refused(existing, tmp_path):
    run_dir, _ = existing
    marker = tmp_path / "code-ran"
    torch.save({"format": runs.CHECKPOINT_FORMAT, "epoch": 4, "model": Payload(marker)},
               run_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a safe ima checkpoint"):
        load_run(run_dir)
    with pytest.raises(ValueError, match="not a safe ima checkpoint"):
        train(tiny_config(), tmp_path / "warm", init_from=run_dir, progress=False)
    assert not marker.exists()
    # the file really is dangerous: an unsafe load runs its code
    torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert marker.exists()


def test_file_of_another_format_is_refused(existing):
    run_dir, _ = existing
    torch.save({"model": {}}, run_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match="not an ima checkpoint"):
        load_run(run_dir)


# --- what a run folder holds ------------------------------------------------------------

def test_checkpoints_every_save_every_epochs_and_load_run_by_epoch(base, tmp_path):
    run_dir = base["none"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "epoch-002.pt", "epoch-004.pt"]
    # The truth for epoch 2: a separate 2-epoch run with the same delta_eps (which the
    # 4-epoch run derived as eps_max / 4) follows the same path for its 2 epochs.
    short = train(tiny_config(epochs=2, method={"delta_eps": EPS_MAX / 4}), tmp_path / "short",
                  progress=False)
    at2 = load_run(run_dir, epoch=2)
    assert at2.epoch == 2 and not at2.model.training
    assert_same_state(at2.model.state_dict(), short.model.state_dict(), "model")
    assert torch.equal(at2.method.margins.margins, short.method.margins.margins)
    assert [r["loss"] for r in short.metrics()] == [r["loss"] for r in at2.metrics()[:2]]
    latest = load_run(run_dir)
    assert latest.epoch == 4
    assert_same_state(latest.model.state_dict(), load_run(run_dir, epoch=4).model.state_dict())
    assert not torch.equal(latest.model[0].weight, at2.model[0].weight)


def _non_plain(obj, where="checkpoint"):
    """Paths of the values that are neither tensors nor plain Python values."""
    # OrderedDict (model state dicts) is in the weights_only allowlist of every torch;
    # other dict subclasses, such as Counter, are not
    if type(obj) in (dict, OrderedDict):
        return [w for k, v in obj.items() if type(k) in (str, int)
                for w in _non_plain(v, f"{where}[{k!r}]")] + [
            f"{where} key {k!r}" for k in obj if type(k) not in (str, int)]
    if type(obj) in (list, tuple):
        return [w for i, v in enumerate(obj) for w in _non_plain(v, f"{where}[{i}]")]
    if isinstance(obj, torch.Tensor) or obj is None or type(obj) in (str, int, float, bool):
        return []
    return [f"{where}: {type(obj).__name__}"]


@pytest.mark.parametrize("schedule", ["none", "step"])
def test_checkpoints_hold_only_tensors_and_plain_values(base, schedule):
    """A checkpoint holds tensors and plain Python values, so that any torch
    the package supports reads it with weights_only=True (torch < 2.4 refuses the
    Counter in MultiStepLR's state)."""
    for path in sorted(base[schedule].rglob("*.pt")):
        payload = runs.load_checkpoint(path)
        assert type(payload) is dict and not _non_plain(payload), _non_plain(payload)


def test_run_config_and_datasets(base):
    run = load_run(base["none"])
    assert run.config["method"]["delta_eps"] == pytest.approx(EPS_MAX / 4)
    assert run.config["optim"]["name"] == "adam" and run.config["train"]["epochs"] == 4
    test = run.dataset("test")
    truth = build_dataset("moons", "test", n_train=512, n_val=128, n_test=128)
    assert len(test) == 128 and torch.equal(test.x, truth.x) and torch.equal(test.y, truth.y)
    assert len(run.dataset("train")) == 512 and run.dataset("test") is test


def test_metrics_columns_and_values(base):
    run = load_run(base["none"])
    rows = run.metrics()
    assert len(rows) == 4
    columns = set(rows[0])
    assert {"epoch", "loss", "train_acc", "val_acc", "lr", "time_s", "margin_mean",
            "margin_median", "margin_min", "margin_max", "margin_expanded",
            "margin_shrunk", "boundary_found", "clean_correct"} <= columns
    delta = EPS_MAX / 4
    for k, row in enumerate(rows, start=1):
        assert row["epoch"] == k and row["time_s"] > 0 and row["loss"] > 0
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1
        # after k epochs no margin exceeds init + k expansions, nor eps_max
        assert 0 <= row["margin_min"] <= row["margin_median"] <= row["margin_max"]
        assert row["margin_max"] <= min((k + 1) * delta, EPS_MAX) + 1e-6
        assert row["margin_expanded"] + row["margin_shrunk"] <= 1
    # the last row describes the saved state
    margins = run.method.margins.margins
    assert rows[-1]["margin_mean"] == pytest.approx(float(margins.mean()))
    assert rows[-1]["margin_max"] == pytest.approx(float(margins.max()))
    val = run.dataset("val")
    with torch.no_grad():
        acc = float((run.model(val.x).argmax(1) == val.y).float().mean())
    assert rows[-1]["val_acc"] == pytest.approx(acc)


def test_ce_run_has_no_margin_columns(tmp_path):
    run = train(tiny_config("ce", epochs=1), tmp_path / "ce", progress=False)
    assert not any(k.startswith("margin") for k in run.metrics()[0])
    assert run.method.state_dict() == {}


# --- warm start ---------------------------------------------------------------------------

TINY_LR = {"optim": {"name": "sgd", "lr": 1e-12, "momentum": 0.0}}


@pytest.mark.parametrize("source", ["folder", "file"])
def test_init_from_loads_the_weights(base, tmp_path, source):
    src = base["none"] if source == "folder" else base["none"] / "checkpoints" / "epoch-002.pt"
    reference = load_run(base["none"], epoch=None if source == "folder" else 2).model
    # with a vanishing learning rate the trained weights stay those loaded
    run = train(tiny_config("ce", epochs=1, **TINY_LR), tmp_path / "warm",
                init_from=src, progress=False)
    cold = train(tiny_config("ce", epochs=1, **TINY_LR), tmp_path / "cold",
                 progress=False)
    for (name, p), q, c in zip(run.model.state_dict().items(),
                               reference.state_dict().values(),
                               cold.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-8, msg=name)
        if name.endswith("weight") and p.dim() == 2:
            assert not torch.allclose(p, c, atol=1e-3), name


def test_init_from_errors_leave_no_folder(tmp_path, base):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(tiny_config(), tmp_path / "a", init_from=tmp_path / "nowhere.pt", progress=False)
    assert not (tmp_path / "a").exists()
    bigger = tiny_config(model={"name": "digits_cnn"}, data={"name": "digits"})
    for key in ("n_train", "n_val", "n_test"):
        bigger["data"].pop(key)
    with pytest.raises(ValueError, match="weights of another model"):
        train(bigger, tmp_path / "b", init_from=base["none"], progress=False)
    assert not (tmp_path / "b").exists()


def test_public_api():
    assert ima.train is train and ima.load_run is load_run
