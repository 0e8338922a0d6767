"""One forward pass serves the clean split (IMA, MMA) or the clean target (TRADES) and the
training loss where the model computes the same in training and eval mode (no batch
norm, no dropout)."""

from __future__ import annotations

import pytest
import torch

from ima import bpgd
from ima.methods import build_method
from ima.models import build_model
from ima.modes import mode_free

from analytic import RowCounter, linear_problem


class Branching(torch.nn.Module):
    """A user module that may do anything with ``self.training``."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x) * (1.0 if self.training else 1.0)


def test_mode_free_knows_the_layers_that_depend_on_the_mode():
    assert mode_free(build_model("moons_mlp")) and mode_free(build_model("digits_cnn"))
    assert mode_free(build_model("resnet18_in"))  # instance norm without running stats
    assert not mode_free(build_model("wrn_28_4"))  # batch norm
    assert not mode_free(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1)))
    assert not mode_free(torch.nn.InstanceNorm1d(2, track_running_stats=True))
    assert not mode_free(Branching())


def test_bpgd_with_the_callers_clean_output_gives_the_same_result():
    model, x, y, _ = linear_problem(norm="l2", eps=0.1, n=400)
    torch.manual_seed(0)
    a = bpgd(model, x, y, eps=0.1)
    torch.manual_seed(0)
    counter = RowCounter(model)
    with torch.no_grad():
        out = model(x)
    b = bpgd(counter, x, y, eps=0.1, clean_output=out)
    assert torch.equal(a.x, b.x) and torch.equal(a.success, b.success)
    assert torch.equal(a.clean_correct, b.clean_correct)
    torch.manual_seed(0)
    plain = RowCounter(model)
    bpgd(plain, x, y, eps=0.1)
    assert plain.rows - counter.rows == len(x)  # exactly the clean pass saved
    with pytest.raises(ValueError, match="clean_output has 3 rows"):
        bpgd(model, x, y, eps=0.1, clean_output=out[:3])


def _rows(model):
    count = {"rows": 0}
    model.register_forward_hook(lambda m, inp, out: count.__setitem__(
        "rows", count["rows"] + inp[0].shape[0]))
    return count


@pytest.mark.parametrize(("name", "kwargs"), [
    ("ima", {"eps_max": 0.5}),
    ("trades", {"eps": 0.3}),
    ("mma", {"eps_max": 0.5}),
])
def test_step_reuses_its_training_pass_only_for_a_mode_free_model(name, kwargs):
    torch.manual_seed(0)
    free = build_model("moons_mlp")
    wrapped = torch.nn.Sequential(Branching())  # not mode free: a user class inside
    wrapped[0].fc = free  # the same network, behind a user module
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    index = torch.arange(64)
    results = {}
    for label, model in (("free", free), ("user", wrapped)):
        method = build_method(name, num_samples=64, epochs=10, bounds=None, **kwargs)
        counter = _rows(free)
        torch.manual_seed(1)
        out = method(model, x, y, index, 0)
        results[label] = (counter["rows"], out)
    (rows_free, out_free), (rows_user, out_user) = results["free"], results["user"]
    assert rows_user - rows_free == 64  # one clean pass of the batch saved
    assert torch.allclose(out_free.loss, out_user.loss)
    assert torch.equal(out_free.logits, out_user.logits)
