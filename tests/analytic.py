"""Models whose exact margins are known, for testing attacks against the truth."""

from __future__ import annotations

import torch


class BinaryLinear(torch.nn.Module):
    """Two-class linear model with logits ``(-f/2, f/2)``, ``f(x) = w.x + b``.

    Class 1 iff ``f(x) > 0``; the exact Lp distance of ``x`` to the boundary is
    ``|f(x)| / ||w||_q`` with ``q`` the dual norm (2 for L2, 1 for Linf).
    """

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.linear = torch.nn.Linear(w.numel(), 1)
        with torch.no_grad():
            self.linear.weight.copy_(w.reshape(1, -1))
            self.linear.bias.fill_(b)

    @property
    def w(self) -> torch.Tensor:
        return self.linear.weight.detach()[0]

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1))[:, 0]

    def forward(self, x):
        z = self.f(x)[:, None]
        return torch.cat([-z / 2, z / 2], dim=1)

    def margin(self, x: torch.Tensor, norm: str) -> torch.Tensor:
        """Exact distance of each sample to the decision boundary."""
        dual = self.w.norm(p=2) if norm == "l2" else self.w.abs().sum()
        return self.f(x).detach().abs() / dual


def linear_problem(*, d=20, n=400, eps=0.1, norm="l2", seed=0, band=0.02):
    """A binary linear model and samples in [0.3, 0.7]^d labelled by the model.

    Samples whose exact margin lies in ``[(1 - band) eps, (1 + band) eps]`` are dropped (a
    finite number of PGD steps may stop short there), and so are samples within float
    rounding of the boundary (the median sample sits on it: its class depends on the
    summation order of the matrix product). With ``eps <= 0.2`` every ball, and so
    every nearest boundary point, lies inside the bounds [0, 1].
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    x = 0.3 + 0.4 * torch.rand(n, d, generator=g)
    b = -float((x @ w).median())
    model = BinaryLinear(w, b)
    margin = model.margin(x, norm)
    keep = ((margin < (1 - band) * eps) | (margin > (1 + band) * eps)) & (margin > 1e-4 * eps)
    x = x[keep]
    y = (model.f(x) > 0).long().detach()
    return model, x, y, model.margin(x, norm)


class RowCounter(torch.nn.Module):
    """Wraps a model and counts the samples (rows) it is run on."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.model(x)


class ThresholdConv(torch.nn.Module):
    """Segmentation by a 1x1 convolution: logits ``(-f/2, f/2)`` per pixel with
    ``f = w (x - 0.5)``, so pixel p is foreground iff ``x_p > 0.5``.

    Under the segmentation margin loss (mean over pixels of ``z_other - z_true``) the input
    gradient is the same everywhere: ``-w/N`` on true-foreground pixels, ``+w/N`` on
    true-background ones, so PGD without a random start walks a straight ray.
    """

    def __init__(self, w: float = 10.0):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-w / 2, w / 2]).reshape(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([w / 4, -w / 4]))

    def forward(self, x):
        return self.conv(x)


#: the segmentation problem's foreground pixels lie at 0.5 + gap, background at 0.5 - gap
SEG_FG_GAPS = [0.02 * k for k in range(1, 11)]
SEG_BG_GAPS = [0.02 * k + 0.01 for k in range(1, 11)]
SEG_PIXELS = 20


def segmentation_problem():
    """``(model, x (1, 1, 4, 5), y (1, 4, 5), d)`` in float64: the truth is the model's own
    segmentation (Dice 1), and ``d = (-1 on foreground, +1 on background) / sqrt(N)`` is
    the unit direction every margin-loss PGD step takes (pixels move towards the other
    class by ``t / sqrt(N)`` at distance ``t``)."""
    values = [0.5 + g for g in SEG_FG_GAPS] + [0.5 - g for g in SEG_BG_GAPS]
    order = torch.randperm(SEG_PIXELS, generator=torch.Generator().manual_seed(0))
    x = torch.tensor(values, dtype=torch.float64)[order].reshape(1, 1, 4, 5)
    y = torch.tensor([1] * 10 + [0] * 10)[order].reshape(1, 4, 5)
    d = (1 - 2 * y).double().reshape(1, 1, 4, 5) / SEG_PIXELS**0.5
    return ThresholdConv().double(), x, y, d


def dice_at_shift(s: float) -> float:
    """Exact Dice of :func:`segmentation_problem` after every pixel moved by ``s`` towards
    the other class."""
    tp = sum(g > s for g in SEG_FG_GAPS)
    fp = sum(g < s for g in SEG_BG_GAPS)
    return 2 * tp / (2 * tp + fp + (10 - tp))


def gap_problem(n_per_class: int = 150, seed: int = 0):
    """A linearly separable 2-D problem with a known gap.

    Class 0 fills x1 in [-2, -0.5], class 1 fills x1 in [0.5, 2], x2 in [-1, 1]: the gap
    is 1.0, its middle line is x1 = 0, and the nearest samples lie 0.5 from it.
    """
    g = torch.Generator().manual_seed(seed)
    x1 = torch.cat([
        -2 + 1.5 * torch.rand(n_per_class, generator=g),
        0.5 + 1.5 * torch.rand(n_per_class, generator=g),
    ])
    x2 = -1 + 2 * torch.rand(2 * n_per_class, generator=g)
    y = torch.cat([torch.zeros(n_per_class), torch.ones(n_per_class)]).long()
    return torch.stack([x1, x2], 1), y


def linear_geometry(model: torch.nn.Linear, x: torch.Tensor):
    """For a two-class ``Linear`` model: the signed score f = logit1 - logit0 of ``x`` and
    its exact L2 distance to the boundary f = 0."""
    with torch.no_grad():
        w = model.weight[1] - model.weight[0]
        b = model.bias[1] - model.bias[0]
        f = x @ w + b
        return f, f.abs() / w.norm()


def small_net(seed=0):
    """A small non-linear 3-class network on 6 inputs (tanh MLP)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
        torch.nn.Linear(32, 3),
    )


def small_problem(n=300):
    """``small_net()`` with ``n`` inputs in [0.2, 0.8]^6 labelled by the net itself, so
    every sample starts correctly classified."""
    net = small_net()
    g = torch.Generator().manual_seed(1)
    x = 0.2 + 0.6 * torch.rand(n, 6, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def analytic_data():
    """The analytic segmenter (float32) and a dataset of three copies of its image."""
    from ima.data import ArrayDataset
    from ima.tasks import SegmentationTask

    model, x, y, _ = segmentation_problem()
    ds = ArrayDataset(x.float().repeat(3, 1, 1, 1), y.repeat(3, 1, 1), num_classes=2,
                      name="analytic", split="test", bounds=(0.0, 1.0),
                      task=SegmentationTask())
    return model.float(), ds


def image_linear_problem(n=200, seed=0, norm="linf", classes=4):
    """A multi-class linear model on 8x8 images in [0.3, 0.7] with its exact margins:
    ``(model, x (n, 1, 8, 8), y, margin (n,))``, the distance from each sample to the
    region ``argmax != y``: ``min_j (z_y - z_j) / ||w_y - w_j||_q``, ``q`` the dual norm
    (L1 for Linf, L2 for L2)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, 64, generator=g)
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, classes))
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.zero_()
        z = model(x)
    y = z.argmax(1)
    diff = w[y][:, None, :] - w[None, :, :]
    dual = diff.abs().sum(dim=2) if norm == "linf" else diff.norm(dim=2)
    distance = ((z.gather(1, y[:, None]) - z) / dual.clamp_min(1e-12)).masked_fill(
        torch.nn.functional.one_hot(y, classes).bool(), float("inf"))
    return model, x, y, distance.min(dim=1).values
