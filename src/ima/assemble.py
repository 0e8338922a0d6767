"""The parts of an experiment (data, model, method, optimizer) from a resolved config.

Naming: ``X_from_config(config)`` reads a config; the registries' ``build_X(name, ...)``
build by name (:func:`ima.data.build_dataset`, :func:`ima.models.build_model`,
:func:`ima.methods.build_method`), and these functions call them."""

from __future__ import annotations

import torch

from .config import method_hyperparameters
from .data import build_dataset
from .methods import build_method
from .models import build_model
from .tasks import get_task

__all__ = [
    "data_bounds",
    "data_class_names",
    "data_task",
    "dataset_from_config",
    "method_from_config",
    "model_from_config",
    "optimizer_from_config",
]

_DATA_KEYS = ("name", "batch_size", "eval_batch_size", "num_workers", "class_names")


def dataset_from_config(config: dict, split: str):
    """The ``split`` ("train", "val" or "test") of the config's dataset, with the config's
    ``data.class_names`` (see :func:`ima.data.build_dataset`)."""
    data = config["data"]
    kwargs = {k: v for k, v in data.items() if k not in _DATA_KEYS}
    return build_dataset(data["name"], split, class_names=data.get("class_names"), **kwargs)


def data_bounds(data):
    """The valid input range of a dataset (or of a DataLoader's dataset): its ``bounds``
    attribute; image data without the attribute is in [0, 1]. The one place ima looks."""
    return getattr(getattr(data, "dataset", data), "bounds", (0.0, 1.0))


def data_class_names(data) -> list[str] | None:
    """The classes' names in label order of a dataset (or of a DataLoader's dataset): its
    ``class_names`` attribute; None when it does not name them. The one place ima looks."""
    names = getattr(getattr(data, "dataset", data), "class_names", None)
    return None if names is None else [str(n) for n in names]


def data_task(data):
    """What "correct" and "loss" mean for a dataset (or a DataLoader's dataset): its
    ``task`` attribute (a segmentation dataset declares a ``SegmentationTask``);
    classification without it."""
    return get_task(getattr(getattr(data, "dataset", data), "task", None))


def model_from_config(config: dict) -> torch.nn.Module:
    model = config["model"]
    return build_model(model["name"], **{k: v for k, v in model.items() if k != "name"})


def method_from_config(config: dict, train_set):
    return build_method(
        config["method"]["name"],
        num_samples=len(train_set),
        epochs=config["train"]["epochs"],
        bounds=data_bounds(train_set),
        task=data_task(train_set),
        **method_hyperparameters(config),
    )


def optimizer_from_config(config: dict, model: torch.nn.Module):
    """The optimizer and learning-rate scheduler (stepped once per epoch) of the config."""
    o = config["optim"]
    params = model.parameters()
    if o["name"] == "adam":
        optimizer = torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"])
    elif o["name"] == "adamw":
        optimizer = torch.optim.AdamW(params, lr=o["lr"], weight_decay=o["weight_decay"])
    else:
        optimizer = torch.optim.SGD(
            params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
            nesterov=o["nesterov"],
        )
    if o["schedule"] == "step":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=o["milestones"], gamma=o["gamma"]
        )
    elif o["schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config["train"]["epochs"], eta_min=o["min_lr"]
        )
    elif o["schedule"] == "poly":
        # nnU-Net's schedule: lr * (1 - epoch / epochs) ** 0.9
        epochs = config["train"]["epochs"]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: (1 - min(epoch, epochs) / epochs) ** 0.9
        )
    else:
        scheduler = None
    return optimizer, scheduler
