"""Segmentation through the config path: a dataset declares its task, methods, the loop,
the evaluation and the report use it; epochs of a fixed number of iterations; IMA beats
plain training under attack on the synthetic shapes (seeded)."""

import copy
from pathlib import Path

import pytest
import torch
import yaml

from helpers import assert_same_state
from ima import evaluate, load_run, train
from ima.assemble import data_task, method_from_config
from ima.config import load_config
from ima.data import build_dataset
from ima.methods import build_method
from ima.models import unet
from ima.tasks import ClassificationTask, SegmentationTask
from ima.training import batches, epoch_order

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny(method: str = "ce", epochs: int = 2, **method_kw) -> dict:
    return {
        "data": {"name": "shapes", "n_train": 32, "n_val": 8, "n_test": 8, "size": 16,
                 "batch_size": 16},
        "model": {"name": "unet", "width": 4, "depth": 1},
        "method": {"name": method, **method_kw},
        "optim": {"lr": 0.01},
        "train": {"epochs": epochs, "threads": 1, "save_every": 1},
    }


def test_dataset_declares_its_task_and_methods_get_it():
    shapes = build_dataset("shapes", "train", n_train=8, threshold=0.7)
    assert isinstance(data_task(shapes), SegmentationTask) and shapes.task.threshold == 0.7
    assert isinstance(data_task(build_dataset("moons", "test", n_test=8)), ClassificationTask)
    config = load_config(CONFIGS / "shapes-ima.yaml")
    method = method_from_config(config, shapes)
    assert method.task is shapes.task


@pytest.mark.parametrize(("name", "kw"), [
    ("ce", {}), ("adv", {"eps": 1.0, "steps": 3}),
    ("ima", {"eps_max": 3.0, "delta_eps": 2.0, "steps": 5}),
])
def test_method_contract_on_segmentation(name, kw):
    torch.manual_seed(0)
    data = build_dataset("shapes", "train", n_train=16, size=16)
    model = unet(width=4, depth=1)
    y = data.y.clone()
    with torch.no_grad():
        y[:12] = model(data.x[:12]).argmax(dim=1)  # Dice 1: correct, so BPGD attacks them
    method = build_method(name, num_samples=16, epochs=2, task=data.task, **kw)
    model.train()
    out = method(model, data.x, y, torch.arange(16), 0)
    assert model.training and out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (16, 2, 16, 16)
    out.loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    state = method.state_dict()
    method.end_epoch(0)
    again = build_method(name, num_samples=16, epochs=2, task=data.task, **kw)
    again.load_state_dict(copy.deepcopy(method.state_dict()))
    assert_same_state(again.state_dict(), method.state_dict())
    if name == "ima":
        assert state["margins"]["pending"][:12].isfinite().all()  # BPGD outcomes recorded
        assert out.logs["boundary_found"] > 0


def test_cli_train_evaluate_report(tmp_path, capsys):
    from ima.cli import main

    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump(tiny("ima", epochs=1, eps_max=2.0)))
    out = tmp_path / "seg-ima"
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    row = load_run(out).metrics()[-1]
    assert 0.0 <= row["train_acc"] <= 1.0 and "margin_mean" in row  # Dice-based accuracy
    assert main(["evaluate", str(out), "--eps", "0.5,1", "--steps", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Total Voxel Dice Index (%)" in printed and "Average Dice Index (%)" in printed
    assert main(["report", str(out), "--metric", "adi"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("Average Dice Index (%) under 3-PGD")
    assert "| seg-ima |" in table and "AUC" not in table


def test_iterations_per_epoch_and_poly_schedule_resume(tmp_path):
    order = epoch_order(10, 0, 3, length=25)
    assert order.shape == (25,)
    assert sorted(order[:10].tolist()) == sorted(order[10:20].tolist()) == list(range(10))
    assert torch.equal(epoch_order(10, 0, 3), order[:10])  # one pass: the same permutation
    data = build_dataset("shapes", "train", n_train=32, size=16)
    for length, sizes in ((48, [16, 16, 16]), (16, [16]), (20, [16, 4])):
        got = list(batches(data, 16, order=epoch_order(32, 0, 0, length)))
        assert [len(b[2]) for b in got] == sizes
        assert torch.equal(torch.cat([b[2] for b in got]), epoch_order(32, 0, 0, length))
    config = tiny(epochs=3)
    config["train"]["iterations_per_epoch"] = 1  # 16 of the 32 samples per epoch
    config["optim"].update(name="sgd", lr=0.01, momentum=0.99, nesterov=True, schedule="poly")
    run = train(config, tmp_path / "full", progress=False)
    rows = run.metrics()
    assert [r["lr"] for r in rows] == pytest.approx([0.01 * (1 - e / 3) ** 0.9 for e in range(3)])
    # the poly scheduler's state survives the weights-only checkpoint (resume loads it)
    resumed = train(None, tmp_path / "full", resume=True, progress=False)
    assert_same_state(resumed.model.state_dict(), run.model.state_dict())
    with pytest.raises(ValueError, match="iterations_per_epoch"):
        train({**tiny(), "train": {"iterations_per_epoch": 0}}, tmp_path / "bad", progress=False)


def _shapes_run(tmp_path, method, **kw):
    config = {
        "data": {"name": "shapes", "n_train": 128, "n_val": 16, "n_test": 48, "size": 16,
                 "batch_size": 16},
        "model": {"name": "unet", "width": 4, "depth": 1},
        "method": {"name": method, **kw},
        "optim": {"lr": 0.01},
        "train": {"epochs": 10, "threads": 1, "val_split": None, "seed": 0},
    }
    return train(config, tmp_path / method, progress=False)


def test_ima_beats_plain_training_under_attack_on_shapes(tmp_path):
    """Seeded: 10 epochs on 128 16x16 shapes; IMA (eps_max 2, 10-step BPGD) keeps a higher
    ADI and TVDI than plain training under 20-PGD at eps 1.5 (an L2 norm over 256 pixels),
    at no cost in clean ADI. About 8 s on an idle CPU core (35 s on a busy 2-core one)."""
    results = {}
    for method, kw in (("ce", {}), ("ima", {"eps_max": 2.0, "steps": 10})):
        run = _shapes_run(tmp_path, method, **kw)
        results[method] = evaluate(run.model, run.dataset("test"), eps=[1.5], steps=20,
                                   checks=False)
    ce, ima = results["ce"], results["ima"]
    assert ima.adi[0] >= ce.adi[0] - 0.02  # clean
    assert ima.adi[1] > ce.adi[1] + 0.05
    assert ima.tvdi[1] > ce.tvdi[1]


def test_plot_samples_shows_images_and_masks_under_noise(tmp_path):
    from PIL import Image

    from ima.cli import main

    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump(tiny("ce", epochs=1)))
    run_dir = tmp_path / "seg-ce"
    assert main(["train", "--config", str(config), "--out", str(run_dir), "--no-progress"]) == 0
    out = tmp_path / "samples"
    assert main(["plot", "samples", str(run_dir), "--eps", "0.5,2", "--n", "2",
                 "--steps", "3", "--out", str(out)]) == 0
    png = out.with_suffix(".png")
    with Image.open(png) as image:
        width, height = image.size
    assert width > 300 and height > 400  # 3 columns; 2 rows (image, mask) per sample
    assert out.with_suffix(".pdf").stat().st_size > 0
