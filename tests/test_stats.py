"""Wilson intervals and binomial noise against hand-computed values."""

import math

import pytest

from ima.stats import binomial_std, successes, wilson_interval


def test_wilson_interval_hand_computed():
    # k = 8 of n = 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.716738,
    # half 1.96 / 1.38416 * sqrt(0.016 + 0.0096040) = 0.226561
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.490162, abs=1e-5)
    assert hi == pytest.approx(0.943318, abs=1e-5)
    # k = 0 of n = 20: [0, z^2 / (n + z^2)] = [0, 3.8415 / 23.8415]
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.161125, abs=1e-5)
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.161125, abs=1e-5)
    # k = 50 of 100: centre 0.5, half 1.96 / 1.038415 * sqrt(0.0025 + 0.000096)
    lo, hi = wilson_interval(50, 100)
    assert (lo + hi) / 2 == pytest.approx(0.5)
    assert hi - lo == pytest.approx(2 * 1.96 / 1.038415 * math.sqrt(0.0025 + 0.0000960),
                                    abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k must be <= 3"):
        wilson_interval(4, 3)


def test_binomial_std_and_successes():
    assert binomial_std(0.5, 100) == pytest.approx(0.05)
    assert binomial_std(0.0, 100) == pytest.approx(math.sqrt(0.01 * 0.99 / 100))
    assert binomial_std(1.0, 100) == pytest.approx(binomial_std(0.0, 100))
    assert successes(0.64, 25) == 16
