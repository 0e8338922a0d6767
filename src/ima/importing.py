"""Models trained elsewhere as run folders (``ima import-model``, :func:`import_model`).

The config names the data and the model's factory (``model.name: "mymodels:small_cnn"``,
called with the section's other keys); the weights are the model's ``state_dict``, from
a file saved with ``torch.save(model.state_dict(), PATH)`` (read with
``weights_only=True``: a whole pickled model is refused, as it could run code) or, in
Python, from the model itself. The run folder holds what a training run of zero epochs
would: the marker (recording where the weights came from, :func:`ima.runs.imported_from`),
the resolved ``config.yaml`` and ``checkpoint.pt`` with epoch 0, the weights and the
initial state of the ``ce`` method; no ``metrics.csv`` (nothing was trained here). Every
command that reads a run folder works on it; those that need a training history
(``ima select``, ``ima plot curves``, ``ima train --resume``) say so.

Before anything is written: the config resolves, the output folder may be made (an
existing one is replaced only with ``overwrite`` and only if ima made it, as for
``ima train --out``), the weights load strictly into the model the config builds (every
key present, none extra, every shape equal), the method builds on the training split,
and the model's output on one batch of the evaluation split is one logits tensor with
as many classes as the data has.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from . import assemble, runs
from .config import apply_overrides, load_config, resolve_config
from .evaluation.inputs import checked_output
from .modes import eval_mode
from .training import with_class_names

__all__ = ["import_model", "read_state_dict"]

logger = logging.getLogger(__name__)

#: How many samples the output check runs the model on.
CHECK_SAMPLES = 16

_SAVE = "save the weights with torch.save(model.state_dict(), PATH)"
_WHOLE_MODEL = ("a whole pickled model (torch.save(model)) is not supported: save "
                "torch.save(model.state_dict(), PATH), or pass the model in Python: "
                "ima.import_model(config, model=model, out=RUN_DIR)")


def import_model(config, weights=None, out=None, *, model: torch.nn.Module | None = None,
                 overrides=(), overwrite: bool = False) -> runs.Run:
    """Make the run folder ``out`` from a model trained elsewhere; return it loaded.

    config: a YAML file or a config dict naming the data and the model
    (``model.name``, a registered name or your factory ``"module:function"``); its
    method, if given, must be ``ce`` (an imported model brings no method state such as
    IMA's margins). weights: a file holding the model's ``state_dict``; or ``model``: the
    trained ``torch.nn.Module`` itself (one of the two). The factory must build the same
    network: the weights load strictly, and a given ``model`` must compute the same
    outputs as the rebuilt one on the checked batch. overrides: ``section.key=value``
    strings applied to the config. overwrite: replace an existing ima run folder
    (only what ima wrote in it), as ``ima train --overwrite`` does.

    Raises ``ValueError`` (one line, naming the first keys) for weights that do not fit
    the model and for a model whose output does not fit the data; nothing is written
    then. Opening the folder later needs ``trust_code`` (``--trust-code``) when the
    config names your code.
    """
    if out is None or not str(out).strip():
        raise TypeError("import_model needs out, the run folder to create")
    if (weights is None) == (model is None):
        raise TypeError("import_model needs the weights: a state_dict file (weights=PATH) "
                        "or the trained model (model=MODULE), not both")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = Path(out)
    config = _resolved(config, overrides)
    _check_out(out, overwrite)
    if model is None:
        source = str(Path(weights).resolve())
        state = read_state_dict(weights)
        where = f"the weights in {str(weights)!r}"
    else:
        source = f"a {type(model).__name__} passed to ima.import_model"
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        where = f"the weights of the {type(model).__name__} passed"
    net = assemble.model_from_config(config)
    check_weights(net, state, where, config["model"]["name"])
    runs.load_weights(net, state, where)
    net.eval()
    train_set = assemble.dataset_from_config(config, "train")
    method = assemble.method_from_config(config, train_set)
    _check_output(net, config, model)

    config = with_class_names(config, train_set)
    runs.prepare_run_dir(out, overwrite=overwrite, imported_from=source)
    runs.write_config(out, config)
    runs.save_checkpoint(runs.checkpoint_path(out), {
        "epoch": 0, "model": net.state_dict(), "method": method.state_dict(),
        "config": config, "imported_from": source,
    })
    logger.debug("imported %s into %s", source, out)
    return runs.load_run(out, trust_code=True)  # the user's own config, as for ima.train


def _resolved(config, overrides) -> dict:
    """The resolved config; its method must be ``ce``."""
    if isinstance(config, str | Path):
        config = load_config(config, overrides)
    elif isinstance(config, Mapping):
        config = resolve_config(apply_overrides(dict(config), overrides))
    else:
        raise TypeError(f"config must be a YAML file or a dict, got {type(config).__name__}")
    name = config["method"]["name"]
    if name != "ce":
        raise ValueError(
            f"method.name {name!r}: an imported model brings no state of a training method "
            "(such as IMA's margins); leave out the method section (ce, the default)")
    return config


def _check_out(out: Path, overwrite: bool) -> None:
    """The rules of ``ima train --out``: never a non-empty folder unless ``overwrite``
    and ima made it."""
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"run folder {str(out)!r} already exists and is not empty; choose another "
            "--out, or pass --overwrite to replace an ima run folder")
    runs.prepare_run_dir(out, overwrite=overwrite, check_only=True)


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` in a file saved with ``torch.save(model.state_dict(), path)``
    (or the model weights of an ima checkpoint), read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a pickle it refuses
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:
            raise ValueError(f"weights file {str(path)!r} holds pickled Python objects "
                             f"({found.group(1)}), not only tensors; {_WHOLE_MODEL}") from None
        raise ValueError(f"weights file {str(path)!r} is not a file torch.save wrote "
                         f"({type(err).__name__}); {_SAVE}") from None
    if isinstance(state, dict) and state.get("format") == runs.CHECKPOINT_FORMAT:
        state = state.get("model")
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"weights file {str(path)!r} holds a {type(state).__name__}, not a "
                         f"state_dict (parameter names to tensors); {_SAVE}")
    nested = [k for k, v in state.items() if isinstance(v, Mapping)]
    others = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if nested:
        raise ValueError(
            f"weights file {str(path)!r} holds a dict of dicts ({_first(nested)}), not a "
            f"state_dict; if the weights are under {nested[0]!r}, save that alone: "
            f"torch.save(checkpoint[{nested[0]!r}], PATH)")
    if others:
        raise ValueError(f"weights file {str(path)!r} is not a state_dict: {_first(others)} "
                         "hold no tensors")
    return dict(state)


def check_weights(model: torch.nn.Module, state: Mapping, where: str, name: str) -> None:
    """One-line ``ValueError`` when ``state`` does not load strictly into ``model``:
    the first missing and unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} {tuple(state[k].shape)} in the weights, {tuple(v.shape)} in the model"
                 for k, v in expected.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = [f"{what}: {_first(keys)}" for what, keys in (
        ("missing", missing), ("unexpected", unexpected),
        ("shape mismatch", misshapen)) if keys]
    if not problems:
        return
    hint = ""
    for prefix in ("module.", "_orig_mod."):
        if unexpected and all(k.startswith(prefix) for k in state):
            hint = (f" (every key starts with {prefix!r}: save the unwrapped model's "
                    "state_dict, or strip the prefix)")
    raise ValueError(f"{where} do not fit model {name!r} ({type(model).__name__}): "
                     + "; ".join(problems) + hint)


def _first(items, k: int = 3) -> str:
    shown = ", ".join(str(i) for i in items[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")


@torch.no_grad()
def _check_output(net: torch.nn.Module, config: dict, given: torch.nn.Module | None) -> None:
    """The model's output on the first samples of the evaluation split: one logits
    tensor (N, classes[, H, W]) with the data's number of classes; a ``given`` model must
    compute the same."""
    split = config["eval"]["split"]
    data = assemble.dataset_from_config(config, split)
    count = min(CHECK_SAMPLES, len(data))
    if count == 0:
        raise ValueError(f"the {split} split of data {config['data']['name']!r} is empty")
    items = [data[i] for i in range(count)]
    x = torch.stack([torch.as_tensor(item[0]) for item in items])
    y = torch.stack([torch.as_tensor(item[1]) for item in items])
    name = config["model"]["name"]
    logits = checked_output(net, x, who=f"model {name!r}", where=f"on {split} ")
    shape = tuple(logits.shape)
    if len(shape) != y.dim() + 1 or shape[0] != count or shape[2:] != tuple(y.shape[1:]):
        want = "(N, classes)" if y.dim() == 1 else "(N, classes, " + ", ".join(
            map(str, y.shape[1:])) + ")"
        raise ValueError(f"model {name!r} returns logits of shape {shape} for {count} "
                         f"{split} inputs; the data's labels need {want}")
    _check_classes(shape[1], data, y, name, config["data"]["name"])
    if given is not None:
        _check_same(net, given, x, logits)


def _check_classes(classes: int, data, y: torch.Tensor, name: str, data_name: str) -> None:
    expected = getattr(data, "num_classes", None)
    if expected is not None and int(expected) != classes:
        raise ValueError(f"model {name!r} gives {classes} classes but data {data_name!r} has "
                         f"{int(expected)}; build the model for {int(expected)} classes "
                         "(e.g. model.num_classes in the config)")
    if y.numel() and int(y.max()) >= classes:
        raise ValueError(f"model {name!r} gives {classes} classes but data {data_name!r} "
                         f"holds label {int(y.max())}")


def _check_same(net: torch.nn.Module, given: torch.nn.Module, x: torch.Tensor,
                logits: torch.Tensor) -> None:
    """The model passed in must compute what the model rebuilt from the config does."""
    device = next((p.device for p in given.parameters()), torch.device("cpu"))
    try:
        with eval_mode(given):
            theirs = given(x.to(device))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"the model passed fails on the inputs its rebuilt copy takes "
                         f"(shape {tuple(x.shape)}, float32): {first}") from None
    if not isinstance(theirs, torch.Tensor) or theirs.shape != logits.shape:
        raise ValueError("the model passed and the one its config builds give outputs of "
                         "different shapes; does model.name name its factory?")
    diff = float((theirs.detach().float().cpu() - logits.float()).abs().max())
    scale = float(logits.abs().max()) or 1.0
    if diff > 1e-4 * scale + 1e-5:
        raise ValueError(f"the model passed and the one its config builds with the same "
                         f"weights give different outputs (max abs diff {diff:.3g}); does "
                         "model.name name the factory of this network?")
