"""A tiny dataset in nnU-Net v2's raw format, written for the tests: NIfTI volumes of
ellipsoid blobs in noise (one MRI-like channel, labels background and blob)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_raw_dataset(raw: Path, *, dataset_id: int = 901, name: str = "Blobs",
                      cases: int = 6, shape=(24, 20, 6), seed: int = 0) -> str:
    """Write ``Dataset{id:03d}_{name}`` under ``raw`` and return its folder name.

    Each case is a volume of ``shape`` (x, y, z voxels; z is the slice axis nnU-Net's 2d
    configuration cuts along after transposing) with an ellipsoid of label 1 whose
    intensity is 2 above a noisy background."""
    import nibabel as nib

    folder = raw / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    for c in range(cases):
        centre = np.array(shape) / 2 + rng.uniform(-1.5, 1.5, size=3)
        radii = np.array(shape) * rng.uniform(0.25, 0.35, size=3)
        label = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
        image = 100.0 + 20.0 * label + rng.normal(0.0, 5.0, size=shape)
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine),
                 folder / "imagesTr" / f"case{c:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine),
                 folder / "labelsTr" / f"case{c:03d}.nii.gz")
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "blob": 1},
            "numTraining": cases, "file_ending": ".nii.gz", "name": name}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
    return folder.name
