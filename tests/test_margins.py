"""MarginStore (Algorithm 2) on hand-made cases whose updates are known exactly."""

import io
import math

import pytest
import torch

from ima import MarginStore
from ima.margins import DirectMarginStore


def _f32(values):
    """Expected margins, rounded to float32 as the store keeps them."""
    return torch.tensor(values, dtype=torch.float32)


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_margins_start_at_delta_eps_and_init_is_capped_at_eps_max():
    store = MarginStore(5, eps_max=1.0, delta_eps=0.25)
    assert torch.equal(store.get(torch.arange(5)), _f32([0.25] * 5))
    assert torch.equal(MarginStore(3, eps_max=1.0, delta_eps=0.25, init=0.5).margins,
                       _f32([0.5] * 3))
    assert torch.equal(MarginStore(3, eps_max=1.0, delta_eps=0.25, init=3.0).margins,
                       _f32([1.0] * 3))


def test_expand_shrink_and_unrecorded_samples():
    store = MarginStore(6, eps_max=10.0, delta_eps=0.5, init=2.0)
    # sample 0: no boundary point -> E + delta_eps; sample 1: boundary at d=1 -> (1 + 2) / 2;
    # sample 2: boundary at d=0 -> 2 / 2; samples 3-5 never recorded (misclassified or
    # unseen) keep their margin. The distance of a sample that did not cross is ignored.
    store.record(torch.tensor([0, 1, 2]), crossed=torch.tensor([False, True, True]),
                 distance=torch.tensor([123.0, 1.0, 0.0]))
    stats = store.end_epoch()
    assert torch.equal(store.margins, _f32([2.5, 1.5, 1.0, 2.0, 2.0, 2.0]))
    assert stats["margin_expanded"] == pytest.approx(1 / 6)
    assert stats["margin_shrunk"] == pytest.approx(2 / 6)


def test_updates_apply_only_at_end_epoch():
    store = MarginStore(3, eps_max=10.0, delta_eps=1.0, init=4.0)
    store.record(torch.tensor([0, 1]), crossed=torch.tensor([False, True]),
                 distance=torch.tensor([0.0, 2.0]))
    # every batch of an epoch sees the margins of the previous epoch
    assert torch.equal(store.get(torch.tensor([0, 1, 2])), _f32([4.0, 4.0, 4.0]))
    assert store.stats()["margin_mean"] == pytest.approx(4.0)
    store.end_epoch()
    assert torch.equal(store.get(torch.tensor([0, 1, 2])), _f32([5.0, 3.0, 4.0]))
    # the next epoch starts from nothing recorded: without records nothing moves
    stats = store.end_epoch()
    assert torch.equal(store.margins, _f32([5.0, 3.0, 4.0]))
    assert stats["margin_expanded"] == 0 and stats["margin_shrunk"] == 0


def test_updates_are_computed_from_the_margin_of_the_previous_epoch():
    # Two records of one sample in an epoch: the last wins, and it is computed from the
    # margin the epoch started with (not from the first record).
    store = MarginStore(2, eps_max=10.0, delta_eps=1.0, init=4.0)
    store.record(torch.tensor([0]), crossed=torch.tensor([False]), distance=torch.tensor([0.0]))
    store.record(torch.tensor([0]), crossed=torch.tensor([True]), distance=torch.tensor([1.0]))
    store.record(torch.tensor([1]), crossed=torch.tensor([True]), distance=torch.tensor([1.0]))
    store.record(torch.tensor([1]), crossed=torch.tensor([False]), distance=torch.tensor([0.0]))
    stats = store.end_epoch()
    assert torch.equal(store.margins, _f32([2.5, 5.0]))
    assert stats["margin_expanded"] == 0.5 and stats["margin_shrunk"] == 0.5


def test_clipped_to_eps_max_and_never_below_zero():
    store = MarginStore(3, eps_max=1.0, delta_eps=0.4, init=0.9)
    store.record(torch.arange(3), crossed=torch.tensor([False, True, True]),
                 distance=torch.tensor([0.0, 0.0, 0.5]))
    store.end_epoch()
    assert torch.equal(store.margins, _f32([1.0, 0.45, 0.7]))
    for _ in range(5):  # repeated shrinking towards a boundary on the sample stays >= 0
        store.record(torch.arange(3), crossed=torch.ones(3, dtype=torch.bool),
                     distance=torch.zeros(3))
        store.end_epoch()
    assert (store.margins >= 0).all()
    assert torch.allclose(store.margins, _f32([1.0, 0.45, 0.7]) / 32)
    store.record(torch.arange(3), crossed=torch.zeros(3, dtype=torch.bool),
                 distance=torch.zeros(3))
    store.end_epoch()
    assert torch.allclose(store.margins, _f32([1.0, 0.45, 0.7]) / 32 + 0.4)


def test_stats_over_all_samples():
    store = MarginStore(4, eps_max=10.0, delta_eps=1.0, init=2.0)
    store.record(torch.tensor([0, 1, 2]), crossed=torch.tensor([False, False, True]),
                 distance=torch.tensor([0.0, 0.0, 0.0]))
    stats = store.end_epoch()
    # margins 3, 3, 1, 2: mean 9/4, median (2 + 3) / 2, min 1, max 3; 2 of 4 expanded,
    # 1 of 4 shrunk (fractions of all samples, not of the recorded ones)
    assert stats == pytest.approx({
        "margin_mean": 2.25, "margin_median": 2.5, "margin_min": 1.0, "margin_max": 3.0,
        "margin_expanded": 0.5, "margin_shrunk": 0.25,
    })
    assert stats == store.stats()
    odd = MarginStore(3, eps_max=10.0, delta_eps=1.0, init=1.0)
    odd.record(torch.tensor([1, 2]), crossed=torch.tensor([False, False]),
               distance=torch.zeros(2))
    odd.record(torch.tensor([2]), crossed=torch.tensor([False]), distance=torch.zeros(1))
    assert odd.end_epoch()["margin_median"] == 2.0


def test_get_accepts_lists_and_empty_index():
    store = MarginStore(4, eps_max=1.0, delta_eps=0.1)
    assert store.get([0, 3]).shape == (2,)
    assert store.get(torch.tensor([], dtype=torch.long)).shape == (0,)


def _store_with_history():
    store = MarginStore(5, eps_max=2.0, delta_eps=0.3)
    store.record(torch.tensor([0, 1, 4]), crossed=torch.tensor([False, True, False]),
                 distance=torch.tensor([0.0, 0.1, 0.0]))
    store.end_epoch()
    # pending records of an unfinished epoch
    store.record(torch.tensor([1, 2]), crossed=torch.tensor([True, False]),
                 distance=torch.tensor([0.05, 0.0]))
    return store


@pytest.mark.parametrize("through_file", [False, True])
def test_state_round_trip_mid_epoch(through_file):
    store = _store_with_history()
    state = store.state_dict()
    if through_file:
        state = _roundtrip(state)
    fresh = MarginStore(5, eps_max=2.0, delta_eps=0.3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.margins, store.margins)
    assert fresh.stats() == store.stats()
    # the pending records of the interrupted epoch survive: both end it the same way
    assert fresh.end_epoch() == store.end_epoch()
    assert torch.equal(fresh.margins, store.margins)
    # epoch 1: [0.3 + 0.3, (0.1 + 0.3) / 2, 0.3, 0.3, 0.3 + 0.3]; epoch 2 from the pending
    # records: sample 1 -> (0.05 + 0.2) / 2, sample 2 -> 0.3 + 0.3
    assert torch.allclose(store.margins, _f32([0.6, 0.125, 0.6, 0.3, 0.6]))


def test_state_dict_is_a_copy():
    store = _store_with_history()
    state = store.state_dict()
    store.end_epoch()
    fresh = MarginStore(5, eps_max=2.0, delta_eps=0.3)
    fresh.load_state_dict(state)
    assert not torch.equal(fresh.margins, store.margins)


def test_load_state_of_another_size_is_refused():
    state = MarginStore(4, eps_max=1.0, delta_eps=0.1).state_dict()
    with pytest.raises(ValueError, match="4 samples"):
        MarginStore(5, eps_max=1.0, delta_eps=0.1).load_state_dict(state)


@pytest.mark.parametrize("index", [[0, 5], [-1, 2]])
def test_index_out_of_range(index):
    store = MarginStore(5, eps_max=1.0, delta_eps=0.1)
    with pytest.raises(ValueError, match=r"index must be in \[0, 4\]"):
        store.get(torch.tensor(index))
    with pytest.raises(ValueError, match=r"index must be in \[0, 4\]"):
        store.record(torch.tensor(index), crossed=torch.tensor([True, False]),
                     distance=torch.tensor([0.1, 0.1]))
    assert torch.isnan(store.state_dict()["pending"]).all()  # nothing half-recorded


def test_record_length_mismatch_and_bad_distance():
    store = MarginStore(5, eps_max=1.0, delta_eps=0.1)
    with pytest.raises(ValueError, match="same length"):
        store.record(torch.tensor([0, 1]), crossed=torch.tensor([True]),
                     distance=torch.tensor([0.1, 0.1]))
    for bad in (float("nan"), -0.5, math.inf):
        with pytest.raises(ValueError, match="distance"):
            store.record(torch.tensor([0]), crossed=torch.tensor([True]),
                         distance=torch.tensor([bad]))
    # where nothing was crossed the distance is ignored, whatever it holds
    store.record(torch.tensor([0]), crossed=torch.tensor([False]),
                 distance=torch.tensor([float("nan")]))
    store.end_epoch()
    assert store.margins[0] == _f32([0.2])[0]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eps_max": 0.0, "delta_eps": 0.1}, "eps_max"),
        ({"eps_max": -1.0, "delta_eps": 0.1}, "eps_max"),
        ({"eps_max": float("nan"), "delta_eps": 0.1}, "eps_max"),
        ({"eps_max": 1.0, "delta_eps": -0.1}, "delta_eps"),
        ({"eps_max": 1.0, "delta_eps": 0.1, "init": -1.0}, "init"),
    ],
)
def test_bad_constructor_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MarginStore(4, **kwargs)


def test_bad_num_samples():
    with pytest.raises(ValueError, match="num_samples"):
        MarginStore(0, eps_max=1.0, delta_eps=0.1)
    with pytest.raises(TypeError, match="num_samples"):
        MarginStore(2.5, eps_max=1.0, delta_eps=0.1)


def _shrink_half(distance):
    return (distance + 0.5) / 2


@pytest.mark.parametrize(("build", "expected", "rule"), [
    (lambda: MarginStore(4, eps_max=1.0, delta_eps=0.25, init=0.5),
     [0.75, 0.3, math.nan, 0.75], _shrink_half),
    (lambda: DirectMarginStore(4, eps_max=1.0, init=0.5), [1.0, 0.1, math.nan, 1.0],
     lambda d: d),
])
def test_a_sample_listed_twice_in_one_record_keeps_its_last_row(build, expected, rule):
    # (a batch larger than the dataset must repeat samples) sample 3's last row did not
    # cross; sample 1's last row crossed at 0.1
    store = build()
    store.record(torch.tensor([3, 1, 3, 0, 3, 1]),
                 crossed=torch.tensor([True, True, True, False, False, True]),
                 distance=torch.tensor([0.1, 0.3, 0.2, 0.0, 0.0, 0.1]))
    pending, expanded = store.pending_updates()
    torch.testing.assert_close(pending, _f32(expected), equal_nan=True)
    assert expanded.tolist() == [True, False, False, True]

    # many repeats of few samples, as in a large batch: still each sample's last row
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 4, (50_000,), generator=g)
    distance = torch.rand(50_000, generator=g)
    store.record(index, crossed=torch.ones(50_000, dtype=torch.bool), distance=distance)
    last = [int((index == k).nonzero().max()) for k in range(4)]
    torch.testing.assert_close(store.pending_updates()[0], rule(distance[last]))
