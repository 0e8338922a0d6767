"""All Lp geometry: per-sample norms, projection, ascent direction, sampling in the ball.

Every function works on a batch ``x`` of any shape ``(B, ...)``: the norm of a sample is
taken over all of its non-batch dimensions. ``eps`` is a float or a per-sample tensor of
shape ``(B,)``. Norm-specific code lives here and nowhere else: attacks call these
functions and never branch on the norm themselves.

Supported norms: ``"l2"`` and ``"linf"``.
"""

from __future__ import annotations

import math

import torch

from .validation import check_choice

__all__ = [
    "box_radius",
    "NORMS",
    "ascent_direction",
    "check_norm",
    "clip_to_bounds",
    "expand_as_batch",
    "per_sample_eps",
    "project",
    "sample_norm",
    "sample_ball",
    "sample_gaussian",
]

NORMS = ("l2", "linf")


def check_norm(norm: str) -> str:
    """Return ``norm`` after checking it is ``"l2"`` or ``"linf"``."""
    return check_choice("norm", norm, NORMS)


def expand_as_batch(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample ``values`` (B,) to ``(B, 1, ..., 1)`` to broadcast over ``x``."""
    return values.reshape((-1,) + (1,) * (x.dim() - 1))


def per_sample_eps(eps, x: torch.Tensor, *, name: str = "eps") -> torch.Tensor:
    """Validate ``eps`` and return it as a tensor of shape ``(B,)`` on ``x``'s device and dtype.

    ``eps`` is a non-negative finite float or a tensor of shape ``()`` or ``(B,)``.
    """
    batch = x.shape[0]
    if isinstance(eps, torch.Tensor):
        if eps.dim() == 0:
            eps = eps.reshape(1).expand(batch)
        elif eps.shape != (batch,):
            raise ValueError(
                f"{name} must be a float or a tensor of shape ({batch},) (one per sample), "
                f"got shape {tuple(eps.shape)}"
            )
        eps = eps.detach().to(device=x.device, dtype=x.dtype)
    else:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise TypeError(f"{name} must be a float or a tensor, got {type(eps).__name__}")
        eps = torch.full((batch,), float(eps), device=x.device, dtype=x.dtype)
    if torch.isnan(eps).any():
        raise ValueError(f"{name} must not be NaN, got {eps.tolist() if eps.numel() < 8 else eps}")
    if torch.isinf(eps).any():
        raise ValueError(f"{name} must be finite, got an infinite value")
    if (eps < 0).any():
        raise ValueError(f"{name} must be >= 0, got minimum {float(eps.min())}")
    return eps


def sample_norm(x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample Lp norm of ``x`` of shape ``(B, ...)``; returns shape ``(B,)``."""
    flat = x.flatten(1) if x.dim() > 1 else x[:, None]
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    check_norm(norm)
    raise AssertionError("unreachable")


def project(delta: torch.Tensor, eps, norm: str, *, validate: bool = True) -> torch.Tensor:
    """Project perturbations ``delta`` (B, ...) onto the ``eps``-ball of the given norm.

    The projection is the Euclidean-nearest point for L2 (radial scaling) and the
    coordinate-wise clamp for Linf; it is idempotent and never moves a point that is
    already inside the ball. ``validate=False`` skips the checks of ``eps`` (which cost a
    device synchronisation) for callers that pass an already validated (B,) tensor.
    """
    if validate or not isinstance(eps, torch.Tensor):
        eps = per_sample_eps(eps, delta)
    eps = expand_as_batch(eps, delta)
    if norm == "l2":
        length = expand_as_batch(sample_norm(delta, "l2"), delta)
        # Scale only the samples outside the ball; the clamp avoids 0/0 for delta = 0.
        factor = torch.clamp(eps / length.clamp_min(torch.finfo(delta.dtype).tiny), max=1.0)
        return delta * factor
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, eps), -eps)
    check_norm(norm)
    raise AssertionError("unreachable")


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit Lp norm for a gradient ``grad`` (B, ...).

    Linf: ``sign(grad)``; L2: ``grad / ||grad||_2``. Rule for an all-zero gradient (a
    flat loss, e.g. saturated logits): the direction is zero, so that sample does not
    move in that step (no random jump that could leave a plateau in an arbitrary way).
    """
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        length = expand_as_batch(sample_norm(grad, "l2"), grad)
        return torch.where(length > 0, grad / length.clamp_min(torch.finfo(grad.dtype).tiny), 0.0)
    check_norm(norm)
    raise AssertionError("unreachable")


def sample_ball(x: torch.Tensor, eps, norm: str, *, generator: torch.Generator | None = None):
    """Draw one perturbation per sample, uniformly distributed in the ``eps``-ball.

    Returns a tensor shaped like ``x``. For L2 a Gaussian direction is scaled by the
    radius ``eps * U**(1/d)`` (``d`` = elements per sample), which is uniform in volume;
    for Linf every coordinate is uniform in ``[-eps, eps]``.
    """
    eps_b = expand_as_batch(per_sample_eps(eps, x), x)
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2.0 * u - 1.0) * eps_b
    if norm == "l2":
        d = max(1, math.prod(x.shape[1:]))
        direction = ascent_direction(
            torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype), "l2"
        )
        u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
        radius = expand_as_batch(u.pow(1.0 / d), x) * eps_b
        return direction * radius
    check_norm(norm)
    raise AssertionError("unreachable")


def sample_gaussian(
    x: torch.Tensor, eps, norm: str, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one Gaussian perturbation per sample whose size is ``eps`` in the given norm.

    Returns a tensor shaped like ``x`` of i.i.d. ``N(0, sigma**2)`` elements. L2: ``sigma``
    is chosen so that the *expected* L2 norm of the perturbation is exactly ``eps``
    (``E||n||_2 = sigma * sqrt(2) * Gamma((d + 1) / 2) / Gamma(d / 2)``, ``d`` = elements
    per sample; ``sigma ~ eps / sqrt(d)`` for large ``d``). Linf: a Gaussian has no finite
    Linf norm, so ``eps`` is the per-element standard deviation ``sigma`` itself.
    """
    eps_b = expand_as_batch(per_sample_eps(eps, x), x)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if norm == "linf":
        return noise * eps_b
    if norm == "l2":
        d = max(1, math.prod(x.shape[1:]))
        mean_norm = math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
        return noise * (eps_b / mean_norm)
    check_norm(norm)
    raise AssertionError("unreachable")


def clip_to_bounds(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Clamp ``x`` into the data's valid range ``bounds``; ``None`` means unbounded.

    For a centre inside the bounds this never increases the distance to the centre in any
    Lp norm, so a point in the eps-ball stays in it.
    """
    if bounds is None:
        return x
    return x.clamp(bounds[0], bounds[1])


def box_radius(x: torch.Tensor, bounds: tuple[float, float] | None, norm: str) -> torch.Tensor:
    """Per-sample distance (B,) in ``norm`` from ``x`` to the farthest corner of the box
    ``bounds``: a ball of this radius holds every valid input. Infinite without bounds."""
    if bounds is None:
        return torch.full((x.shape[0],), math.inf, device=x.device, dtype=x.dtype)
    return sample_norm(torch.maximum(x - bounds[0], bounds[1] - x), norm)
