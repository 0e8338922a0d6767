"""Per-sample margin estimates keyed by dataset index (Algorithm 2 of the paper)."""

from __future__ import annotations

import torch

from .validation import check_int, check_real

__all__ = ["DirectMarginStore", "MarginStore"]


class MarginStore:
    """Estimated margins ``E(x)`` of the training samples, updated once per epoch.

    Margins start at ``init`` (IMA: ``delta_eps``). During an epoch the method records, for
    each correctly classified sample it attacked, the outcome of BPGD:

    * a boundary point was found at distance ``d``: ``E <- (d + E) / 2`` (shrink);
    * no boundary point inside the ball: ``E <- E + delta_eps`` (expand).

    Misclassified samples are not recorded and keep their margin (BPGD is undefined for
    them), as does a sample seen in no batch. The new values are applied at the end of the
    epoch (``end_epoch``), then clipped to ``[0, eps_max]``, so every batch of an epoch
    uses the margins of the previous epoch. A sample recorded twice in one epoch keeps the
    last record. With data augmentation, a margin is that of the augmented views of the
    sample seen during the epoch.
    """

    def __init__(self, num_samples: int, *, eps_max: float, delta_eps: float, init=None):
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.eps_max = check_real("eps_max", eps_max, low=0.0, low_open=True)
        self.delta_eps = check_real("delta_eps", delta_eps, low=0.0)
        init = self.delta_eps if init is None else check_real("init", init, low=0.0)
        self.margins = torch.full((self.num_samples,), min(init, self.eps_max))
        self._pending = torch.full((self.num_samples,), float("nan"))
        self._expanded = torch.zeros(self.num_samples, dtype=torch.bool)
        self.last_update = {"expanded": 0, "shrunk": 0}

    def _check_index(self, index: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(index).reshape(-1).long().cpu()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(
                f"sample index must be in [0, {self.num_samples - 1}], got values in "
                f"[{int(index.min())}, {int(index.max())}]; was the store built for this dataset?"
            )
        return index

    def get(self, index: torch.Tensor) -> torch.Tensor:
        """Current margins of the samples ``index`` (B,), on ``index``'s device."""
        device = index.device if isinstance(index, torch.Tensor) else "cpu"
        return self.margins[self._check_index(index)].to(device)

    def record(self, index: torch.Tensor, *, crossed: torch.Tensor, distance: torch.Tensor):
        """Record BPGD outcomes for correctly classified samples ``index`` (B,).

        crossed: bool (B,), True where a boundary point was found; distance: (B,) its
        distance ``||x - x_n||`` (ignored where ``crossed`` is False). A sample listed
        more than once (a batch larger than the dataset) keeps its last row's record.
        """
        index = self._check_index(index)
        crossed = torch.as_tensor(crossed).reshape(-1).bool().cpu()
        distance = torch.as_tensor(distance, dtype=torch.float32).reshape(-1).detach().cpu()
        if not (index.numel() == crossed.numel() == distance.numel()):
            raise ValueError(
                f"index, crossed and distance must have the same length, got "
                f"{index.numel()}, {crossed.numel()} and {distance.numel()}"
            )
        bad = crossed & ~(torch.isfinite(distance) & (distance >= 0))
        if bad.any():
            # NaN would also be mistaken for "not recorded" by end_epoch.
            raise ValueError(
                f"distance must be finite and >= 0 where crossed is True, got "
                f"{distance[bad][:4].tolist()}"
            )
        # Assigning through an index that repeats leaves undefined which row lands, so
        # only each sample's last row is written.
        last = _last_occurrence(index, self.num_samples)
        index, crossed, distance = index[last], crossed[last], distance[last]
        current = self.margins[index]
        new = self.update(current, crossed, distance)
        self._pending[index] = new
        self._expanded[index] = new > current

    def update(self, current: torch.Tensor, crossed: torch.Tensor, distance: torch.Tensor):
        """Algorithm 2's rule: shrink to ``(distance + E) / 2`` where a boundary point was
        found, else expand to ``E + delta_eps`` (all tensors (B,))."""
        return torch.where(crossed, (distance + current) / 2, current + self.delta_eps)

    def pending_updates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The updates recorded this epoch and not yet applied: new margins (NaN where
        none was recorded) and whether each grew, both (num_samples,)."""
        return self._pending.clone(), self._expanded.clone()

    def absorb(self, pending: torch.Tensor, expanded: torch.Tensor) -> None:
        """Take over another store's recorded updates (from :meth:`pending_updates`),
        overriding this store's where both recorded a sample: how the processes of a
        distributed run combine their records at the end of an epoch."""
        pending = torch.as_tensor(pending, dtype=torch.float32).cpu()
        expanded = torch.as_tensor(expanded, dtype=torch.bool).cpu()
        if pending.shape != self._pending.shape or expanded.shape != self._pending.shape:
            raise ValueError(
                f"updates for {pending.numel()} samples cannot join a store of "
                f"{self.num_samples}"
            )
        got = ~torch.isnan(pending)
        self._pending[got] = pending[got]
        self._expanded[got] = expanded[got]

    def end_epoch(self) -> dict[str, float]:
        """Apply the epoch's recorded updates, clip to ``[0, eps_max]``; return statistics."""
        updated = ~torch.isnan(self._pending)
        self.margins = torch.where(updated, self._pending, self.margins).clamp(0.0, self.eps_max)
        expanded = int((self._expanded & updated).sum())
        self.last_update = {"expanded": expanded, "shrunk": int(updated.sum()) - expanded}
        self._pending.fill_(float("nan"))
        self._expanded.zero_()
        return self.stats()

    def stats(self) -> dict[str, float]:
        """Mean, median, min and max margin, and the fraction of all samples expanded and
        shrunk by the last update. The median of an even count is the mean of the two
        middle values (``torch.median`` would return the lower one)."""
        m = self.margins
        ordered = m.sort().values
        n = ordered.numel()
        return {
            "margin_mean": float(m.mean()),
            "margin_median": (float(ordered[(n - 1) // 2]) + float(ordered[n // 2])) / 2,
            "margin_min": float(m.min()),
            "margin_max": float(m.max()),
            "margin_expanded": self.last_update["expanded"] / self.num_samples,
            "margin_shrunk": self.last_update["shrunk"] / self.num_samples,
        }

    def state_dict(self) -> dict:
        return {
            "margins": self.margins.clone(),
            "pending": self._pending.clone(),
            "expanded": self._expanded.clone(),
            "last_update": dict(self.last_update),
            "eps_max": self.eps_max,
            "delta_eps": self.delta_eps,
        }

    def load_state_dict(self, state: dict) -> None:
        margins = torch.as_tensor(state["margins"], dtype=torch.float32)
        if margins.shape != (self.num_samples,):
            raise ValueError(
                f"margin state holds {margins.numel()} samples, this store {self.num_samples}"
            )
        pending = torch.as_tensor(state["pending"], dtype=torch.float32)
        expanded = torch.as_tensor(state["expanded"], dtype=torch.bool)
        if pending.shape != margins.shape or expanded.shape != margins.shape:
            raise ValueError(
                f"margin state is inconsistent: margins {tuple(margins.shape)}, pending "
                f"{tuple(pending.shape)}, expanded {tuple(expanded.shape)}"
            )
        self.margins = margins.clone()
        self._pending = pending.clone()
        self._expanded = expanded.clone()
        self.last_update = dict(state["last_update"])


def _last_occurrence(index: torch.Tensor, size: int) -> torch.Tensor:
    """Bool mask (B,) of the entries of ``index`` (values in ``[0, size)``) that no later
    entry repeats."""
    position = torch.arange(index.numel())
    last = torch.full((size,), -1).scatter_reduce(0, index, position, reduce="amax")
    return last[index] == position


class DirectMarginStore(MarginStore):
    """Margins replaced by each epoch's direct estimate (MMA training, Ding et al. 2020).

    Same storage, schedule and statistics as :class:`MarginStore` (so the margin
    distributions of MMA and IMA can be compared, as in the paper's Fig. 7), but the
    update rule of the MMA reference implementation (BorealisAI/mma_training, trainer.py
    ``update_eps``): the new margin is the estimate itself, not an average with the old
    one, and there is no ``delta_eps`` step.

    * a boundary point was found at distance ``d``: ``E <- d`` (``d = 0`` for a sample
      misclassified at the start, as the reference records);
    * none within the search range: ``E <- eps_max`` (the margin is at least that).

    Updates apply at the end of the epoch and are clipped to ``[0, eps_max]``. In the
    statistics, ``margin_expanded`` is the fraction of samples whose estimate grew and
    ``margin_shrunk`` the fraction recorded whose estimate did not grow.
    """

    def __init__(self, num_samples: int, *, eps_max: float, init: float):
        super().__init__(num_samples, eps_max=eps_max, delta_eps=0.0, init=init)

    def update(self, current: torch.Tensor, crossed: torch.Tensor, distance: torch.Tensor):
        """The estimate itself where a boundary point was found, else ``eps_max``."""
        return torch.where(crossed, distance, torch.full_like(distance, self.eps_max))
