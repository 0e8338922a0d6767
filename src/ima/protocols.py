"""The attacks of an evaluation: how each turns a batch into robust masks per noise level.

:func:`ima.evaluate` runs one of these per batch; the sanity checks (:mod:`ima.sanity`)
run them again on a few samples. Names (``attack=`` of :func:`ima.evaluate`, ``--attack``
of ``ima evaluate``):

* ``pgd``: the paper's 100-PGD (section 3; run by :mod:`ima.evaluation` itself, here for
  the checks): step ``eps / 10``, random start, cross-entropy and margin loss, worst case
  per sample.
* ``spsa``: the black-box SPSA attack (:func:`ima.attacks.spsa`; appendix H.2): margin
  loss, 2048 antithetic direction pairs per gradient estimate, 100 Adam iterations.
* ``uniform-noise``: random noise drawn uniformly in the *volume* of the eps-ball of the
  norm (:func:`ima.lp.sample_ball`; for Linf every element is uniform in ``[-eps, eps]``,
  classic uniform white noise; for L2 in high dimension nearly all draws lie close to the
  sphere of radius eps), then clipped to the bounds.
* ``gaussian-noise``: i.i.d. Gaussian noise (:func:`ima.lp.sample_gaussian`): for L2
  ``eps`` is its *expected L2 norm*; for Linf ``eps`` is the per-element standard
  deviation; each draw is projected onto the eps-ball (so, like every attack here, no
  perturbation is larger than eps), then clipped to the bounds.
  Both noises: ``draws`` (10) independent draws per sample and level; a sample is robust
  at eps when it is clean-correct and every draw is classified correctly (worst case per
  sample). Levels are drawn independently (noise at one level says nothing about
  another). The mean over draws is kept as well (``extra["accuracy_average"]``).
* ``autoattack``: AutoAttack as the Adversarial Robustness Toolbox implements it
  (:func:`ima.attacks.autoattack`; optional extra ``ima[autoattack]``).
* ``ddn-min``: each sample's minimal adversarial L2 norm estimated by DDN
  (:func:`ima.ddn`, 100 steps, Rony et al. 2019), L2 only.
* ``bpgd-min``: each sample's boundary distance by BPGD (Algorithm 3; 20 steps, alpha 4,
  10 bisections, from the clean input: no random start, so the path leaves ``x`` along
  the gradient) with a growing budget: the first budget is the smallest positive eps
  asked for (or ``init_eps``); a sample whose BPGD finds no boundary point is tried again
  with the budget doubled, up to ``doublings`` (10) times, or until the ball covers the
  whole input box. The radius is the norm of the boundary point found.
  For both minimal-norm attacks the curve is read off the radii: a sample is robust at
  eps when it is clean-correct and its radius is above eps (or no adversarial point was
  found). Radii are upper bounds of the true minimal norms (every adversarial point is),
  so these curves, like any attack's, are upper bounds of the true robust accuracy.

Adversarial attacks (pgd, spsa, autoattack) carry a sample fooled at one eps over to every
larger eps (the point lies in the larger ball), so it is attacked only once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import lp
from .attacks import bpgd, ddn, pgd
from .attacks.blackbox import spsa
from .attacks.external import autoattack
from .checks import check_choice, check_int, check_real
from .tasks import Task

__all__ = ["ATTACKS", "Outcome", "Protocol", "Setting", "get_protocol"]


@dataclass(frozen=True)
class Setting:
    """Everything an attack needs besides the batch: resolved and validated."""

    norm: str
    steps: int | None
    losses: tuple[str, ...]
    random_start: bool
    bounds: tuple[float, float] | None
    task: Task
    options: dict
    batch_size: int


@dataclass
class Outcome:
    """One batch's result: ``robust`` (levels, B) bool on the CPU; ``per_loss`` the same per
    loss (empty where the attack has no losses); ``radii`` (B,) minimal adversarial norms
    (NaN: none found; 0: misclassified clean) for minimal-norm attacks, else None; ``extra``
    other (levels, B) per-sample values, averaged over the samples into the result."""

    robust: torch.Tensor
    per_loss: dict[str, torch.Tensor] = field(default_factory=dict)
    radii: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _clean(model, x, y, task):
    with torch.no_grad():
        out = model(x)
    task.check_target(out, y)
    return task.correct(out, y)


class Protocol:
    """One evaluation attack; see the module docstring. Subclasses set the class fields and
    implement :meth:`fooled` (adversarial attacks) or :meth:`run`."""

    name: str = ""
    #: how the result table titles it
    title: str = ""
    norms: tuple[str, ...] = lp.NORMS
    #: None: the attack has no iterations (``steps`` is not used)
    default_steps: int | None = 100
    #: attack-specific options and their defaults (``options=`` of :func:`ima.evaluate`)
    defaults: dict = {}
    #: a worst case over the ball: fooled at eps means fooled at every larger eps
    adversarial: bool = True
    #: the curve is read off per-sample minimal norms
    minimal: bool = False
    #: which of evaluate's common arguments the attack uses
    uses_losses: bool = False
    uses_random_start: bool = False

    def resolve(self, options: dict | None, levels: list[float]) -> dict:
        """Validated options with defaults filled in."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(
                f"options {', '.join(map(repr, unknown))} are not known to attack "
                f"{self.name!r} (allowed: {allowed})"
            )
        return {**self.defaults, **options}

    def params(self, s: Setting) -> dict:
        """The attack's parameters as written to the result file."""
        out = {"steps": s.steps} if self.default_steps is not None else {}
        if self.uses_random_start:
            out["random_start"] = s.random_start
        if self.uses_losses:
            out["losses"] = list(s.losses)
        return {**out, **s.options, "bounds": s.bounds and list(s.bounds)}

    def fooled(self, model, x, y, eps: float, s: Setting) -> torch.Tensor:
        """Whether the attack at ``eps`` fools each sample (B,) (adversarial attacks)."""
        raise NotImplementedError

    def run(self, model, x, y, levels: list[float], s: Setting) -> Outcome:
        """Robust masks of one batch at every level (the model is in eval mode)."""
        clean = _clean(model, x, y, s.task)
        alive = clean.clone()
        rows = []
        for e in levels:
            idx = alive.nonzero().squeeze(1)
            if e > 0 and idx.numel():
                alive[idx[self.fooled(model, x[idx], y[idx], e, s)]] = False
            rows.append(alive.clone())
        return Outcome(torch.stack(rows).cpu())


class PGDProtocol(Protocol):
    name, title = "pgd", "PGD"
    uses_losses = uses_random_start = True

    def params(self, s):
        return {**super().params(s), "step_size": "eps/10", "early_stop": True}

    def fooled(self, model, x, y, eps, s):
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for loss in s.losses:
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            e = eps[idx] if isinstance(eps, torch.Tensor) and eps.dim() else eps
            r = pgd(model, x[idx], y[idx], eps=e, norm=s.norm, steps=s.steps,
                    step_size=e / 10, loss=loss, random_start=s.random_start,
                    early_stop=True, bounds=s.bounds, task=s.task)
            fooled[idx[r.success]] = True
        return fooled


class SPSAProtocol(Protocol):
    name, title = "spsa", "SPSA"
    defaults = {"n_samples": 2048, "delta": 0.01, "lr": 0.01, "query_batch": 4096}
    uses_random_start = True

    def resolve(self, options, levels):
        o = super().resolve(options, levels)
        check_int("n_samples", o["n_samples"], low=1)
        check_real("delta", o["delta"], low=0.0, low_open=True)
        check_real("lr", o["lr"], low=0.0, low_open=True)
        check_int("query_batch", o["query_batch"], low=2)
        return o

    def params(self, s):
        return {**super().params(s), "loss": "margin", "early_stop": True,
                "optimizer": "adam"}

    def fooled(self, model, x, y, eps, s):
        return spsa(model, x, y, eps=eps, norm=s.norm, steps=s.steps,
                    random_start=s.random_start, early_stop=True, bounds=s.bounds,
                    task=s.task, **s.options).success

    def run(self, model, x, y, levels, s):
        out = super().run(model, x, y, levels, s)
        out.per_loss = {"margin": out.robust}
        return out


class AutoAttackProtocol(Protocol):
    name, title = "autoattack", "AutoAttack (ART)"
    defaults = {"restarts": 5, "square_queries": 5000}

    def resolve(self, options, levels):
        o = super().resolve(options, levels)
        check_int("restarts", o["restarts"], low=1)
        check_int("square_queries", o["square_queries"], low=0)
        return o

    def params(self, s):
        return {**super().params(s), "library": "adversarial-robustness-toolbox"}

    def fooled(self, model, x, y, eps, s):
        return autoattack(model, x, y, eps=eps, norm=s.norm, steps=s.steps,
                          batch_size=s.batch_size, bounds=s.bounds, task=s.task,
                          **s.options).success


class NoiseProtocol(Protocol):
    default_steps = None
    defaults = {"draws": 10}
    adversarial = False
    sampling = ""

    def resolve(self, options, levels):
        o = super().resolve(options, levels)
        check_int("draws", o["draws"], low=1)
        return o

    def params(self, s):
        return {**super().params(s), "sampling": self.sampling}

    def draw(self, x, eps, norm):
        raise NotImplementedError

    def run(self, model, x, y, levels, s):
        clean = _clean(model, x, y, s.task)
        rows, averages = [], []
        for e in levels:
            worst, count = clean.clone(), clean.float()
            if e > 0:
                count = torch.zeros_like(count)
                for _ in range(s.options["draws"]):
                    noisy = lp.clip_to_bounds(x + self.draw(x, e, s.norm), s.bounds)
                    with torch.no_grad():
                        ok = s.task.correct(model(noisy), y) & clean
                    worst &= ok
                    count += ok.float()
                count /= s.options["draws"]
            rows.append(worst)
            averages.append(count)
        return Outcome(torch.stack(rows).cpu(),
                       extra={"accuracy_average": torch.stack(averages).cpu()})


class UniformNoiseProtocol(NoiseProtocol):
    name, title = "uniform-noise", "uniform noise"
    sampling = "uniform in the volume of the eps-ball, clipped to the bounds"

    def draw(self, x, eps, norm):
        return lp.sample_ball(x, eps, norm)


class GaussianNoiseProtocol(NoiseProtocol):
    name, title = "gaussian-noise", "Gaussian noise"
    sampling = ("i.i.d. Gaussian (L2: expected L2 norm eps, Linf: per-element standard "
                "deviation eps), projected onto the eps-ball, clipped to the bounds")

    def draw(self, x, eps, norm):
        # A Gaussian's norm exceeds eps about half the time (in low dimension by far);
        # projecting onto the ball keeps every draw a perturbation of size at most eps,
        # like the attacks it is compared with.
        return lp.project(lp.sample_gaussian(x, eps, norm), eps, norm)


class MinimalProtocol(Protocol):
    adversarial = False
    minimal = True

    def radii(self, model, x, y, clean, levels, s) -> torch.Tensor:
        """Per-sample minimal adversarial norms (B,) of the clean-correct samples (NaN
        where none was found; values of the others are ignored)."""
        raise NotImplementedError

    def run(self, model, x, y, levels, s):
        clean = _clean(model, x, y, s.task)
        radius = self.radii(model, x, y, clean, levels, s)
        radius = torch.where(clean, radius, torch.zeros_like(radius))
        far = torch.isnan(radius)
        rows = [clean & (far | (radius > e)) for e in levels]
        return Outcome(torch.stack(rows).cpu(), radii=radius.cpu())


class DDNProtocol(MinimalProtocol):
    name, title = "ddn-min", "DDN minimal norms"
    norms = ("l2",)
    defaults = {"gamma": 0.05, "init_norm": 1.0}

    def resolve(self, options, levels):
        o = super().resolve(options, levels)
        check_real("gamma", o["gamma"], low=0.0, high=1.0, low_open=True, high_open=True)
        check_real("init_norm", o["init_norm"], low=0.0, low_open=True)
        return o

    def radii(self, model, x, y, clean, levels, s):
        r = ddn(model, x, y, steps=s.steps, bounds=s.bounds, task=s.task, **s.options)
        length = lp.sample_norm(r.x - x, "l2")
        return torch.where(r.success, length, torch.full_like(length, math.nan))


class GrowingBPGDProtocol(MinimalProtocol):
    name, title = "bpgd-min", "BPGD boundary distances"
    default_steps = 20
    defaults = {"init_eps": None, "doublings": 10, "n_binary": 10, "alpha": 4.0}

    def resolve(self, options, levels):
        o = super().resolve(options, levels)
        if o["init_eps"] is None:
            positive = [e for e in levels if e > 0]
            o["init_eps"] = positive[0] if positive else 1.0
        check_real("init_eps", o["init_eps"], low=0.0, low_open=True)
        check_int("doublings", o["doublings"], low=0)
        check_int("n_binary", o["n_binary"], low=0)
        check_real("alpha", o["alpha"], low=0.0, low_open=True)
        return o

    def params(self, s):
        return {**super().params(s), "random_start": False}

    def radii(self, model, x, y, clean, levels, s):
        o = s.options
        radius = torch.full((x.shape[0],), math.nan, device=x.device, dtype=x.dtype)
        if s.bounds is None:
            cap = torch.full_like(radius, math.inf)
        else:
            # the farthest point of the box: a ball this large holds every valid input
            cap = lp.sample_norm(torch.maximum(x - s.bounds[0], s.bounds[1] - x), s.norm)
        todo = clean.nonzero().squeeze(1)
        budget = float(o["init_eps"])
        for _ in range(o["doublings"] + 1):
            if todo.numel() == 0:
                break
            eps = torch.clamp(torch.full_like(cap[todo], budget), max=cap[todo])
            r = bpgd(model, x[todo], y[todo], eps=eps, norm=s.norm, steps=s.steps,
                     alpha=o["alpha"], n_binary=o["n_binary"], random_start=False,
                     bounds=s.bounds, task=s.task)
            hit = todo[r.success]
            radius[hit] = lp.sample_norm(r.x[r.success] - x[hit], s.norm)
            todo = todo[~r.success & (eps < cap[todo])]
            budget *= 2
        return radius


_PROTOCOLS = {
    p.name: p
    for p in (PGDProtocol(), SPSAProtocol(), UniformNoiseProtocol(), GaussianNoiseProtocol(),
              AutoAttackProtocol(), DDNProtocol(), GrowingBPGDProtocol())
}
ATTACKS = tuple(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """The evaluation attack called ``name`` (one of :data:`ATTACKS`)."""
    return _PROTOCOLS[check_choice("attack", name, ATTACKS)]
