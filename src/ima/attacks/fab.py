"""The Fast Adaptive Boundary attack (FAB, Croce and Hein, ICML 2020), L2 and Linf: a
minimal-norm attack that steps to the projection onto the linearised decision
hyperplane intersected with the data's box, targeted (FAB-T, as in AutoAttack) or not."""

from __future__ import annotations

import math

import torch

from .. import lp
from ..modes import eval_mode
from ..tasks import ClassificationTask, Task
from ..validation import check_int, check_real
from .base import AttackResult, check_attack_inputs, clean_pass, probe
from .working_set import WorkingSet

__all__ = ["fab"]

#: The largest level a coordinate of :func:`_project` may saturate at: it keeps the sums
#: of the piecewise-linear search finite for coordinates with a negligible gradient.
_HUGE = 1e30


def fab(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target: torch.Tensor | None = None,
    eps=None,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    bounds=(0.0, 1.0),
    task: Task | None = None,
) -> AttackResult:
    """FAB (Croce and Hein, ICML 2020, Algorithm 1) for L2 or Linf.

    Each step linearises, at the current point ``x_k``, the logit difference ``z_t - z_y``
    of the ``target`` class ``t`` (B,) (FAB-T: that hyperplane only), or with ``target``
    None the one of all classes ``j != y`` whose linearised hyperplane is closest
    (``|z_j - z_y| / ||grad(z_j - z_y)||_q``, ``q`` the dual norm). Both ``x_k`` and the
    clean ``x`` are projected onto that hyperplane intersected with the box ``bounds`` in
    the minimal norm (:func:`_project`), giving ``d_k`` and ``d_0``, and
    ``x_{k+1} = clip((1 - a)(x_k + eta d_k) + a (x + eta d_0))`` with
    ``a = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max)``. A misclassified ``x_{k+1}``
    (argmax not ``y``, as AutoAttack counts a success) is kept if closer to ``x`` than the
    best so far, and the iterate moves back to ``x + beta (x_{k+1} - x)``.

    The first of ``restarts`` runs starts at ``x``; each further one at a random point of
    the sphere of radius ``min(best norm, eps) / 2`` around ``x`` (the authors' rule),
    for the samples without a success (``eps`` None: for those with a point found, to
    shrink it). ``eps`` None: ``success`` where a point was found. Returns, where
    ``success``, the closest misclassified point found (with ``eps``: the first within
    it), the clean ``x`` elsewhere; a sample misclassified at ``x`` succeeds at ``x``.
    Classification only. Departures from the authors' code, none of which changes
    ``success``: with ``eps``, a sample stops at its first point within ``eps`` (theirs
    keeps shrinking it), and a point found beyond ``eps`` is not returned (results stay
    in the ball); the projection solves the box-constrained problem exactly by sorting
    its breakpoints (theirs bisects over them).
    """
    task, eps_b, bounds, _ = check_attack_inputs(x, y, eps=0.0 if eps is None else eps,
                                                 norm=norm, steps=steps, bounds=bounds,
                                                 task=task)
    if not isinstance(task, ClassificationTask):
        raise TypeError(f"fab attacks classifiers, got task {type(task).__name__}")
    check_int("restarts", restarts, low=1)
    check_real("alpha_max", alpha_max, low=0.0, high=1.0)
    check_real("eta", eta, low=1.0)
    check_real("beta", beta, low=0.0, high=1.0, low_open=True, high_open=True)
    eps_b = None if eps is None else eps_b
    x = x.detach()
    options = dict(steps=steps, norm=norm, bounds=bounds, alpha_max=alpha_max, eta=eta,
                   beta=beta)
    with eval_mode(model):
        clean = clean_pass(model, task, x, y)
        _check_target(target, y, clean.shape[1])
        best_x = x.clone()
        best = torch.where(task.correct(clean, y), math.inf, 0.0).to(x.dtype)
        for restart in range(restarts):
            todo, radius = _to_run(best, eps_b, restart)
            ids = todo.nonzero()[:, 0]
            if len(ids) == 0:
                break
            start = x[ids] if restart == 0 else _random_start(x[ids], radius[ids], norm,
                                                              bounds)
            t = None if target is None else target[ids]
            found_x, found = _run(model, task, x[ids], y[ids], t, start,
                                  None if eps_b is None else eps_b[ids], **options)
            better = found < best[ids]
            best_x[ids[better]], best[ids[better]] = found_x[better], found[better]
    success = torch.isfinite(best) if eps_b is None else best <= eps_b
    return AttackResult(torch.where(lp.expand_as_batch(success, x), best_x, x), success)


def _check_target(target, y: torch.Tensor, classes: int) -> None:
    """``target``: None or one class per sample, in range, never the label."""
    if target is None:
        return
    if not isinstance(target, torch.Tensor) or target.shape != y.shape:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target)
        raise ValueError(f"target must be a tensor of shape {tuple(y.shape)} (one class per "
                         f"sample), got {shape}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor, got dtype {target.dtype}")
    if int(target.min()) < 0 or int(target.max()) >= classes:
        raise ValueError(f"target must be in [0, {classes - 1}], got values in "
                         f"[{int(target.min())}, {int(target.max())}]")
    if (target == y).any():
        raise ValueError("target must differ from the label y for every sample")


def _to_run(best: torch.Tensor, eps: torch.Tensor | None, restart: int):
    """The samples a run attacks (B,) and their random starts' radius (B,): the first run
    every sample correct at ``x``; later ones, from ``min(best, eps) / 2``, the samples
    without a success (``eps`` None: those with a point found)."""
    if restart == 0:
        return torch.isinf(best), torch.zeros_like(best)
    if eps is None:
        return torch.isfinite(best) & (best > 0), best / 2
    return (best > eps) & (eps > 0), torch.minimum(best, eps) / 2


def _random_start(x: torch.Tensor, radius: torch.Tensor, norm: str, bounds) -> torch.Tensor:
    """A uniformly drawn direction of the ball, scaled to the sphere of ``radius`` (B,)."""
    u = lp.sample_ball(x, 1.0, norm)
    scale = radius / lp.sample_norm(u, norm).clamp_min(torch.finfo(x.dtype).tiny)
    return lp.clip_to_bounds(x + lp.expand_as_batch(scale, x) * u, bounds)


def _run(model, task: Task, x0, y, target, start, eps, *, steps, norm, bounds, alpha_max,
         eta, beta):
    """One FAB run from ``start``: the closest misclassified iterate (B, ...) and its norm
    (B,; infinite where none). With ``eps`` (B,), a sample stops once within it."""
    out_x = x0.clone()
    out = torch.full((len(x0),), math.inf, dtype=x0.dtype, device=x0.device)
    s = WorkingSet(ids=torch.arange(len(x0), device=x0.device), x0=x0, y=y, cur=start,
                   best_x=x0.clone(), best=out.clone())
    if target is not None:
        s["t"] = target
    if eps is not None:
        s["eps"] = eps
    for _ in range(steps):
        value, grad = _linearise(model, task, s["cur"], s["y"], s.get("t"), norm)
        cur = _step(s["cur"], s["x0"], value, grad, norm, bounds, alpha_max, eta)
        with torch.no_grad():
            wrong = ~task.correct(model(cur), s["y"])
        dist = lp.sample_norm(cur - s["x0"], norm)
        better = wrong & (dist < s["best"])
        s["best"] = torch.where(better, dist, s["best"])
        s["best_x"] = torch.where(lp.expand_as_batch(better, cur), cur, s["best_x"])
        s["cur"] = torch.where(lp.expand_as_batch(wrong, cur),
                               s["x0"] + beta * (cur - s["x0"]), cur)
        if eps is not None and (done := s["best"] <= s["eps"]).any():
            out_x[s["ids"][done]], out[s["ids"][done]] = s["best_x"][done], s["best"][done]
            s = s.keep(~done)
            if s.size == 0:
                break
    out_x[s["ids"]], out[s["ids"]] = s["best_x"], s["best"]
    return out_x, out


def _linearise(model, task: Task, point, y, target, norm):
    """The value (B,) and gradient (B, ...) at ``point`` of the logit difference whose
    hyperplane the step aims at: ``z_target - z_y``, or without a target the ``z_j - z_y``
    of the closest linearised hyperplane."""
    if target is not None:
        def gap(out):
            return out.gather(1, target[:, None])[:, 0] - out.gather(1, y[:, None])[:, 0]
        _, _, grad, value = probe(model, task, point, y, value=gap, values=True)
        return value, grad
    point = point.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(point)
        classes = out.shape[1]
        rows = [torch.autograd.grad(out[:, j].sum(), point, retain_graph=j < classes - 1)[0]
                for j in range(classes)]
    rows = torch.stack(rows, dim=1)  # (B, K, ...)
    every = torch.arange(len(y), device=y.device)
    rows = rows - rows[every, y][:, None]
    values = out.detach() - out.detach().gather(1, y[:, None])
    dual = _dual_norm(rows.flatten(0, 1), norm).reshape(values.shape)
    distance = (values.abs() / (dual + 1e-12)).scatter(1, y[:, None], math.inf)
    j = distance.argmin(dim=1)
    return values.gather(1, j[:, None])[:, 0], rows[every, j]


def _dual_norm(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample dual norm (B,) of ``g``: L2 for L2, L1 for Linf."""
    return lp.sample_norm(g, "l2") if norm == "l2" else g.flatten(1).abs().sum(dim=1)


def _step(cur, x0, value, grad, norm, bounds, alpha_max: float, eta: float):
    """FAB's update: the alpha-weighted mix of the extrapolated projections of ``cur`` and
    ``x0`` onto the hyperplane ``value + grad . (z - cur) = 0`` in the box, clipped."""
    value0 = value + (grad * (x0 - cur)).flatten(1).sum(dim=1)
    both = _project(torch.cat([cur, x0]), torch.cat([grad, grad]),
                    torch.cat([value, value0]), bounds, norm)
    d_cur, d_x0 = both[: len(cur)], both[len(cur):]
    n_cur = lp.sample_norm(d_cur, norm).clamp_min(1e-8)
    n_x0 = lp.sample_norm(d_x0, norm).clamp_min(1e-8)
    alpha = lp.expand_as_batch((n_cur / (n_cur + n_x0)).clamp(max=alpha_max), cur)
    mixed = (1 - alpha) * (cur + eta * d_cur) + alpha * (x0 + eta * d_x0)
    return lp.clip_to_bounds(mixed, bounds)


def _project(points, w, value, bounds, norm: str) -> torch.Tensor:
    """The step ``d`` (shaped like ``points``) of least norm (L2 or Linf) with
    ``value + w . d = 0`` and ``points + d`` in the box ``bounds`` (None: unbounded); where
    the box keeps the hyperplane out of reach, the box's corner that goes furthest
    towards it.

    With ``s = sign(value)``, each coordinate moves against ``s w_i``, by
    ``min(tau a_i, room_i)``: ``room_i`` the distance to the box's face in that direction,
    ``a_i = |w_i|`` for L2 (the KKT solution of the box-constrained least squares) and 1
    for Linf (every coordinate moves by the common level, capped by its room). The level
    ``tau`` is the smallest that closes ``|value|``, the gain
    ``h(tau) = sum_i |w_i| min(tau a_i, room_i)`` being piecewise linear and
    non-decreasing: found exactly from the breakpoints ``room_i / a_i`` once sorted."""
    p, w = points.flatten(1), w.flatten(1)
    w = w * torch.where(value < 0, -1.0, 1.0).to(w.dtype)[:, None]
    need, gain = value.abs(), w.abs()
    a = gain if norm == "l2" else (w != 0).to(w.dtype)
    if bounds is None:
        tau = need / (gain * a).sum(dim=1).clamp_min(torch.finfo(w.dtype).tiny)
        move = tau[:, None] * a
    else:
        zero = torch.zeros_like(p)
        room = torch.where(w > 0, p - bounds[0], torch.where(w < 0, bounds[1] - p, zero))
        room = room.clamp_min(0.0)
        tau = _level(need, gain, a, room)
        move = torch.where(a > 0, torch.minimum(tau[:, None] * a, room), zero)
    return (-w.sign() * move).reshape(points.shape)


def _level(need, gain, a, room) -> torch.Tensor:
    """The smallest ``tau`` (N,) with ``sum_i gain_i min(tau a_i, room_i) >= need``;
    infinite where even ``tau = inf`` falls short (see :func:`_project`)."""
    tiny = torch.finfo(gain.dtype).tiny
    knots = torch.where(a > 0, room / a.clamp_min(tiny), 0.0).clamp(max=_HUGE)
    knots, order = knots.sort(dim=1)
    capped = (gain * room).gather(1, order).cumsum(dim=1)  # sum over the saturated
    slope = (gain * a).gather(1, order)
    free = slope.sum(dim=1, keepdim=True) - slope.cumsum(dim=1)  # sum over the others
    reach = capped + knots * free  # h at each breakpoint
    k = (reach < need[:, None]).sum(dim=1, keepdim=True)  # the segment that reaches need
    capped = torch.cat([torch.zeros_like(need)[:, None], capped], dim=1).gather(1, k)[:, 0]
    free = torch.cat([slope.sum(dim=1, keepdim=True), free], dim=1).gather(1, k)[:, 0]
    tau = (need - capped) / free.clamp_min(tiny)
    return torch.where(k[:, 0] == gain.shape[1], math.inf, tau)
