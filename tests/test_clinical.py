"""The medical-imaging user story end to end: grey 32x32 scans in ``normal/`` and
``lesion/``, a small CNN of the user's own, class names and the named positive class
from the data through training, evaluation, tables, the HTML report and the export."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import ima
from helpers import snapshot
from ima.evaluation import EvaluationResult, evaluate, evaluate_run
from ima.exporting import export_model
from ima.reporting.html import html_report
from ima.reporting.tables import (
    clinical_table,
    confusion_tables,
    load_results,
    report_tables,
)

EPS = [0.0, 0.5, 2.0]


def tiny_cnn(*, in_channels: int = 1, num_classes: int = 2) -> torch.nn.Module:
    """The user's own small CNN (a factory named "test_clinical:tiny_cnn" in the config)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, num_classes),
    )


def write_scans(root, n: int = 15):
    """Grey (mode "L") 32x32 PNG scans: dark noise, a bright blob for a lesion."""
    rng = np.random.default_rng(0)
    for name, blob in (("normal", False), ("lesion", True)):
        (root / name).mkdir(parents=True)
        for k in range(n):
            scan = rng.integers(20, 70, (32, 32))
            if blob:
                r, c = rng.integers(6, 26, 2)
                scan[r - 4:r + 4, c - 4:c + 4] = 230
            Image.fromarray(scan.astype(np.uint8), "L").save(root / name / f"scan{k:02d}.png")
    return root


def config(root, *, named: bool = True, **changes) -> dict:
    """The user's config; ``named=False`` leaves out data.class_names and
    eval.positive_class (the folders then name the classes, label 1 is positive)."""
    out = {
        "data": {"name": "image_folder", "root": str(root), "batch_size": 8,
                 "class_names": ["normal", "lesion"]},
        "model": {"name": "test_clinical:tiny_cnn", "in_channels": 1},
        "method": {"name": "ce"},
        "optim": {"lr": 0.01},
        "train": {"epochs": 1, "threads": 1},
        "eval": {"eps": EPS, "steps": 5, "positive_class": "lesion"},
    }
    if not named:
        del out["data"]["class_names"], out["eval"]["positive_class"]
    for key, value in changes.items():
        section, _, name = key.partition(".")
        out[section][name] = value
    return out


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return write_scans(tmp_path_factory.mktemp("scans"))


@pytest.fixture(scope="module")
def evaluated(scans, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("clinical") / "run"
    ima.train(config(scans), run_dir, progress=False)
    result, path = evaluate_run(run_dir, checks=False, trust_code=True)
    return run_dir, result, path


def _rate(result, label: int) -> list[float]:
    """Accuracy on class ``label`` at each level, by hand from the per-sample data."""
    picked = [j for j, y in enumerate(result.labels) if y == label]
    return [sum(row[j] for j in picked) / len(picked) for row in result.robust]


def test_grey_scans_train_with_names_and_a_named_positive_class(evaluated, scans):
    run_dir, result, path = evaluated
    run = ima.load_run(run_dir, trust_code=True)
    train = run.dataset("train")
    # grey PNGs load as one channel (the model takes in_channels 1) without a grey key
    assert train.x.shape[1:] == (1, 32, 32)
    # the config's order: normal is 0, lesion 1 (the bright scans)
    assert train.class_names == ("normal", "lesion")
    bright = (train.x.amax(dim=(1, 2, 3)) > 0.5).long()
    assert torch.equal(bright, train.y)
    # the names travel with the run (config.yaml) and with the result file
    assert run.config["data"]["class_names"] == ["normal", "lesion"]
    assert "- normal\n  - lesion" in (run_dir / "config.yaml").read_text()
    stored = json.loads(path.read_text())
    assert stored["class_names"] == ["normal", "lesion"]
    assert stored["positive_class"] == 1 and stored["positive_class_name"] == "lesion"
    assert stored["clean_level_added"] is False
    # sensitivity is the accuracy on the lesions, specificity on the normal scans
    assert result.sensitivity == pytest.approx(_rate(result, 1))
    assert result.specificity == pytest.approx(_rate(result, 0))
    loaded = EvaluationResult.load(path)
    assert loaded.class_names == ["normal", "lesion"] and loaded.confusion == result.confusion
    # a binary model's confusion matrix at each level: robust samples on the diagonal,
    # the others predicted as the other class
    for i, matrix in enumerate(result.confusion):
        for t in (0, 1):
            robust = sum(r for r, y in zip(result.robust[i], result.labels, strict=True)
                         if y == t)
            total = result.labels.count(t)
            assert matrix[t] == ([robust, total - robust] if t == 0 else
                                 [total - robust, robust])
    assert result.confusion_unrecorded is None
    # the positive class is choosable: normal positive swaps the two rates
    other, _ = evaluate_run(run_dir, checks=False, trust_code=True, positive_class="normal",
                            save=False)
    assert other.positive_class == 0 and other.positive_class_name == "normal"
    assert other.sensitivity == pytest.approx(_rate(result, 0))


def test_tables_and_the_html_report_name_the_classes(evaluated, monkeypatch):
    run_dir, result, _ = evaluated
    monkeypatch.setenv("IMA_TRUST_CODE", "1")  # the run names the user's CNN factory
    text = clinical_table("run", result).to_markdown()
    for expected in ("lesion (n=3)", "normal (n=3)", "sensitivity (lesion positive)",
                     "specificity (normal negative)", "positive class: lesion"):
        assert expected in text
    assert "class 0" not in text and "class 1" not in text
    matrices = confusion_tables("run", result)
    assert len(matrices) == len(EPS)
    assert matrices[0].header == ["true \\ predicted", "normal", "lesion"]
    assert [row[0] for row in matrices[-1].rows] == ["normal", "lesion"]
    report = "\n".join(t.to_markdown() for t in report_tables(load_results([run_dir])))
    assert "sensitivity (lesion positive)" in report
    assert report.count("confusion matrix") == len(EPS)

    page = html_report([run_dir])
    assert "sensitivity (lesion positive)" in page and "<td>lesion (n=3)</td>" in page
    assert page.count("confusion matrix") == len(EPS)
    assert "<th>lesion</th>" in page and "<th>normal</th>" in page
    assert "not available" not in page.lower()  # sections that do not apply are left out
    assert "Decision boundaries" not in page and "Estimated margins" not in page
    assert "Training curves" in page


def test_export_metadata_names_the_outputs(evaluated, tmp_path):
    run_dir, _, _ = evaluated
    exported = export_model(ima.load_run(run_dir, trust_code=True), path=tmp_path / "m.pt")
    meta = json.loads((tmp_path / "m.pt.json").read_text())
    assert exported.class_names == ["normal", "lesion"]
    assert meta["class_names"] == ["normal", "lesion"] and meta["num_classes"] == 2
    assert meta["positive_class_name"] == "lesion" and meta["input_shape"] == [1, 32, 32]
    assert meta["bounds"] == [0.0, 1.0] and "normal, lesion" in exported.summary()


def test_a_channel_mismatch_is_one_line_before_anything_is_written(scans, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError) as err:
        ima.train(config(scans, named=False, **{"model.in_channels": 3}), out, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message == ("the model expects 3 input channels but the images have 1 (set "
                       "data.grey: false to load them as RGB, or give the model "
                       "in_channels: 1)")
    assert not out.exists()
    # an existing run that --overwrite would replace is left untouched
    ima.train(config(scans, named=False), out, progress=False)
    before = snapshot(out)
    # the folders name the classes when the config does not (sorted: lesion 0, normal 1)
    assert ima.load_run(out, trust_code=True).config["data"]["class_names"] == [
        "lesion", "normal"]
    with pytest.raises(ValueError, match="expects 3 input channels but the images have 1"):
        ima.train(config(scans, named=False, **{"model.in_channels": 3}), out,
                  overwrite=True, progress=False)
    assert snapshot(out) == before


def test_bad_positive_class_and_names_that_disagree_with_the_folders(scans, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"^eval\.positive_class 'tumour' is not a class; "
                       r"choose one of 'normal', 'lesion'$"):
        ima.train(config(scans, **{"eval.positive_class": "tumour"}), out, progress=False)
    with pytest.raises(ValueError, match=r"positive_class 1 is not a class; choose one of"):
        ima.train(config(scans, **{"eval.positive_class": 1}), out, progress=False)
    with pytest.raises(ValueError, match=r"class_names=\['healthy', 'lesion'\] disagree with "
                       r"the class folders .*no folder for \['healthy'\]"):
        ima.train(config(scans, **{"data.class_names": ["healthy", "lesion"]}), out,
                  progress=False)
    assert not out.exists()


def test_evaluate_records_the_clean_level_it_adds_and_checks_the_positive_class():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    data = torch.utils.data.TensorDataset(torch.randn(20, 2), torch.arange(20) % 2)
    result = evaluate(model, data, eps=[0.5], steps=2, bounds=None, checks=False,
                      class_names=["cat", "dog"], positive_class="cat")
    assert result.eps == [0.0, 0.5] and result.clean_level_added is True
    assert result.positive_class == 0 and result.positive_class_name == "cat"
    assert evaluate(model, data, eps=[0.0, 0.5], steps=2, bounds=None,
                    checks=False).clean_level_added is False
    with pytest.raises(ValueError, match=r"positive_class 'cow' is not a class; choose one "
                       r"of 'cat', 'dog'"):
        evaluate(model, data, eps=[0.5], bounds=None, class_names=["cat", "dog"],
                 positive_class="cow")
    with pytest.raises(ValueError, match="the data names 3 classes"):
        evaluate(model, data, eps=[0.5], bounds=None, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="gives? the label 0 or 1"):
        evaluate(model, data, eps=[0.5], bounds=None, positive_class=2)
    # a model that does not take the images: one line naming the shape, not a traceback
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())
    grey = torch.utils.data.TensorDataset(torch.rand(4, 1, 8, 8), torch.arange(4) % 2)
    with pytest.raises(ValueError, match=r"^the model does not fit the data: inputs of shape "
                       r"\(1, 1, 8, 8\) failed: .*3 channels, but got 1 channels"):
        evaluate(conv, grey, eps=[0.1])

    class Picky(torch.nn.Module):  # a user's model that checks its inputs itself
        def forward(self, x):
            raise ValueError("expected 3-channel scans\nmore detail")

    with pytest.raises(ValueError, match=r"^the model does not fit the data: inputs of shape "
                       r"\(1, 1, 8, 8\) failed: expected 3-channel scans$"):
        evaluate(Picky(), grey, eps=[0.1])


def test_three_classes_confusion_and_old_result_files(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.rand(30, 4), torch.arange(30) % 3
    result = evaluate(model, torch.utils.data.TensorDataset(x, y), eps=[0.2], steps=5,
                      checks=False, class_names=["a", "b", "c"])
    with torch.no_grad():
        clean = model(x).argmax(1)
    assert result.confusion[0] == [[int(((y == t) & (clean == p)).sum()) for p in range(3)]
                                   for t in range(3)]
    # fooled samples of three classes: where they went is not recorded, but counted
    robust = torch.tensor(result.robust[1])
    fooled = ~robust & (clean == y)
    assert result.confusion_unrecorded[1] == [int((fooled & (y == t)).sum()) for t in range(3)]
    assert sum(map(sum, result.confusion[1])) + sum(result.confusion_unrecorded[1]) == 30
    tables = confusion_tables("m", result)
    assert tables[1].header[-1] == "fooled (class not recorded)"
    with pytest.raises(ValueError, match="applies to two-class data only"):
        evaluate(model, torch.utils.data.TensorDataset(x, y), eps=[0.2],
                 positive_class="a", class_names=["a", "b", "c"])
    # a file written before names, positive class names and confusion matrices still loads
    path = tmp_path / "old.json"
    data = result.to_dict()
    for key in ("class_names", "positive_class_name", "confusion", "confusion_unrecorded",
                "clean_level_added"):
        data.pop(key)
    path.write_text(json.dumps(data))
    old = EvaluationResult.load(path)
    assert old.class_names is None and old.confusion is None
    assert "class 2 (n=10)" in clinical_table("old", old).to_markdown()
    assert confusion_tables("old", old) == []
