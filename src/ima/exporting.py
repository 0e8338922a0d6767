"""Export a trained model for deployment (TorchScript, ONNX, torch.export) and check
that the exported file computes what the original model computes.

The exported model takes the run's inputs as they are (images in ``[0, 1]``: any
normalisation lives inside the model) and returns its raw outputs (logits), with a
free batch dimension. Beside the file, ``<file>.json`` says what the outputs mean: the
class names in output order (``class_names``, null when the data has none), the positive
class of a binary model (``eval.positive_class``), the input shape and range, and the run
and epoch it came from. Every export is read back from disk and run on a few inputs of
the run's test split; the file is kept only if its outputs match the original's within
``atol + rtol * max|output|``, else it is deleted and :class:`ExportMismatch` is raised.

Formats:

* ``torchscript``: ``torch.jit.trace`` (``torch.jit.script`` when tracing fails),
  loadable with ``torch.jit.load`` without ``ima``, and from C++ (LibTorch). PyTorch
  deprecates TorchScript; its deprecation warnings are silenced here and ``export`` is
  the forward-looking choice.
* ``export``: ``torch.export`` (a ``.pt2`` ExportedProgram, ``torch.export.load``).
* ``onnx``: ``torch.onnx.export`` with the torch.export-based exporter, which needs the
  optional packages ``onnx`` and ``onnxscript`` (``pip install 'ima[onnx]'``). The check
  runs the file with ``onnxruntime`` when installed, else with onnx's reference
  evaluator.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .assemble import data_bounds, data_class_names, data_task
from .runs import Run, atomic_write, load_run
from .tasks import ClassificationTask
from .validation import check_choice, check_int, check_real

__all__ = ["FORMATS", "ExportMismatch", "ExportResult", "MissingExtra", "export_metadata",
           "export_model"]

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx", "export")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx", "export": ".pt2"}


class ExportMismatch(ValueError):
    """The exported model's outputs differ from the original's beyond the tolerance."""


class MissingExtra(ImportError):
    """An optional package needed for the requested export is not installed."""


@dataclass
class ExportResult:
    """Where the model went and how closely the exported file reproduces it."""

    path: Path
    format: str
    max_abs_diff: float
    tolerance: float
    n_checked: int
    input_shape: tuple[int, ...]
    checker: str
    class_names: list[str] | None = None
    metadata_path: Path | None = None

    def summary(self) -> str:
        classes = (f"; outputs are the classes {', '.join(self.class_names)}"
                   if self.class_names else "")
        return (f"wrote {self.path} ({self.format}); inputs (batch, "
                f"{', '.join(map(str, self.input_shape))}); outputs match the original on "
                f"{self.n_checked} test inputs ({self.checker}): max abs diff "
                f"{self.max_abs_diff:.3g} <= tolerance {self.tolerance:.3g}{classes}; "
                f"metadata in {self.metadata_path}")


def _need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(
            f"ONNX export needs the optional package(s) {', '.join(missing)}: install them "
            "with `pip install 'ima[onnx]'` (or `pip install onnx onnxscript`)"
        )


def _test_inputs(run: Run, n: int) -> torch.Tensor:
    data = run.dataset("test")
    n = min(n, len(data))
    return torch.stack([data[i][0] for i in range(n)])


def _write_torchscript(model, example, path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r".*torch\.jit.*")
        # Shape checks inside layers (e.g. InstanceNorm's channel count) become trace
        # constants, which is right for a fixed input size; the batch dimension is
        # checked below on two other batch sizes.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            module = torch.jit.trace(model, example, check_trace=False)
        except Exception as err:  # data-dependent control flow cannot be traced
            logger.info("tracing failed (%s); scripting instead", err)
            module = torch.jit.script(model)
        module.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")

    def run(x):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return loaded(x)

    return run, "torch.jit.load"


def _write_export(model, example, path):
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()

    def run(x):
        with torch.no_grad():
            return loaded(x)

    return run, "torch.export.load"


def _write_onnx(model, example, path):
    _need("onnx", "onnxscript")
    import numpy as np
    import onnx

    batch = torch.export.Dim("batch", min=1)
    # The exporter's optimiser logs every pass at INFO; keep a CLI at INFO readable.
    noisy = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [log.level for log in noisy]
    for log in noisy:
        log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
    try:
        torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["input"],
                          output_names=["output"], dynamic_shapes=({0: batch},),
                          external_data=False, verbose=False)
    finally:
        for log, level in zip(noisy, levels, strict=True):
            log.setLevel(level)
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x):
            return torch.from_numpy(np.asarray(session.run(None, {name: x.numpy()})[0]))

        return run, "onnxruntime"
    from onnx.reference import ReferenceEvaluator

    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    evaluator = ReferenceEvaluator(graph)
    name = graph.graph.input[0].name

    def run(x):
        return torch.from_numpy(np.asarray(evaluator.run(None, {name: x.numpy()})[0]))

    return run, "onnx reference evaluator"


_WRITERS = {"torchscript": _write_torchscript, "onnx": _write_onnx, "export": _write_export}


def export_metadata(run: Run, *, format: str, path: Path, input_shape,
                    num_classes: int | None) -> dict:
    """What an exported file's outputs and inputs mean: ``class_names`` (output ``k`` is
    class ``class_names[k]``; None when the data names none), ``positive_class`` and
    ``positive_class_name`` (a binary model's positive class, ``eval.positive_class``),
    ``input_shape``, ``bounds`` (the valid input range), and the run and epoch."""
    from .evaluation.results import positive_index

    data = run.dataset("test")
    names = data_class_names(data)
    classification = isinstance(data_task(data), ClassificationTask)
    positive = (positive_index(run.config["eval"].get("positive_class"), names, num_classes)
                if classification else None)
    bounds = data_bounds(data)
    return {
        "file": path.name, "format": format, "input_shape": list(map(int, input_shape)),
        "bounds": None if bounds is None else list(bounds), "num_classes": num_classes,
        "class_names": names, "positive_class": positive,
        "positive_class_name": None if positive is None or names is None else names[positive],
        "run": str(run.dir), "epoch": run.epoch,
    }


def export_model(run, *, format: str = "torchscript", path=None, epoch: int | None = None,
                 n_check: int = 16, atol: float = 1e-4, rtol: float = 1e-4) -> ExportResult:
    """Write a run's model (``format``: torchscript, onnx or export) to ``path`` (default
    ``RUN_DIR/export/model-epoch-NNN.<pt|onnx|pt2>``) and check it on ``n_check`` test
    inputs and on a batch of one (batch sizes other than the example's 2, so a batch
    size baked into the file is caught). Raises :class:`ExportMismatch` (the file is removed) when
    ``max|exported - original| > atol + rtol * max|original|``; :class:`MissingExtra`
    when the ONNX packages are missing. The metadata (class names, positive class, input
    shape and range, run and epoch) go to ``<path>.json`` (:func:`export_metadata`).
    """
    format = check_choice("format", format, FORMATS)
    n_check = check_int("n_check", n_check, low=3)
    atol = check_real("atol", atol, low=0.0)
    rtol = check_real("rtol", rtol, low=0.0)
    if format == "onnx":
        _need("onnx", "onnxscript")
    run = run if isinstance(run, Run) else load_run(run, epoch=epoch)
    model = run.model.cpu().eval()
    inputs = _test_inputs(run, n_check)
    if len(inputs) < 3:
        raise ValueError("the run's test split needs at least 3 samples to check an export")
    # An example batch of 2: export specialises a dimension of size 1 to a constant.
    example = inputs[:2].clone()
    if path is None:
        path = run.dir / "export" / f"model-epoch-{run.epoch:03d}{SUFFIX[format]}"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed only once it checks out, so a file at
    # ``path`` is always one that computes what the model computes.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                               suffix=SUFFIX[format])
    os.close(fd)
    try:
        try:
            call, checker = _WRITERS[format](model, example, tmp)
        except (MissingExtra, KeyboardInterrupt):
            raise
        except Exception as err:  # the exporters raise many types; say which step failed
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(f"{format} export of {type(model).__name__} failed: "
                             f"{type(err).__name__}: {first}") from err
        # The whole check batch (another size than the example) and a batch of one.
        with torch.no_grad():
            expected = model(inputs).float()
            expected_one = model(inputs[:1]).float()
            got = call(inputs).float()
            got_one = call(inputs[:1]).float()
        if got.shape != expected.shape or got_one.shape != expected_one.shape:
            raise ExportMismatch(f"exported model returns shape {tuple(got.shape)}, the "
                                 f"original {tuple(expected.shape)}")
        diff = float(max((got - expected).abs().max(), (got_one - expected_one).abs().max()))
        tolerance = atol + rtol * float(expected.abs().max())
        if not diff <= tolerance:
            raise ExportMismatch(
                f"exported {format} model differs from the original by up to {diff:.3g} "
                f"on {len(inputs)} test inputs (tolerance {tolerance:.3g}); not written"
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    metadata = export_metadata(run, format=format, path=path, input_shape=inputs.shape[1:],
                               num_classes=expected.shape[1] if expected.dim() > 1 else None)
    metadata_path = path.with_name(path.name + ".json")
    text = json.dumps(metadata, indent=1)
    atomic_write(metadata_path, lambda tmp: Path(tmp).write_text(text))
    result = ExportResult(path, format, diff, tolerance, len(inputs),
                          tuple(inputs.shape[1:]), checker, metadata["class_names"],
                          metadata_path)
    logger.debug("%s", result.summary())
    return result
