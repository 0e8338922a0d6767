"""The attacks of an evaluation: each turns batches into robust masks per noise level.

Every evaluation attack implements one interface, :meth:`EvaluationAttack.attack`: a list
of batches ``(x, y, seed)`` in, one :class:`Outcome` per batch out. :func:`ima.evaluate`
only orchestrates (levels, pools of batches, results, sanity checks); the sanity checks
(:mod:`ima.evaluation.sanity`) run an attack's :meth:`~EvaluationAttack.fooled` again on a
few samples. Names (``attack=`` of :func:`ima.evaluate`, ``--attack`` of ``ima
evaluate``), all in :data:`EVALUATION_ATTACKS`:

* ``pgd``: the paper's 100-PGD (section 3): step ``eps / 10``, random start,
  cross-entropy and margin loss, worst case per sample. For classification it attacks a
  pool of batches through one working set (a fooled sample's place goes to the next
  waiting one); each batch draws its random starts from a generator seeded by its own
  seed, so the result is the one of attacking batch by batch. For segmentation (the task
  decides) every run goes its full ``steps`` and the lowest-Dice point is kept per sample,
  for the overlap metrics of appendix I.
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
* ``autoattack``: AutoAttack of our own (:func:`ima.attacks.autoattack`): the authors'
  ``standard`` version (APGD-CE, APGD-T, FAB-T, Square 5000 queries, as a cascade), their
  ``rand`` version (APGD-CE and APGD-DLR with EOT) or a subset (``attacks``); also for
  segmenters, whose every sample is attacked at every level with every component (the
  lowest Dice found counts in TVDI and ADI, as for 100-PGD). Per level, the fraction of
  the samples each component fooled first is kept (``extra["fooled_by_<component>"]``).
* ``autoattack-art``: AutoAttack as the Adversarial Robustness Toolbox implements it
  (:func:`ima.attacks.art_autoattack`; optional extra ``ima[autoattack]``): a
  cross-check by an independent implementation, classifiers only.
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

Adversarial attacks (pgd, spsa, autoattack, autoattack-art) carry a sample fooled at one
eps over to every larger eps (the point lies in the larger ball), so it is attacked only
once (a segmenter's, whose lowest Dice counts too, is attacked at every level).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .. import lp
from ..attacks import bpgd, ddn, pgd
from ..attacks.autoattack import VERSIONS as AUTOATTACK_VERSIONS
from ..attacks.autoattack import autoattack, check_attacks, components_of
from ..attacks.blackbox import spsa
from ..attacks.external import INSTALL_HINT, art_autoattack, have_art
from ..attacks.gradient import random_start_point
from ..tasks import SegmentationTask, Task
from ..validation import check_choice, check_int, check_real

logger = logging.getLogger(__name__)

__all__ = ["EVALUATION_ATTACKS", "EvaluationAttack", "Outcome", "Setting",
           "evaluation_attack"]


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
    other (levels, B) per-sample values, averaged over the samples into the result;
    ``overlap`` for segmentation, per level the pixel counts (3, B, K) and Dice (B,) of
    each sample's scored point (appendix I), else None."""

    robust: torch.Tensor
    per_loss: dict[str, torch.Tensor] = field(default_factory=dict)
    radii: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    overlap: list | None = None


def clean_output(model, x, y, task, batch_size: int | None = None) -> torch.Tensor:
    """The model's output on clean ``x`` (no gradients), in chunks of ``batch_size`` rows
    (all at once when None), after checking the targets fit it: the one clean pass of
    every evaluation attack."""
    with torch.no_grad():
        chunks = [x] if batch_size is None else x.split(batch_size)
        out = torch.cat([model(xb) for xb in chunks])
    task.check_target(out, y)
    return out


def _clean(model, x, y, task):
    return task.correct(clean_output(model, x, y, task), y)


class EvaluationAttack:
    """One evaluation attack; see the module docstring. Subclasses set the class fields and
    implement :meth:`fooled` (adversarial attacks) or :meth:`run` (one batch), or
    :meth:`attack` (a pool of batches)."""

    name: str = ""
    #: how result tables and progress bars title it
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

    def described(self, params: dict) -> str:
        """The attack's name in a title, from a result's ``params``: ``100-PGD``,
        ``100-step SPSA``, ``uniform noise (10 draws)``."""
        steps = params.get("steps")
        return f"{steps}-step {self.title}" if steps else self.title

    def pooled(self, task: Task) -> bool:
        """Whether :meth:`attack` takes a pool of several batches at once."""
        return False

    def attack(self, model, batches, levels: list[float], s: Setting) -> list[Outcome]:
        """One :class:`Outcome` per batch of ``batches`` (``(x, y, seed)`` on the device;
        the model in eval mode). Each batch's random numbers come from its own ``seed``,
        so an outcome does not depend on the other batches."""
        outcomes = []
        for x, y, seed in batches:
            torch.manual_seed(seed)
            outcomes.append(self.run(model, x, y, levels, s))
        return outcomes

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


class PGDAttack(EvaluationAttack):
    name, title = "pgd", "PGD"
    uses_losses = uses_random_start = True

    def described(self, params):
        return f"{params.get('steps')}-PGD"

    def params(self, s):
        segmentation = isinstance(s.task, SegmentationTask)
        return {**super().params(s), "step_size": "eps/10", "early_stop": not segmentation,
                **(_dice_rule(s.task) if segmentation else {})}

    def pooled(self, task):
        return not isinstance(task, SegmentationTask)

    def attack(self, model, batches, levels, s):
        if not self.pooled(s.task):
            return super().attack(model, batches, levels, s)
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        robust, per_loss = _pooled_robustness(model, x, y, levels, s,
                                              [(seed, len(yb)) for _, yb, seed in batches])
        sizes = [len(b[1]) for b in batches]
        return [Outcome(r, dict(zip(per_loss, pl, strict=True)))
                for r, *pl in zip(robust.split(sizes, dim=1),
                                  *(v.split(sizes, dim=1) for v in per_loss.values()),
                                  strict=True)]

    def run(self, model, x, y, levels, s):
        """One segmentation batch: robust masks and the lowest-Dice points' overlaps."""
        robust, per_loss, overlap = _segmentation_robustness(
            model, x, y, levels, s.norm, s.steps, s.losses, s.random_start, s.bounds, s.task)
        return Outcome(robust, per_loss, overlap=overlap)

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


class SPSAAttack(EvaluationAttack):
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


class AutoAttackAttack(EvaluationAttack):
    """AutoAttack of our own (:func:`ima.attacks.autoattack`), for classifiers and
    segmenters; per level the fraction of samples each component fooled first
    (``extra["fooled_by_<component>"]``)."""

    name, title = "autoattack", "AutoAttack"
    defaults = {"version": "standard", "attacks": None, "targets": 9,
                "square_queries": 5000, "eot": None}

    def resolve(self, options, levels):
        o = super().resolve(options, levels)
        check_choice("version", o["version"], tuple(AUTOATTACK_VERSIONS))
        if o["attacks"] is not None:
            o["attacks"] = check_attacks(o["attacks"])
        check_int("targets", o["targets"], low=1)
        check_int("square_queries", o["square_queries"], low=1)
        if o["eot"] is not None:
            check_int("eot", o["eot"], low=1)
        return o

    def params(self, s):
        return {**super().params(s), "library": "ima",
                **(_dice_rule(s.task) if isinstance(s.task, SegmentationTask) else {})}

    def described(self, params):
        subset = params.get("attacks")
        return f"AutoAttack ({'+'.join(subset) if subset else params.get('version')})"

    def cascade(self, model, x, y, eps, s, **kw):
        o = s.options
        return autoattack(model, x, y, eps=eps, norm=s.norm, version=o["version"],
                          attacks=o["attacks"], steps=s.steps, targets=o["targets"],
                          square_queries=o["square_queries"], eot=o["eot"], bounds=s.bounds,
                          task=s.task, **kw)

    def fooled(self, model, x, y, eps, s):
        return self.cascade(model, x, y, eps, s).success

    def run(self, model, x, y, levels, s):
        components, skipped = components_of(s.options["version"], s.task, x.shape,
                                            s.options["attacks"])
        for name, why in skipped.items():
            logger.warning("AutoAttack runs without %s: it %s", name, why)
        out = clean_output(model, x, y, s.task)
        alive = s.task.correct(out, y)
        segmentation = isinstance(s.task, SegmentationTask)
        best = (x, s.task.counts(out, y), s.task.dice(out, y)) if segmentation else None
        by = torch.full((len(y),), -1, dtype=torch.long, device=x.device)
        rows, firsts, overlap = [], [], []
        for e in levels:
            # a segmenter is attacked at every level, every sample (its lowest Dice counts
            # in the overlap metrics); a classifier's fooled samples carry over
            idx = torch.arange(len(y), device=x.device) if segmentation \
                else alive.nonzero().squeeze(1)
            if e > 0 and idx.numel():
                r = self.cascade(model, x[idx], y[idx], e, s, cascade=not segmentation)
                first = r.success & alive[idx]
                by[idx[first]] = r.fooled_by[first]
                alive[idx[first]] = False
                if segmentation:
                    best = _lower_dice_points(model, y, r.x, best, s.task)
            rows.append(alive.clone())
            firsts.append(by.clone())
            if segmentation:
                overlap.append((torch.stack(best[1]).cpu(), best[2].cpu()))
        firsts = torch.stack(firsts).cpu()
        extra = {f"fooled_by_{name}": firsts == i for i, name in enumerate(components)}
        return Outcome(torch.stack(rows).cpu(), extra=extra,
                       overlap=overlap if segmentation else None)


class ARTAutoAttackAttack(EvaluationAttack):
    """AutoAttack as the Adversarial Robustness Toolbox implements it: a cross-check."""

    name, title = "autoattack-art", "AutoAttack (ART)"
    defaults = {"restarts": 5, "square_queries": 5000}

    def resolve(self, options, levels):
        if not have_art():
            raise ImportError(INSTALL_HINT)
        o = super().resolve(options, levels)
        check_int("restarts", o["restarts"], low=1)
        check_int("square_queries", o["square_queries"], low=0)
        return o

    def params(self, s):
        return {**super().params(s), "library": "adversarial-robustness-toolbox"}

    def fooled(self, model, x, y, eps, s):
        return art_autoattack(model, x, y, eps=eps, norm=s.norm, steps=s.steps,
                              batch_size=s.batch_size, bounds=s.bounds, task=s.task,
                              **s.options).success


class NoiseAttack(EvaluationAttack):
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

    def described(self, params):
        return f"{self.title} ({params.get('draws')} draws)"

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


class UniformNoiseAttack(NoiseAttack):
    name, title = "uniform-noise", "uniform noise"
    sampling = "uniform in the volume of the eps-ball, clipped to the bounds"

    def draw(self, x, eps, norm):
        return lp.sample_ball(x, eps, norm)


class GaussianNoiseAttack(NoiseAttack):
    name, title = "gaussian-noise", "Gaussian noise"
    sampling = ("i.i.d. Gaussian (L2: expected L2 norm eps, Linf: per-element standard "
                "deviation eps), projected onto the eps-ball, clipped to the bounds")

    def draw(self, x, eps, norm):
        # A Gaussian's norm exceeds eps about half the time (in low dimension by far);
        # projecting onto the ball keeps every draw a perturbation of size at most eps,
        # like the attacks it is compared with.
        return lp.project(lp.sample_gaussian(x, eps, norm), eps, norm)


class MinimalNormAttack(EvaluationAttack):
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


class DDNMinimalAttack(MinimalNormAttack):
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


class BPGDMinimalAttack(MinimalNormAttack):
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
        cap = lp.box_radius(x, s.bounds, s.norm)  # a ball this large holds every input
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


def _pooled_robustness(model, x, y, levels, setting: Setting, seeds):
    """Per-level robust masks of a pool of batches: overall (levels, B) and per loss.

    seeds: ``(seed, size)`` per batch of the pool, in order: each batch's random starts
    are drawn from its own generator, so a sample's result does not depend on the pool.
    The pool is attacked ``setting.batch_size`` samples at a time, a fooled sample's place
    going to the next one (:func:`ima.attacks.pgd`'s ``width``).
    """
    s = setting
    clean = s.task.correct(clean_output(model, x, y, s.task, s.batch_size), y)
    generators = [torch.Generator(device=x.device).manual_seed(k) for k, _ in seeds]
    owner = torch.repeat_interleave(torch.arange(len(seeds), device=x.device),
                                    torch.tensor([size for _, size in seeds], device=x.device))
    alive = {loss: clean.clone() for loss in s.losses}
    rows = {loss: [] for loss in s.losses}
    for e in levels:
        for loss in s.losses:
            idx = alive[loss].nonzero().squeeze(1)
            if e > 0 and idx.numel():
                start = None
                if s.random_start:
                    chunks = [idx[owner[idx] == b] for b in range(len(generators))]
                    start = torch.cat([
                        random_start_point(x[c], e, s.norm, s.bounds, generator=g)
                        for c, g in zip(chunks, generators, strict=True) if c.numel()
                    ])
                r = pgd(
                    model, x[idx], y[idx], eps=e, norm=s.norm, steps=s.steps, step_size=e / 10,
                    loss=loss, random_start=False, start=start, early_stop=True,
                    bounds=s.bounds, task=s.task, width=s.batch_size,
                )
                alive[loss][idx[r.success]] = False
            rows[loss].append(alive[loss].clone())
    per_loss = {loss: torch.stack(rows[loss]).cpu() for loss in s.losses}
    overall = torch.stack([per_loss[loss] for loss in s.losses]).all(dim=0)
    return overall, per_loss


def lowest_dice(model, x, y, eps, best, *, norm, steps, losses, random_start, bounds, task):
    """Attack every sample at ``eps`` with each loss (full ``steps``, no early stop) and
    keep, per sample, the point of lowest Dice. ``best``: ``(points, (tp, fp, fn), dice)``
    so far; returns it updated, and per loss whether any iterate fooled the sample."""
    fooled = {}
    for loss in losses:
        r = pgd(
            model, x, y, eps=eps, norm=norm, steps=steps, step_size=eps / 10, loss=loss,
            random_start=random_start, early_stop=False, bounds=bounds, task=task,
        )
        # correct_steps counts the correct iterates among the first `steps`; the last
        # iterate is judged by success
        fooled[loss] = r.success | (r.correct_steps < steps)
        best = _lower_dice_points(model, y, r.x, best, task)
    return best, fooled


def _lower_dice_points(model, y, found, best, task):
    """``best`` (``(points, (tp, fp, fn), dice)`` per sample) with each sample's point
    replaced by its ``found`` one where that has the lower Dice."""
    points, counts, dice = best
    with torch.no_grad():
        new_counts = task.counts(model(found), y)
    new_dice = task.dice_from_counts(*new_counts)
    worse = task.lower_dice(new_dice, dice)
    points = torch.where(lp.expand_as_batch(worse, points), found, points)
    counts = tuple(torch.where(worse[:, None], new, old)
                   for new, old in zip(new_counts, counts, strict=True))
    return points, counts, torch.where(worse, new_dice, dice)


def _segmentation_robustness(model, x, y, levels, norm, steps, losses, random_start, bounds,
                             task):
    """As :func:`_robustness`, plus per level the pixel counts (3, B, K) and Dice (B,) of
    each sample's lowest-Dice point (see the module docstring)."""
    out = clean_output(model, x, y, task)
    clean = task.correct(out, y)
    counts = task.counts(out, y)
    best = (x, counts, task.dice_from_counts(*counts))
    alive = {loss: clean.clone() for loss in losses}
    rows = {loss: [] for loss in losses}
    overlap = []
    for e in levels:
        if e > 0:
            best, fooled = lowest_dice(
                model, x, y, e, best, norm=norm, steps=steps, losses=losses,
                random_start=random_start, bounds=bounds, task=task,
            )
            for loss in losses:
                alive[loss] &= ~fooled[loss]
        for loss in losses:
            rows[loss].append(alive[loss].clone())
        overlap.append((torch.stack(best[1]).cpu(), best[2].cpu()))
    per_loss = {loss: torch.stack(rows[loss]).cpu() for loss in losses}
    overall = torch.stack([per_loss[loss] for loss in losses]).all(dim=0)
    return overall, per_loss, overlap


def _dice_rule(task: SegmentationTask) -> dict:
    """What "correct" meant for a segmentation result (recorded with it)."""
    return {"threshold": task.threshold, "empty_dice": task.empty_dice,
            "dice_inclusive": task.dice_inclusive}


#: the evaluation attacks by name
EVALUATION_ATTACKS = {
    a.name: a
    for a in (PGDAttack(), SPSAAttack(), UniformNoiseAttack(), GaussianNoiseAttack(),
              AutoAttackAttack(), ARTAutoAttackAttack(), DDNMinimalAttack(),
              BPGDMinimalAttack())
}


def evaluation_attack(name: str) -> EvaluationAttack:
    """The evaluation attack called ``name`` (a key of :data:`EVALUATION_ATTACKS`)."""
    return EVALUATION_ATTACKS[check_choice("attack", name, tuple(EVALUATION_ATTACKS))]
