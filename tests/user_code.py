"""A user's own code for the import-model and figure tests: a dataset factory whose file
order is sorted by class, a small CNN factory, and weights that classify it exactly, as
someone who trained the CNN in their own script would have them. The source is written
into a folder of the test's own (a module outside ima, opened with the trust opt-in)."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

SOURCE = '''
import torch
from ima.data import ArrayDataset


def bars(split, *, per_class=6, classes=3):
    """1x6x6 images whose brightness tells the class, sorted by class (all 0s first)."""
    g = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
    y = torch.arange(classes).repeat_interleave(per_class)
    x = ((y.float() + 1) / (classes + 1)).view(-1, 1, 1, 1)
    x = (x + 0.02 * torch.randn(len(y), 1, 6, 6, generator=g)).clamp(0, 1)
    return ArrayDataset(x, y, num_classes=classes, name="bars", split=split,
                        bounds=(0.0, 1.0))


class SmallCNN(torch.nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.head = torch.nn.Linear(2, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def small_cnn(num_classes=3):
    return SmallCNN(num_classes)


class Doubled(SmallCNN):
    """Same weights as SmallCNN, other outputs: not what small_cnn builds."""

    def forward(self, x):
        return 2 * super().forward(x)
'''


def write_user_module(folder, name: str):
    """Write the user's module ``name`` into ``folder`` and import it; ``folder`` must be
    on ``sys.path`` (``monkeypatch.syspath_prepend``), as the user's folder is."""
    Path(folder, f"{name}.py").write_text(SOURCE)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def trained(module, num_classes: int = 3, gain: float = 200.0) -> torch.nn.Module:
    """A ``module.SmallCNN`` whose logits are ``-gain * (mean - c_k)**2`` up to a term
    common to all classes: class ``k`` wins where the mean brightness is nearest
    ``c_k = (k + 1) / (classes + 1)``, as the data is made."""
    model = module.SmallCNN(num_classes)
    centres = (torch.arange(num_classes).float() + 1) / (num_classes + 1)
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.conv.weight[0, 0, 1, 1] = 1.0
        model.head.weight.zero_()
        model.head.weight[:, 0] = 2 * gain * centres
        model.head.bias.copy_(-gain * centres**2)
    return model.eval()
