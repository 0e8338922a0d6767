"""ima's nnU-Net v2 trainers and evaluation on a tiny dataset in nnU-Net's raw format:
nnU-Net's own planning and preprocessing, then IMA and PGD training, a continued run, the
evaluation, and truth checks of the sample positions and of Algorithm 2's margins on the
batches nnU-Net fed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ima.integrations.nnunet.settings import check_settings, load_settings

DATASET_ID = 901
SETTINGS = """\
ima:
  eps_max: 4.0
pgd:
  eps: 2.0
task:
  threshold: 0.6
nnunet:
  num_epochs: 2
  num_iterations_per_epoch: 2
  num_val_iterations_per_epoch: 1
"""


# ---- settings (no nnU-Net needed) -----------------------------------------------------

def test_settings_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ima settings file .*IMA_NNUNET_SETTINGS"):
        load_settings(tmp_path / "ima_nnunet.yaml")
    with pytest.raises(ValueError, match="unknown section.*imaa"):
        check_settings({"imaa": {"eps_max": 1}}, "f.yaml")
    with pytest.raises(ValueError, match="unknown key.*epochs.*'nnunet'"):
        check_settings({"nnunet": {"epochs": 3}}, "f.yaml")
    with pytest.raises(ValueError, match="nnunet.num_epochs"):
        check_settings({"nnunet": {"num_epochs": 0}}, "f.yaml")
    with pytest.raises(ValueError, match="threshold"):
        check_settings({"task": {"threshold": 2}}, "f.yaml")
    settings = check_settings({"ima": {"eps_max": 3}}, "f.yaml")
    with pytest.raises(ValueError, match="needs the section 'pgd' in f.yaml"):
        settings.method("pgd")
    assert settings.method("ima") == {"eps_max": 3}


def test_torch_stays_the_cpu_build_where_ci_installs_it():
    """CI installs nnU-Net without timm and torchvision (scripts/install_nnunet.sh), which
    would bring a CUDA build of torch in place of the CPU one."""
    if os.environ.get("IMA_EXPECT_CPU_TORCH") != "1":
        pytest.skip("set IMA_EXPECT_CPU_TORCH=1 where the CPU build is expected (CI)")
    assert torch.__version__.endswith("+cpu"), torch.__version__
    for name in ("timm", "torchvision"):
        with pytest.raises(ImportError):
            __import__(name)


# ---- nnU-Net ------------------------------------------------------------------------

nnunetv2 = pytest.importorskip("nnunetv2")


def _command(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture(scope="module")
def nnunet_dirs(tmp_path_factory):
    """nnU-Net's three folders with the dataset planned and preprocessed (2d) by
    nnU-Net's own command, and ima's settings beside the plans."""
    from integrations.nnunet_dataset import write_raw_dataset

    root = tmp_path_factory.mktemp("nnunet")
    dirs = {k: root / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for d in dirs.values():
        d.mkdir()
    name = write_raw_dataset(dirs["nnUNet_raw"], dataset_id=DATASET_ID)
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}}
    subprocess.run([_command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c",
                    "2d", "-np", "1"], env=env, check=True, capture_output=True)
    (dirs["nnUNet_preprocessed"] / name / "ima_nnunet.yaml").write_text(SETTINGS)
    dirs["name"] = name
    return dirs


@pytest.fixture
def nnunet_env(nnunet_dirs, monkeypatch):
    """nnU-Net's folders for this process (nnU-Net 2.8 reads them from the environment
    when it uses them); augmentation in this process."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, str(nnunet_dirs[key]))
    return nnunet_dirs


def _cli_env(dirs):
    env = {**os.environ, **{k: str(dirs[k]) for k in
                            ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    env["nnUNet_n_proc_DA"] = "0"
    return env


def _ima(*args, env):
    done = subprocess.run([sys.executable, "-m", "ima", *args], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_nnunet_finds_the_trainers_in_the_folder_ima_names():
    """What nnUNet_extTrainer's lookup does with `ima nnunet trainer-path`."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from ima.integrations.nnunet import trainer_path, trainers

    for name in ("nnUNetTrainerIMA", "nnUNetTrainerPGD", "nnUNetTrainerClean"):
        found = recursive_find_python_class(trainer_path(), name, None, base_folder=trainer_path(),
                                            cleanup_imports_from_base_folder=True)
        assert found is getattr(trainers, name)
        assert issubclass(found, nnUNetTrainer)


def _trainer(fold: int, trainer="nnUNetTrainerIMA", **kw):
    """A trainer of its own fold per test (nnU-Net's --c prefers a fold's final checkpoint)."""
    from ima.integrations.nnunet.launcher import build_trainer

    return build_trainer(DATASET_ID, "2d", fold, trainer=trainer, device="cpu", **kw)


def test_positions_are_the_slices_the_loader_cut(nnunet_env):
    """Without augmentation each patch is the crop of the slice its position names (zero
    outside the slice: foreground oversampling may centre a patch near the edge)."""
    from ima.integrations.nnunet.trainers import PositionedDataLoader

    t = _trainer(0)
    # nnU-Net's save_every (50) would leave a short or 50-epoch run no checkpoint_latest
    assert t.save_every == 1 and t.num_epochs == 2
    t.initialize()
    t._ensure_method()
    dataset, _ = t.get_tr_and_val_datasets()
    patch = t.configuration_manager.patch_size
    loader = PositionedDataLoader(dataset, 8, patch, patch, t.label_manager,
                                  oversample_foreground_percent=0.33)
    batch = next(loader)
    assert len(batch["positions"]) == 8
    index = t.sample_index(batch["keys"], batch["positions"])
    for j, (key, position) in enumerate(zip(batch["keys"], batch["positions"], strict=True)):
        data = np.asarray(dataset.load_case(key)[0][:])[:, position[0]]
        h, w = patch
        padded = np.pad(data, ((0, 0), (h, h), (w, w)))
        r, c = position[1] + h, position[2] + w
        np.testing.assert_array_equal(batch["data"][j].numpy(), padded[:, r:r + h, c:c + w])
        assert int(index[j]) == t.sample_index.offsets[key] + position[0]
    assert len(t.sample_index) == sum(
        np.asarray(dataset.load_case(k)[0]).shape[1] for k in dataset.identifiers)


def test_margins_follow_algorithm_2_on_the_batches_nnunet_fed(nnunet_env):
    """One epoch of nnU-Net's loop: every sample BPGD attacked moves to (d + E) / 2 when it
    found a boundary point at distance d, to E + delta_eps when not, the others keep E;
    then clipped to [0, eps_max]. d and the samples come from the batches nnU-Net fed."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    t = _trainer(0)
    t.on_train_start()
    for _ in range(40):  # nnU-Net's own clean steps first, so that some samples are correct
        nnUNetTrainer.train_step(t, next(t.dataloader_train))
    t.num_iterations_per_epoch = 6
    store = t.method.margins
    before = store.margins.clone()
    seen = []
    real = t.method.find_boundary

    def spy(model, x, y, index, **kw):
        result = real(model, x, y, index, **kw)
        seen.append((x.detach().clone(), index.clone(), result))
        return result

    t.method.find_boundary = spy
    t.on_train_epoch_start()
    outputs = [t.train_step(next(t.dataloader_train)) for _ in range(t.num_iterations_per_epoch)]
    t.on_train_epoch_end(outputs)
    c = t.method.config
    expected = before.clone()
    for x, index, result in seen:  # batches in order; a later record of a sample wins
        for row in range(len(index)):
            if not result.clean_correct[row]:
                continue
            i = int(index[row])
            if result.success[row]:
                d = float((result.x[row] - x[row]).flatten().norm())
                expected[i] = (d + before[i]) / 2
            else:
                expected[i] = before[i] + c.delta_eps
    expected = expected.clamp(0, c.eps_max)
    assert len(seen) == t.num_iterations_per_epoch
    assert any(bool(r.clean_correct.any()) for _, _, r in seen)
    torch.testing.assert_close(store.margins, expected, rtol=0, atol=1e-5)
    t.on_train_end()


def test_a_continued_training_restores_margins_weights_and_epoch(nnunet_env):
    """Interrupted after its first epoch (checkpoint_latest), --c continues from exactly
    the state it had, margins included, and finishes with them in checkpoint_final."""
    from nnunetv2.run.run_training import maybe_load_checkpoint

    class Interrupted(Exception):
        pass

    t = _trainer(2)
    t.save_every = 1
    start = t.on_train_epoch_start

    def stop_at_epoch_1():
        if t.current_epoch == 1:
            raise Interrupted
        start()

    t.on_train_epoch_start = stop_at_epoch_1
    with pytest.raises(Interrupted):
        t.run_training()
    margins = t.method.margins.margins.clone()
    weights = {k: v.clone() for k, v in t.network.state_dict().items()}
    assert (Path(t.output_folder) / "checkpoint_latest.pth").is_file()

    again = _trainer(2, continue_training=True)
    maybe_load_checkpoint(again, True, False)
    assert again.current_epoch == 1
    torch.testing.assert_close(again.method.margins.margins, margins, rtol=0, atol=0)
    for k, v in again.network.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)
    again.run_training()
    final = torch.load(Path(again.output_folder) / "checkpoint_final.pth", weights_only=False)
    assert final["current_epoch"] == 2
    assert final["ima"]["trainer"] == "nnUNetTrainerIMA"
    torch.testing.assert_close(final["ima"]["method"]["margins"]["margins"],
                               again.method.margins.margins)


def test_a_changed_settings_file_is_refused_on_continue(nnunet_env, tmp_path, monkeypatch):
    from nnunetv2.run.run_training import maybe_load_checkpoint

    t = _trainer(4, "nnUNetTrainerPGD")
    t.run_training()
    changed = tmp_path / "changed.yaml"
    changed.write_text(SETTINGS.replace("eps: 2.0", "eps: 3.0"))
    monkeypatch.setenv("IMA_NNUNET_SETTINGS", str(changed))
    again = _trainer(4, "nnUNetTrainerPGD", continue_training=True)
    with pytest.raises(ValueError, match="differs from the settings .* section\\(s\\) pgd"):
        maybe_load_checkpoint(again, True, False)


def test_clean_predictions_agree_with_nnunets_predictor(nnunet_env):
    """The evaluation's model (whole slices padded to the patch) gives nnU-Net's own
    sliding-window logits (no mirroring) on the same preprocessed cases."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from ima.integrations.nnunet.evaluation import FoldModel, case_slices

    t = _trainer(3)
    t.run_training()
    fold = FoldModel(t.output_folder)
    # nnU-Net accumulates windows in half precision, and its Gaussian weights underflow
    # there at the corners; one window per slice makes the weighting a no-op, so it is off
    predictor = nnUNetPredictor(use_mirroring=False, use_gaussian=False,
                                perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(fold.network, t.plans_manager, t.configuration_manager,
                                    None, t.dataset_json, "nnUNetTrainerIMA", None)
    folder = t.preprocessed_dataset_folder
    keys = json.loads((Path(t.preprocessed_dataset_folder_base) / "splits_final.json")
                      .read_text())[3]["val"]
    dataset = infer_dataset_class(folder)(folder, identifiers=keys)
    batches = list(case_slices(dataset, keys, 64))
    for key, (x, _) in zip(keys, batches, strict=True):
        data = torch.from_numpy(np.asarray(dataset.load_case(key)[0][:], dtype=np.float32))
        theirs = predictor.predict_sliding_window_return_logits(data)  # (classes, Z, H, W)
        with torch.no_grad():
            ours = fold.model(x)  # (Z, classes, H, W)
        assert theirs.dtype == torch.float16
        torch.testing.assert_close(ours.transpose(0, 1).half(), theirs, rtol=1e-3, atol=1e-3)

    from ima.integrations.nnunet.evaluation import evaluate_fold

    with pytest.raises(ValueError, match="case\\(s\\) nope are not preprocessed"):
        evaluate_fold(t.output_folder, eps=[1.0], cases=["nope"])
    result, path = evaluate_fold(t.output_folder, eps=[1.0], cases=keys[:1], steps=2,
                                 checks=False)
    assert path.name.startswith("pgd-l2-cases-") and result.n_samples == 6


def test_train_and_evaluate_from_the_command_line(nnunet_dirs):
    """The route of docs/nnunet.md with ima's launcher: the three trainers, then 100-PGD (here
    10 steps) on the fold's validation slices, then ima report's TVDI table."""
    env = _cli_env(nnunet_dirs)
    results = nnunet_dirs["nnUNet_results"] / nnunet_dirs["name"]
    for trainer in ("nnUNetTrainerIMA", "nnUNetTrainerPGD", "nnUNetTrainerClean"):
        out = _ima("nnunet", "train", str(DATASET_ID), "2d", "1", "-tr", trainer, "-device",
                   "cpu", "--threads", "1", env=env)
        assert "2 epochs" in out
        fold = results / f"{trainer}__nnUNetPlans__2d" / "fold_1"
        assert (fold / "checkpoint_final.pth").is_file()
        assert "ima: boundary_found" in "".join(
            p.read_text() for p in fold.glob("training_log_*.txt")) or trainer != "nnUNetTrainerIMA"
        out = _ima("nnunet", "evaluate", str(fold), "--eps", "0,1,3", "--steps", "10",
                   "--threads", "1", env=env)
        assert "slices; eps 0: accuracy" in out
        result = json.loads((fold / "eval" / "pgd-l2-validation.json").read_text())
        assert result["eps"] == [0.0, 1.0, 3.0] and result["epoch"] == 2
        assert result["tvdi"][0] >= result["tvdi"][-1]
        assert all(c["passed"] is not False for c in result["checks"])
    table = _ima("report", *(str(results / f"{t}__nnUNetPlans__2d" / "fold_1") for t in
                             ("nnUNetTrainerIMA", "nnUNetTrainerPGD", "nnUNetTrainerClean")),
                 "--eval", "pgd-l2-validation", "--metric", "tvdi", env=env)
    assert "nnUNetTrainerIMA__nnUNetPlans__2d/fold_1" in table
