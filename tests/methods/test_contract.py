"""The contract every registered training method keeps (docs/architecture.md, "A training method").

Parametrized over ``METHODS.names()``, so a newly registered method is covered
automatically; it only needs an entry in ``REQUIRED`` (the test fails loudly without one).
"""

import copy
import io

import pytest
import torch

from helpers import assert_same_state
from ima.data import build_dataset
from ima.methods import METHODS, build_method
from ima.models import digits_cnn, moons_mlp

#: Hyperparameters each method needs to be built (plus any that make it exercise all of
#: its code paths on these small problems). IMA starts with large margins so that BPGD
#: finds boundary points and the L2 term of Algorithm 1 is used.
REQUIRED = {
    "ce": {},
    "adv": {"eps": 1.0, "steps": 5},
    "ima": {"eps_max": 4.0, "delta_eps": 2.0, "steps": 10},
    "mma": {"eps_max": 4.0, "steps": 5},
    "ddn": {"eps_max": 2.0, "steps": 10},
    "trades": {"eps": 1.0, "steps": 5},
    "fat": {"eps": 1.0, "steps": 5},
    "gairat": {"eps": 1.0, "steps": 5},
}

NAMES = METHODS.names()
BATCH = 48
N_WRONG = 6  # samples given a label the model does not predict, so X0 is never empty


def test_every_registered_method_has_contract_arguments():
    missing = sorted(set(NAMES) - set(REQUIRED))
    assert not missing, (
        f"method(s) {missing} are registered but have no entry in REQUIRED of "
        f"{__file__}: add the hyperparameters they need to be built"
    )


def _problem(kind):
    """A model trained a little (so most samples are correct), a batch, its dataset
    indices, the data bounds and the training-set size."""
    torch.manual_seed(0)
    if kind == "digits":
        data = build_dataset("digits", "train")
        model = digits_cnn(width=8)
    else:
        data = build_dataset("moons", "train", n_train=256)
        model = moons_mlp()
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:BATCH]
    x, y = data.x[index], data.y[index].clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(x).argmax(1)
    num_classes = 10 if kind == "digits" else 2
    y[:N_WRONG] = (pred[:N_WRONG] + 1) % num_classes
    return model, x, y, index, data.bounds, len(data)


@pytest.fixture(scope="module", params=["digits", "moons"])
def problem(request):
    return _problem(request.param)


def _build(name, problem):
    if name not in REQUIRED:
        pytest.fail(f"method {name!r} has no entry in REQUIRED; add its hyperparameters")
    _, _, _, _, bounds, n = problem
    return build_method(name, num_samples=n, epochs=3, bounds=bounds, **REQUIRED[name])


def _set_mode(model, mode):
    if mode == "mixed":  # a user's deliberately frozen sub-module must stay as it was
        model.train()
        model[3].eval()
    else:
        model.train(mode == "train")
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
@pytest.mark.parametrize("name", NAMES)
def test_method_contract(name, mode, problem):
    model, x, y, index, _, _ = problem
    model = copy.deepcopy(model)
    method = _build(name, problem)
    modes = _set_mode(model, mode)

    # An optimizer with state (momentum buffers), and .grad holding a sentinel: the
    # method must touch neither (attacks take gradients with autograd.grad).
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    opt.step()
    opt_state = copy.deepcopy(opt.state_dict())
    params = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)

    torch.manual_seed(0)
    out = method(model, x, y, index, 0)

    assert [m.training for m in model.modules()] == modes, "model mode not restored"
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params, strict=True))
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())
    assert_same_state(opt.state_dict(), opt_state, "optimizer")

    assert isinstance(out.loss, torch.Tensor) and out.loss.dim() == 0
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    assert out.logits.shape == (len(x), 10 if x.dim() == 4 else 2)
    assert not out.logits.requires_grad and out.logits.grad_fn is None
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(x))  # the clean batch's output
    assert all(isinstance(v, float) for v in out.logs.values())
    if name == "ima":
        # both kinds of sample and the boundary-point term are exercised
        assert 0 < out.logs["clean_correct"] <= 1 - N_WRONG / len(x)
        assert out.logs["boundary_found"] > 0
    if name == "mma":
        # misclassified samples (clean term) and boundary points (margin term) both occur
        assert 0 < out.logs["clean_correct"] <= 1 - N_WRONG / len(x)
        assert out.logs["boundary_found"] > 0
    if name == "ddn":
        assert out.logs["adv_fooled"] > 0

    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert [m.training for m in model.modules()] == modes
    stats = method.end_epoch(0)
    assert isinstance(stats, dict) and all(isinstance(v, float) for v in stats.values())


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_save_and_load(name, problem):
    model, x, y, index, _, _ = problem
    model = copy.deepcopy(model)
    method = _build(name, problem)
    torch.manual_seed(0)
    for epoch in range(2):
        method(model, x, y, index, epoch)
        method.end_epoch(epoch)
    method(model, x[: BATCH // 2], y[: BATCH // 2], index[: BATCH // 2], 2)  # mid-epoch

    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    fresh = _build(name, problem)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert_same_state(fresh.state_dict(), method.state_dict())
    # the restored method ends the interrupted epoch exactly as the original does
    assert fresh.end_epoch(2) == method.end_epoch(2)
    assert_same_state(fresh.state_dict(), method.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_unknown_and_missing_hyperparameters(name, problem):
    _, _, _, _, bounds, n = problem
    with pytest.raises(ValueError, match="no_such_knob"):
        build_method(name, num_samples=n, epochs=3, bounds=bounds, no_such_knob=1,
                     **REQUIRED.get(name, {}))
    for key in REQUIRED.get(name, {}):
        kwargs = {k: v for k, v in REQUIRED[name].items() if k != key}
        try:
            build_method(name, num_samples=n, epochs=3, bounds=bounds, **kwargs)
        except ValueError as err:
            assert key in str(err)
