"""Sanity checks of an evaluation, run with it and written into its result (``checks``).

Each check is a plain dict ``{"name", "passed", "detail"}``; ``passed`` is True, False, or
None when the check does not apply (``detail`` says why). They follow the usual advice for
evaluating defences (Carlini et al. 2019, "On evaluating adversarial robustness";
Uesato et al. 2018), kept cheap:

* ``monotone``: the attack, run independently at each level on a small subset, never
  gives a higher accuracy at a larger eps by more than sampling noise. The main run
  carries a sample fooled at a small eps over to larger ones, so its curve is monotone by
  construction; independent runs at the larger levels are needed only for the samples
  fooled at a smaller one (every other sample was attacked at every level anyway), so
  the check re-attacks just those.
* ``unbounded``: PGD with a budget that covers the whole input box (or 10 times the data's
  spread for unbounded data) drives accuracy to about zero; for minimal-norm attacks,
  every clean-correct sample got a radius.
* ``whitebox_vs_blackbox``: the white-box result (PGD, AutoAttack) is at least as strong as
  a black-box or random-noise result (SPSA, white noise) of the same run, norm and split,
  on the samples and levels they share.
* the model checks of :func:`model_checks` (AutoAttack's flags for gradient masking):
  ``deterministic``, ``logits``, ``gradients``, ``batch_independent``.

"Sampling noise" is 2 binomial standard deviations (:func:`ima.stats.binomial_std`) of
the accuracies compared, on the number of samples compared.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import torch

from .. import lp
from ..stats import binomial_std
from .attacks import EVALUATION_ATTACKS

__all__ = [
    "NOISE_Z",
    "STRONG",
    "WEAK",
    "compare_attacks",
    "cross_checks",
    "farthest_eps",
    "model_checks",
    "monotone",
    "record",
    "run_checks",
    "unbounded",
]

logger = logging.getLogger(__name__)

#: how many binomial standard deviations count as sampling noise
NOISE_Z = 2.0
#: white-box attacks, and the attacks they must be at least as strong as
STRONG = ("pgd", "autoattack", "autoattack-art")
WEAK = ("spsa", "uniform-noise", "gaussian-noise")


def record(name: str, passed: bool | None, detail: str) -> dict:
    """One check's entry; a failed one is logged as a warning."""
    if passed is False:
        logger.warning("sanity check %r failed: %s", name, detail)
    return {"name": name, "passed": passed, "detail": detail}


def _allowance(p: float, n: int) -> float:
    return NOISE_Z * binomial_std(p, n)


def monotone(levels, robust: torch.Tensor, *, revived: int = 0, note: str = "") -> dict:
    """Check that accuracy (mean of ``robust`` (levels, n) over samples) never rises with
    eps by more than sampling noise. ``revived``: how many samples fooled at a smaller eps
    survived the independent attack at a larger one (for the detail)."""
    n = robust.shape[1]
    acc = robust.float().mean(dim=1).tolist()
    worst = None
    for j in range(len(acc)):
        for i in range(j):
            rise = acc[j] - acc[i]
            allow = _allowance((acc[i] + acc[j]) / 2, n)
            if worst is None or rise - allow > worst[0] - worst[1]:
                worst = (rise, allow, i, j)
    if worst is None:
        return record("monotone", None, "only one noise level: nothing to compare")
    rise, allow, i, j = worst
    passed = rise <= allow
    detail = (
        f"on {n} samples, accuracy {acc[j]:.4f} at eps {levels[j]:g} vs {acc[i]:.4f} at eps "
        f"{levels[i]:g}: rise {rise:+.4f}, allowed {allow:.4f} (sampling noise)"
        if rise > 0 else f"on {n} samples, accuracy never rises with eps"
    )
    if revived:
        detail += f"; {revived} sample(s) fooled at a smaller eps resisted a larger one"
    return record("monotone", passed, detail + (f" ({note})" if note else ""))


def unbounded(robust: int, n: int, what: str) -> dict:
    """Check that ``robust`` of ``n`` samples surviving an unbounded attack is about zero."""
    if n == 0:
        return record("unbounded", None, "no clean-correct sample to attack")
    allow = _allowance(0.0, n)
    acc = robust / n
    return record(
        "unbounded", acc <= allow,
        f"{what}: accuracy {acc:.4f} ({robust} of {n} samples), allowed {allow:.4f}",
    )


def farthest_eps(x: torch.Tensor, bounds, levels, norm: str) -> torch.Tensor:
    """Per-sample budget (B,) that no valid input lies beyond: the ``norm`` distance to the
    farthest corner of the bounds box; for unbounded data 10 times the largest of the eps
    levels and of the samples' distances to their mean."""
    if bounds is not None:
        return lp.box_radius(x, bounds, norm)
    spread = float(lp.sample_norm(x - x.mean(dim=0, keepdim=True), norm).max())
    return torch.full((x.shape[0],), 10.0 * max(max(levels), spread, 1e-3),
                      device=x.device, dtype=x.dtype)


def _positions(result) -> list[int] | None:
    """Positions of a result's samples in its split, or None if they are unknown."""
    if getattr(result, "indices", None) is not None:
        return list(result.indices)
    if result.subset is None or re.fullmatch(r"first \d+ samples", result.subset):
        return list(range(result.n_samples))
    return None


def compare_attacks(strong, weak, *, label_strong: str = "", label_weak: str = "") -> dict:
    """Check that ``strong`` (a white-box result) leaves no more samples robust than
    ``weak`` (black-box or noise) beyond sampling noise, on their shared samples and eps."""
    name = "whitebox_vs_blackbox"
    ls, lw = label_strong or strong.attack, label_weak or weak.attack
    if strong.norm != weak.norm or strong.split != weak.split:
        return record(name, None, f"{ls} and {lw} differ in norm or split")
    ps, pw = _positions(strong), _positions(weak)
    if ps is None or pw is None:
        return record(name, None, f"the samples of {ls} or {lw} are not recorded")
    where_s = {p: k for k, p in enumerate(ps)}
    shared = [(where_s[p], k) for k, p in enumerate(pw) if p in where_s]
    levels = [e for e in weak.eps if e > 0 and e in strong.eps]
    if not shared or not levels:
        return record(name, None, f"{ls} and {lw} share no sample or positive eps")
    cols_s = torch.tensor([a for a, _ in shared])
    cols_w = torch.tensor([b for _, b in shared])
    n = len(shared)
    worst, beaten = None, 0
    for e in levels:
        rs = torch.tensor(strong.robust[strong.eps.index(e)])[cols_s]
        rw = torch.tensor(weak.robust[weak.eps.index(e)])[cols_w]
        beaten = max(beaten, int((rs & ~rw).sum()))
        a_s, a_w = float(rs.float().mean()), float(rw.float().mean())
        rise, allow = a_s - a_w, _allowance((a_s + a_w) / 2, n)
        if worst is None or rise - allow > worst[0] - worst[1]:
            worst = (rise, allow, e, a_s, a_w)
    rise, allow, e, a_s, a_w = worst
    detail = (
        f"on {n} shared samples, worst eps {e:g}: {ls} accuracy {a_s:.4f}, {lw} accuracy "
        f"{a_w:.4f}, allowed excess {allow:.4f}; at most {beaten} sample(s) at one eps "
        f"fooled by {lw} but not by {ls}"
    )
    return record(name, rise <= allow, detail)


#: Samples the model checks run alone to compare with their rows of a whole batch.
ALONE = 8
#: Fraction of samples with an exactly zero input gradient that flags gradient masking.
ZERO_GRADIENTS = 0.1


def model_checks(model, x: torch.Tensor, y: torch.Tensor, task) -> list[dict]:
    """The gradient-masking flags of AutoAttack's own checks (Croce and Hein 2020), on
    the first samples (model in eval mode):

    * ``deterministic``: the same input twice gives the same output (else the model is
      randomised: evaluate it with expectation over transformation, AutoAttack's
      ``rand`` version, and distrust single-run attacks);
    * ``logits``: the outputs are not probabilities (rows in [0, 1] summing to 1 over the
      classes): attacks' losses need logits;
    * ``gradients``: at most a tenth of the samples have an exactly zero input gradient of
      the loss (else gradients are masked and white-box attacks fail silently);
    * ``batch_independent``: a sample's output does not depend on the other samples of
      its batch (it would, e.g., with batch norm in training mode).
    """
    with torch.no_grad():
        first, second = model(x), model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(min(ALONE, len(x)))])
    out = []
    gap = float((first - second).abs().max())
    deterministic = gap <= 1e-5 * (1 + float(first.abs().max()))
    out.append(record("deterministic", deterministic,
                      f"two passes over the same {len(x)} inputs differ by at most {gap:.3g}"
                      + ("" if gap == 0 else "; a randomised model needs expectation over "
                         "transformation (AutoAttack's rand version)")))
    sums = first.sum(dim=1)
    probabilities = bool(((first >= 0) & (first <= 1)).all()) and bool(
        torch.allclose(sums, torch.ones_like(sums), atol=1e-4))
    out.append(record("logits", not probabilities,
                      "outputs are probabilities (in [0, 1], summing to 1): remove the "
                      "softmax, attacks need logits" if probabilities
                      else "outputs are not probabilities"))
    point = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        grad = torch.autograd.grad(task.loss(model(point), y).sum(), point)[0]
    zero = int((grad.flatten(1).abs().amax(dim=1) == 0).sum())
    out.append(record("gradients", zero <= ZERO_GRADIENTS * len(x),
                      f"{zero} of {len(x)} samples have an exactly zero input gradient"
                      + ("; gradient masking: check with a black-box attack (SPSA)"
                         if zero > ZERO_GRADIENTS * len(x) else "")))
    gap = float((alone - first[: len(alone)]).abs().max())
    if not deterministic:
        out.append(record("batch_independent", None, "not checked: the model is randomised"))
    else:
        out.append(record("batch_independent", gap <= 1e-4 * (1 + float(first.abs().max())),
                          f"{len(alone)} samples alone and in their batch differ by at most "
                          f"{gap:.3g}"))
    return out


def run_checks(attack, model, setting, levels, kept, robust, radii) -> list[dict]:
    """The monotone and unbounded checks of one evaluation, then the model checks (model
    in eval mode): ``kept`` the first samples' batches, ``robust`` (levels, n) the
    result's masks."""
    x = torch.cat([c[0] for c in kept])
    y = torch.cat([c[1] for c in kept])
    return _attack_checks(attack, model, setting, levels, x, y, robust, radii) + \
        model_checks(model, x, y, setting.task)


def _attack_checks(attack, model, setting, levels, x, y, robust, radii) -> list[dict]:
    sub = robust[:, : len(y)]
    out = []
    if attack.minimal:
        out.append(record(
            "monotone", None, "accuracy read off per-sample radii never rises with eps"))
        clean = robust[0]
        missing = clean & torch.isnan(radii.to(torch.float64))
        out.append(unbounded(
            int(missing.sum()), int(clean.sum()),
            f"clean-correct samples without a radius after {attack.name}'s unbounded search",
        ))
        return out
    if attack.adversarial:
        independent, revived = sub.clone(), 0
        for j in range(2, len(levels)):
            idx = (sub[0] & ~sub[j - 1]).nonzero().squeeze(1)
            if idx.numel():
                moved = idx.to(x.device)
                fooled = attack.fooled(model, x[moved], y[moved], levels[j], setting).cpu()
                independent[j, idx[~fooled]] = True
                revived += int((~fooled).sum())
        out.append(monotone(levels, independent, revived=revived,
                                   note=f"independent {attack.name} runs per level"))
    else:
        out.append(monotone(levels, sub, note="noise drawn independently per level"))
    idx = sub[0].nonzero().squeeze(1).to(x.device)
    # PGD with a budget past every input: the evaluation's own settings when it is PGD
    own = attack.name == "pgd"
    pgd_steps = setting.steps if own else 100
    pgd_losses = setting.losses if own else setting.task.attack_losses
    fooled = torch.zeros(0, dtype=torch.bool)
    if idx.numel():
        xs = x[idx]
        big = farthest_eps(xs, setting.bounds, levels, setting.norm)
        strong = dataclasses.replace(setting, steps=pgd_steps, losses=pgd_losses,
                                     random_start=True, options={})
        fooled = EVALUATION_ATTACKS["pgd"].fooled(model, xs, y[idx], big, strong)
    out.append(unbounded(
        int((~fooled).sum()), int(idx.numel()),
        f"{pgd_steps}-PGD with a budget that covers every valid input",
    ))
    return out


def cross_checks(result, references) -> list[dict]:
    """White-box versus black-box checks against ``references`` ((label, result) pairs)."""
    mine = result.attack
    if mine in STRONG:
        partners, what = WEAK, "SPSA or white-noise"
    elif mine in WEAK:
        partners, what = STRONG, "PGD or AutoAttack"
    else:
        return []
    out = []
    for label, other in references:
        if other.attack not in partners or other.norm != result.norm or (
            other.split != result.split
        ):
            continue
        if mine in STRONG:
            out.append(compare_attacks(result, other, label_weak=label or ""))
        else:
            out.append(compare_attacks(other, result, label_strong=label or ""))
    if not out:
        hint = "--attack spsa" if mine in STRONG else "--attack pgd"
        out.append(record(
            "whitebox_vs_blackbox", None,
            f"no stored {what} result of norm {result.norm} and split {result.split} to "
            f"compare with (run `ima evaluate RUN {hint} --norm {result.norm}`)",
        ))
    return out
