"""The sample order of an epoch of a fixed number of iterations: no sample twice in a
batch, a function of (seed, epoch) only, and every sample seen as evenly as possible."""

import pytest
import torch

from ima.training import epoch_order

# (n, batch size, iterations): batches that straddle two permutations, a batch as large as
# the dataset, one-sample batches, several permutations per epoch
CASES = [(10, 3, 20), (10, 4, 7), (10, 10, 5), (7, 6, 9), (5, 2, 13), (1, 1, 3), (33, 16, 11),
         (100, 64, 10), (16, 16, 1)]


def _batches(order, batch_size):
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def _has_repeat(order, batch_size):
    return any(len(set(b)) < len(b) for b in _batches(order, batch_size))


@pytest.mark.parametrize(("n", "batch_size", "iterations"), CASES)
@pytest.mark.parametrize("seed", [0, 5])
def test_no_sample_twice_in_a_batch_and_every_sample_seen_evenly(n, batch_size, iterations,
                                                                   seed):
    length = batch_size * iterations
    order = epoch_order(n, seed, 2, length, batch_size=batch_size)
    assert order.shape == (length,) and order.dtype == torch.int64
    assert not _has_repeat(order, batch_size)
    # a permutation is used up before the next begins: at every point of the epoch the
    # counts of any two samples differ by at most one, as with the permutations cut as
    # they are; the first permutation is the one-pass order
    counts = torch.zeros(n, dtype=torch.long)
    for v in order.tolist():
        counts[v] += 1
        assert int(counts.max() - counts.min()) <= 1
    assert torch.equal(order[:n], epoch_order(n, seed, 2)[:length])
    # the same entries as the permutations cut as they are, up to the last permutation's
    plain = epoch_order(n, seed, 2, length)
    full = length // n * n
    assert sorted(order[:full].tolist()) == sorted(plain[:full].tolist())


def test_the_cases_hold_batches_that_straddle_with_a_repeat():
    # without the batch size, permutations are cut as they are and repeats do occur
    assert sum(_has_repeat(epoch_order(n, 0, 2, b * it), b) for n, b, it in CASES) >= 4


def test_order_is_a_function_of_seed_and_epoch_only():
    first = epoch_order(10, 3, 4, 60, batch_size=4)
    assert torch.equal(first, epoch_order(10, 3, 4, 60, batch_size=4))
    assert not torch.equal(first, epoch_order(10, 3, 5, 60, batch_size=4))
    assert not torch.equal(first, epoch_order(10, 4, 4, 60, batch_size=4))


def test_batches_larger_than_the_dataset_cut_the_permutations_as_they_are():
    # repeats are unavoidable; the margin store keeps a batch's last record of a sample
    order = epoch_order(3, 0, 1, 10, batch_size=5)
    assert torch.equal(order, epoch_order(3, 0, 1, 10))
    assert sorted(order[:9].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
