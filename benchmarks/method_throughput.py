"""Samples per second of IMA and vanilla 20-PGD adversarial training on a paper network,
and the fraction of IMA's step time spent outside the model's forward and backward passes.

Workload: random images of the network's input shape, labelled with the model's own
predictions so that every sample starts correctly classified and BPGD attacks the whole
batch; IMA's margins are set to ``--margin`` (a sample crosses when its boundary lies
within it). Both methods take real optimizer steps on copies of the same model.

Outside fraction: every forward pass of the IMA steps is recorded (rows; whether it was
an attack pass, taking the gradient with respect to the input, a training pass, whose
loss is back-propagated into the weights, or a pass without gradient) and replayed on the
bare model with the same kind of backward pass; one minus replay time over step time is
the share of attack bookkeeping, bisection, margin updates and launch gaps.

    python benchmarks/method_throughput.py --model fashion_cnn --device cuda [--precision bf16]
"""

from __future__ import annotations

import argparse
import copy

import torch
from common import machine, pick_device, timed

from ima.acceleration import accelerate
from ima.methods import build_method
from ima.models import build_model

SHAPES = {"fashion_cnn": (1, 28, 28), "svhn_cnn": (3, 32, 32), "wrn_28_4": (3, 32, 32),
          "digits_cnn": (1, 8, 8)}


def record_calls(model):
    """Record (rows, kind) of every forward call of ``model`` (a hook, so the model stays
    what the method sees); kind is "input" (attack gradient), "weights" (training pass)
    or None (no gradient). Returns the list and the hook handle."""
    calls = []

    def hook(module, inputs):
        x = inputs[0]
        kind = None
        if torch.is_grad_enabled():
            kind = "input" if x.requires_grad else "weights"
        calls.append((x.shape[0], kind))

    return calls, model.register_forward_pre_hook(hook)


def run_steps(method, net, model, x, y, index, steps):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    for _ in range(steps):
        out = method(net, x, y, index, 0)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()


def replay(net, calls, shape, device):
    for rows, kind in calls:
        x = torch.rand(rows, *shape, device=device, requires_grad=kind == "input")
        with torch.set_grad_enabled(kind is not None):
            out = net(x).float().sum()
            if kind == "input":
                torch.autograd.grad(out, x)
            elif kind == "weights":
                out.backward()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion_cnn", choices=sorted(SHAPES))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--eps-max", type=float, default=3.0)
    parser.add_argument("--margin", type=float, default=1.0, help="IMA's margins")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(0)
    shape = SHAPES[args.model]
    model = build_model(args.model).to(device)
    n = args.batch_size
    x = torch.rand(n, *shape, device=device)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    index = torch.arange(n, device=device)

    def method(name):
        kwargs = ({"eps_max": args.eps_max} if name == "ima"
                  else {"eps": args.margin, "steps": 20})
        m = build_method(name, num_samples=n, epochs=10, **kwargs)
        if name == "ima":
            m.margins.margins.fill_(args.margin)
        return m

    print(machine(device, args.threads))
    print(f"{args.model} {shape}, batch {n}, {args.steps} steps, precision {args.precision}"
          f"{', channels_last' if args.channels_last else ''}; IMA margins {args.margin}, "
          f"adv eps {args.margin} (20 steps)")
    rates = {}
    for name in ("ima", "adv", "ima", "adv"):  # second round timed (first warms up)
        m, copy_ = method(name), copy.deepcopy(model)
        net = accelerate(copy_, precision=args.precision, channels_last=args.channels_last,
                         device=device)
        t, _ = timed(lambda m=m, net=net, copy_=copy_: run_steps(m, net, copy_, x, y, index,
                                                                  args.steps), device)
        rates[name] = args.steps * n / t
    for name, rate in rates.items():
        print(f"{name}: {rate:.0f} samples/s")
    print(f"epoch-time ratio ima / adv = {rates['adv'] / rates['ima']:.3f}")

    m, copy_ = method("ima"), copy.deepcopy(model)
    net = accelerate(copy_, precision=args.precision, channels_last=args.channels_last,
                     device=device)
    run_steps(m, net, copy_, x, y, index, 1)  # warm-up
    calls, handle = record_calls(net)
    t_steps, _ = timed(lambda: run_steps(m, net, copy_, x, y, index, args.steps), device)
    handle.remove()
    t_model, _ = timed(lambda: replay(net, list(calls), shape, device), device)
    rows = sum(r for r, _ in calls) / args.steps
    print(f"IMA: {len(calls) / args.steps:.1f} forward calls and {rows:.0f} rows per step; "
          f"model forward/backward {t_model:.3f} s of {t_steps:.3f} s: "
          f"{100 * (1 - t_model / t_steps):.1f}% outside")


if __name__ == "__main__":
    main()
