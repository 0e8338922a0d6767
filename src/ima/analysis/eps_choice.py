"""A noise level for vanilla adversarial training read off IMA's margins (appendix C.3)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..runs import imported_from
from ..validation import check_real

__all__ = [
    "EpsSuggestion",
    "run_margins",
    "suggest_eps",
]

logger = logging.getLogger(__name__)


def run_margins(run) -> tuple[torch.Tensor, float | None, str]:
    """The per-sample margins a run's method estimated, its ``eps_max`` and the method's
    name. Raises ValueError for methods that keep no margins (all but ima and mma)."""
    store = getattr(run.method, "margins", None)
    name = run.config["method"]["name"]
    if imported_from(run.dir) is not None:
        raise ValueError(f"run {str(run.dir)!r} holds a model imported by `ima import-model`: "
                         "it has no margins (ima and mma estimate them while training)")
    if store is None or not hasattr(store, "margins"):
        raise ValueError(
            f"run {str(run.dir)!r} was trained with method {name!r}, which keeps no "
            "per-sample margins; margins are estimated by ima (and mma)"
        )
    return store.margins.detach().cpu().float(), getattr(store, "eps_max", None), name


@dataclass
class EpsSuggestion:
    """A noise level for vanilla adversarial training read off a margin distribution.

    ``eps``: the ``quantile`` of the ``n_samples`` margins; ``quantiles``: a few others
    for context; ``at_eps_max``: fraction of margins clipped at ``eps_max`` (censored:
    their true estimate may be larger).
    """

    eps: float
    quantile: float
    n_samples: int
    eps_max: float | None
    at_eps_max: float
    quantiles: dict[float, float]
    method: str = "ima"

    def summary(self) -> str:
        lines = [
            f"suggested eps for vanilla adversarial training: {self.eps:.4g} "
            f"(the {self.quantile:g} quantile of {self.n_samples} {self.method} margins: "
            f"{100 * (1 - self.quantile):.0f}% of the training samples have a larger margin)",
            "margin quantiles: " + ", ".join(f"{q:g}: {v:.4g}"
                                             for q, v in self.quantiles.items()),
        ]
        if self.eps_max is not None:
            lines.append(f"{100 * self.at_eps_max:.1f}% of the margins are at eps_max = "
                         f"{self.eps_max:g}")
        return "\n".join(lines)


def suggest_eps(margins, *, quantile: float = 0.25, eps_max: float | None = None,
                method: str = "ima") -> EpsSuggestion:
    """Appendix C.3: a training noise level "just smaller than the majority of the
    margins", the ``quantile`` (default 0.25) of the estimated margins.

    Why a low quantile: vanilla adversarial training (Eq. 2) gives every noisy sample
    ``x + delta`` with ``||delta|| = eps`` the label of ``x``; where ``eps`` exceeds the
    sample's true margin the label is wrong and pulls the boundary off the Bayes one
    (appendix D). With the 0.25 quantile, three quarters of the training samples have an
    estimated margin at least ``eps``, so most noisy samples keep a correct label, while
    ``eps`` stays as large as possible. IMA's estimates also err high in high dimensions
    (margin overestimation, appendix C.2), one more reason not to take the median. The
    suggestion is a starting point for a small grid search around it (appendix C.3).

    margins: (N,) estimated margins (``run.method.margins.margins``). Warns (log) when
    the quantile sits at ``eps_max``: the distribution is clipped there, so the value is
    only a lower bound (train IMA with a larger ``eps_max``).
    """
    quantile = check_real("quantile", quantile, low=0.0, high=1.0, low_open=True,
                          high_open=True)
    m = np.asarray(torch.as_tensor(margins, dtype=torch.float64).reshape(-1).cpu())
    if m.size == 0:
        raise ValueError("margins must hold at least one value, got none")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("margins must be finite and >= 0")
    value = float(np.quantile(m, quantile))
    at_max = 0.0
    if eps_max is not None:
        eps_max = float(eps_max)
        at_max = float((m >= eps_max * (1 - 1e-6)).mean())
        if value >= eps_max * (1 - 1e-6):
            logger.warning(
                "the %g quantile of the margins is at eps_max = %g: the margins are clipped "
                "there, so the suggestion is a lower bound; train with a larger eps_max",
                quantile, eps_max,
            )
    levels = sorted({0.1, 0.25, 0.5, 0.75, 0.9, quantile})
    return EpsSuggestion(
        eps=value, quantile=quantile, n_samples=int(m.size), eps_max=eps_max,
        at_eps_max=at_max, quantiles={q: float(np.quantile(m, q)) for q in levels},
        method=method,
    )
