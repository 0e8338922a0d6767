"""Attacks run through other libraries, installed as optional extras.

:func:`art_autoattack` runs AutoAttack (Croce & Hein 2020) as the Adversarial Robustness
Toolbox (ART, ``pip install 'ima[autoattack]'``) implements it: an independent
implementation to cross-check the evaluation's own attacks against.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import ClassificationTask, Task
from ..validation import check_int
from .base import AttackResult, check_attack_inputs, clean_pass

__all__ = ["art_autoattack", "have_art"]

INSTALL_HINT = (
    "AutoAttack needs the Adversarial Robustness Toolbox: pip install 'ima[autoattack]' "
    "(or pip install adversarial-robustness-toolbox)"
)


#: ART's Square attack draws tiles that do not fit smaller images (its L2 version fails
#: below 6 x 6 pixels).
_SQUARE_MIN_SIDE = 6


def have_art() -> bool:
    """Whether the Adversarial Robustness Toolbox can be imported."""
    try:
        import art.attacks.evasion  # noqa: F401
        import art.estimators.classification  # noqa: F401
    except ImportError:
        return False
    return True


def art_autoattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "l2",
    steps: int = 100,
    restarts: int = 5,
    square_queries: int = 5000,
    batch_size: int = 128,
    bounds=(0.0, 1.0),
    task: Task | None = None,
) -> AttackResult:
    """AutoAttack through ART (``art.attacks.evasion.AutoAttack``), untargeted, L2 or Linf.

    x: (B, ...) inputs inside ``bounds``; y: (B,) class labels (classification only); eps:
    one float for the whole batch (ART's attacks take a scalar radius). The attacks are
    ART's default AutoAttack list, run in turn on the samples not yet fooled: APGD with
    cross-entropy and APGD with the difference-of-logits-ratio loss (``steps`` iterations
    each, ``restarts`` random starts, initial step ``2 * eps`` as in Croce & Hein 2020;
    DLR needs three classes, so binary models skip it), DeepFool (100 iterations, kept only
    where its point lies in the ball) and Square (``square_queries`` queries, ``restarts``
    restarts; 0 skips it; ART runs it on images (B, C, H, W) of at least 6 x 6 pixels only,
    so other inputs, such as 2-D points, skip it). This is ART's version, not the authors'
    "standard" one (APGD-CE, APGD-T, FAB-T, Square).

    Every returned point is projected onto the eps-ball (:func:`ima.lp.project`) and into
    ``bounds``, and ``success`` is the model's own verdict on it, so it never depends on
    ART's bookkeeping. The model's modes, its parameters' ``requires_grad`` and ``.grad``
    are restored after; numpy's global random state too (ART draws its random starts from
    it, seeded here from torch's generator, so :func:`ima.evaluate`'s seed fixes them).
    Raises ImportError with the install command when ART is missing.
    """
    task, eps_b, bounds, _ = check_attack_inputs(
        x, y, eps=eps, norm=norm, steps=steps, bounds=bounds, task=task,
    )
    if not isinstance(task, ClassificationTask):
        raise ValueError(f"autoattack supports classification only, got task {task!r}")
    if isinstance(eps, torch.Tensor) and eps.dim() and not bool((eps_b == eps_b[0]).all()):
        raise ValueError("autoattack takes one eps for the whole batch, got per-sample values")
    eps = float(eps_b[0])
    restarts = check_int("restarts", restarts, low=1)
    square_queries = check_int("square_queries", square_queries, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)
    try:
        from art.attacks.evasion import (
            AutoAttack,
            AutoProjectedGradientDescent,
            DeepFool,
            SquareAttack,
        )
        from art.estimators.classification import PyTorchClassifier
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err

    x = x.detach()
    if eps == 0:
        with eval_mode(model), torch.no_grad():
            return AttackResult(x.clone(), ~task.correct(model(x), y))
    params = list(model.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    # ART draws from numpy's legacy global generator, so that is the one to seed and restore.
    np_state = np.random.get_state()  # noqa: NPY002
    np.random.seed(int(torch.randint(0, 2**31 - 1, (1,))))  # noqa: NPY002
    art_norm = 2 if norm == "l2" else np.inf
    try:
        with eval_mode(model):
            for p in params:
                p.requires_grad_(False)
            classes = clean_pass(model, task, x, y).shape[1]
            estimator = PyTorchClassifier(
                model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                nb_classes=classes, clip_values=None if bounds is None else tuple(bounds),
                device_type="gpu" if x.is_cuda else "cpu",
            )
            losses = ["cross_entropy"] + (["difference_logits_ratio"] if classes >= 3 else [])
            attacks = [
                AutoProjectedGradientDescent(
                    estimator=estimator, norm=art_norm, eps=eps, eps_step=2 * eps,
                    max_iter=steps, targeted=False, nb_random_init=restarts,
                    batch_size=batch_size, loss_type=loss, verbose=False,
                )
                for loss in losses
            ]
            attacks.append(DeepFool(classifier=estimator, max_iter=100, epsilon=1e-3,
                                    nb_grads=min(10, classes), batch_size=batch_size,
                                    verbose=False))
            if square_queries and x.dim() == 4 and min(x.shape[2:]) >= _SQUARE_MIN_SIDE:
                attacks.append(SquareAttack(estimator=estimator, norm=art_norm,
                                            max_iter=square_queries, eps=eps, p_init=0.8,
                                            nb_restarts=restarts, batch_size=batch_size,
                                            verbose=False))
            runner = AutoAttack(estimator=estimator, norm=art_norm, eps=eps, eps_step=2 * eps,
                                attacks=attacks, batch_size=batch_size)
            found = runner.generate(x=x.cpu().numpy().astype(np.float32),
                                    y=y.cpu().numpy())
            found = torch.as_tensor(found, dtype=x.dtype, device=x.device).reshape(x.shape)
            moved = lp.clip_to_bounds(x + lp.project(found - x, eps, norm), bounds)
            with torch.no_grad():
                success = ~task.correct(model(moved), y)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        for p, (flag, grad) in zip(params, saved, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
    return AttackResult(moved, success)
