"""Decathlon task folders: tiny NIfTI volumes written in the real layout, read back."""

import json
import sys

import numpy as np
import pytest
import torch

from ima.config import resolve_config
from ima.data import build_dataset
from ima.data.decathlon import split_cases
from ima.tasks import SegmentationTask

nib = pytest.importorskip("nibabel")

SHAPE = (6, 5, 4)  # voxel axes i, j, k; k is sliced


def write_task(root, n_cases=5, *, modalities=1, shape=SHAPE, labels=2, seed=0, bad=None):
    """A Decathlon folder with ``n_cases`` labelled cases; returns {case: (image, label)}.

    bad: None, "shape" (case 0's label has another shape) or "values" (label 7 in case 0).
    """
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    # macOS metadata files ship in the real archives; dataset.json does not list them
    (root / "imagesTr" / "._case_000.nii.gz").write_bytes(b"junk")
    cases, entries = {}, []
    for c in range(n_cases):
        name = f"case_{c:03d}"
        image = rng.normal(100.0 * (c + 1), 20.0, size=shape + ((modalities,) if modalities > 1
                                                                else ()))
        label = np.zeros(shape, dtype=np.uint8)
        label[1:4, 1:3, 1:] = 1
        if labels > 2:
            label[4, 2:4, :2] = 2
        if bad == "shape" and c == 0:
            label = np.zeros((shape[0], shape[1], shape[2] + 1), dtype=np.uint8)
        if bad == "values" and c == 0:
            label[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)),
                 str(root / "imagesTr" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / f"{name}.nii.gz"))
        cases[name] = (image, label)
        entries.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    index = {
        "name": "Tiny",
        "modality": {str(m): name for m, name in enumerate(["T2", "ADC"][:modalities])}
        if modalities > 1 else {"0": "MRI"},
        "labels": {str(k): f"class {k}" for k in range(labels)},
        "numTraining": n_cases,
        "training": entries,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(index))
    return cases


def expected_slices(volume: np.ndarray) -> np.ndarray:
    """The documented preprocessing: 0.5-99.5 percentile clip, min-max, slices [:, :, k].T."""
    lo, hi = np.percentile(volume, [0.5, 99.5])
    v = (np.clip(volume, lo, hi) - lo) / (hi - lo)
    return np.stack([v[:, :, k].T for k in range(v.shape[2])])


def test_round_trip_split_and_preprocessing(tmp_path):
    cases = write_task(tmp_path)
    names = sorted(cases)
    parts = {s: build_dataset("decathlon", s, root=str(tmp_path), n_val=1, n_test=1)
             for s in ("train", "val", "test")}
    seen = {s: sorted({c for c, _ in d.slices}) for s, d in parts.items()}
    assert [len(seen[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert sorted(sum(seen.values(), [])) == names  # every case in exactly one split
    for d in parts.values():
        assert isinstance(d.task, SegmentationTask) and d.task.threshold == 0.6
        assert d.num_classes == 2 and d.bounds == (0.0, 1.0)
        assert d.x.shape[1:] == (1, SHAPE[1], SHAPE[0]) and d.y.shape[1:] == (SHAPE[1], SHAPE[0])
        assert len(d) == SHAPE[2] * len({c for c, _ in d.slices})
        assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0
    test = parts["test"]
    case = test.slices[0][0]
    image, label = cases[case]
    np.testing.assert_allclose(test.x[:, 0].numpy(), expected_slices(image), atol=1e-5)
    np.testing.assert_array_equal(test.y.numpy(), np.stack([label[:, :, k].T for k in range(4)]))
    assert test.slices == [(case, k) for k in range(SHAPE[2])]
    # the split is a function of the seed
    other = build_dataset("decathlon", "test", root=str(tmp_path), n_val=1, n_test=1, seed=3)
    again = build_dataset("decathlon", "test", root=str(tmp_path), n_val=1, n_test=1)
    assert again.slices == test.slices
    assert {c for c, _ in other.slices} <= set(names)


def test_split_cases_sizes_and_errors():
    parts = split_cases(20, n_val=1, n_test=3, seed=0)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [16, 1, 3]
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(20))
    with pytest.raises(ValueError, match="at least one"):
        split_cases(4, n_val=2, n_test=2, seed=0)


def test_size_pad_crop_resize_and_foreground_only(tmp_path):
    write_task(tmp_path, labels=3)
    kw = {"root": str(tmp_path), "n_val": 1, "n_test": 1}
    native = build_dataset("decathlon", "test", **kw)
    padded = build_dataset("decathlon", "test", size=[9, 4], **kw)  # rows 5 -> 9, cols 6 -> 4
    assert padded.x.shape[2:] == (9, 4) and padded.num_classes == 3
    # rows padded by 2 on top, columns cropped by 1 on the left
    torch.testing.assert_close(padded.x[:, :, 2:7, :], native.x[:, :, :, 1:5])
    assert float(padded.x[:, :, :2].abs().sum()) == 0.0 and int(padded.y[:, :2].sum()) == 0
    torch.testing.assert_close(padded.y[:, 2:7, :], native.y[:, :, 1:5])
    resized = build_dataset("decathlon", "test", size=10, fit="resize", **kw)
    assert resized.x.shape[2:] == (10, 10)
    assert set(resized.y.unique().tolist()) <= {0, 1, 2}  # nearest neighbour keeps labels
    write_task(tmp_path / "binary", labels=2)  # class 1 in slices k = 1, 2, 3 only
    fg = build_dataset("decathlon", "test", foreground_only=True, root=str(tmp_path / "binary"),
                       n_val=1, n_test=1)
    assert [k for _, k in fg.slices] == [1, 2, 3]
    assert (fg.y.flatten(1) > 0).any(dim=1).all()


def test_multimodal_modality_by_index_and_name(tmp_path):
    cases = write_task(tmp_path, modalities=2)
    kw = {"root": str(tmp_path), "n_val": 1, "n_test": 1}
    t2 = build_dataset("decathlon", "test", **kw)
    adc = build_dataset("decathlon", "test", modality="adc", **kw)
    assert torch.equal(adc.x, build_dataset("decathlon", "test", modality=1, **kw).x)
    image = cases[t2.slices[0][0]][0]
    np.testing.assert_allclose(t2.x[:, 0].numpy(), expected_slices(image[..., 0]), atol=1e-5)
    np.testing.assert_allclose(adc.x[:, 0].numpy(), expected_slices(image[..., 1]), atol=1e-5)
    with pytest.raises(ValueError, match="modality 'DWI'"):
        build_dataset("decathlon", "test", modality="DWI", **kw)
    with pytest.raises(ValueError, match="modality"):
        build_dataset("decathlon", "test", modality=2, **kw)


def test_mismatched_image_and_label_shapes(tmp_path):
    write_task(tmp_path, n_cases=3, bad="shape")
    with pytest.raises(ValueError, match=r"case_000.*\(6, 5, 4\).*case_000.*\(6, 5, 5\)"):
        for split in ("train", "val", "test"):  # case 0 is in one of them
            build_dataset("decathlon", split, root=str(tmp_path), n_val=1, n_test=1)


def test_bad_label_values(tmp_path):
    write_task(tmp_path, n_cases=3, bad="values")
    with pytest.raises(ValueError, match=r"integers in \[0, 1\]"):
        for split in ("train", "val", "test"):
            build_dataset("decathlon", split, root=str(tmp_path), n_val=1, n_test=1)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(ValueError, match="needs root"):
        build_dataset("decathlon_heart", "train")
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        build_dataset("decathlon", "train", root=str(tmp_path))
    write_task(tmp_path / "t", n_cases=3)
    (tmp_path / "t" / "imagesTr" / "case_001.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="case_001"):
        for split in ("train", "val", "test"):
            build_dataset("decathlon", split, root=str(tmp_path / "t"), n_val=1, n_test=1)


def test_missing_nibabel_says_how_to_install(tmp_path, monkeypatch):
    write_task(tmp_path, n_cases=3)
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"pip install 'ima\[medical\]'"):
        build_dataset("decathlon", "test", root=str(tmp_path), n_val=1, n_test=1)


def test_named_tasks_and_config_path(tmp_path):
    write_task(tmp_path, n_cases=6, labels=3)
    ds = build_dataset("decathlon_hippocampus", "val", root=str(tmp_path), n_val=2, n_test=1)
    assert ds.x.shape[2:] == (64, 64) and ds.name == "decathlon_hippocampus"
    assert len({c for c, _ in ds.slices}) == 2
    config = resolve_config({
        "data": {"name": "decathlon_prostate", "root": str(tmp_path), "n_val": 1, "n_test": 1,
                 "size": [8, 8]},
        "model": {"name": "unet", "num_classes": 3, "width": 4, "depth": 2},
        "method": {"name": "ce"},
    })
    assert config["data"]["modality"] == 0 and config["data"]["threshold"] == 0.6
    with pytest.raises(ValueError, match="unknown key"):
        resolve_config({"data": {"name": "decathlon_heart", "slices": 3},
                        "model": {"name": "unet"}})


@pytest.mark.parametrize("rule, first_correct, first_scored", [
    ("skip", False, False), ("zero", False, True), ("one", True, True),
])
def test_config_sets_how_empty_slices_are_scored(tmp_path, rule, first_correct, first_scored):
    """Slice 0 of every case written by write_task has no foreground: a perfect model
    leaves it empty, and data.empty_dice decides whether it is scored and correct."""
    from ima.assemble import dataset_from_config

    write_task(tmp_path, n_cases=4)
    data = {"name": "decathlon_heart", "root": str(tmp_path), "n_val": 1, "n_test": 1,
            "size": [8, 8]}
    if rule != "skip":  # skip is the default
        data["empty_dice"] = rule
    config = resolve_config({"data": data, "model": {"name": "unet"}, "method": {"name": "ce"}})
    assert config["data"]["empty_dice"] == rule and config["data"]["dice_inclusive"] is False
    test = dataset_from_config(config, "test")
    assert test.task.empty_dice == rule and test.task.dice_inclusive is False
    y = test.y
    assert [k for _, k in test.slices] == [0, 1, 2, 3] and not y[0].any() and y[1:].any()
    perfect = torch.nn.functional.one_hot(y, 2).permute(0, 3, 1, 2).float()
    assert test.task.correct(perfect, y).tolist() == [first_correct, True, True, True]
    assert test.task.scored(perfect, y).tolist() == [first_scored, True, True, True]
    inclusive = dataset_from_config(
        resolve_config({"data": {**data, "dice_inclusive": True}, "model": {"name": "unet"}}),
        "test",
    )
    assert inclusive.task.dice_inclusive is True
    with pytest.raises(ValueError, match="empty_dice must be one of"):
        build_dataset("decathlon_heart", "test", root=str(tmp_path), empty_dice="all")
