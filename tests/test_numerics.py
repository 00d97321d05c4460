"""The test suite's float tolerance: reordering noise passes on any CPU, real errors fail."""

import pytest
import torch
from numerics import EPS32, assert_rows_close, assert_scalars_close


def test_reordering_noise_of_a_large_row_passes():
    # the AMD EPYC failure: one element off by 1.04e-4 in a row of magnitude ~10^2, which the
    # old fixed atol=rtol=1e-4 comparison rejected on an element near zero
    expected = torch.zeros(2, 3, 576)
    expected[:, :, 7] = 120.0
    actual = expected.clone()
    actual[1, 2, 3] += 1.04e-4
    with pytest.raises(AssertionError):
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    assert_rows_close(actual, expected)


def test_real_errors_fail():
    expected = torch.randn(4, 576) * 50
    wrong = expected.clone()
    wrong[2, 10] += 0.01 * expected[2].abs().max()  # a 1 % error of the row's scale
    with pytest.raises(AssertionError, match="1 of 2304 elements"):
        assert_rows_close(wrong, expected, what="capture")
    with pytest.raises(AssertionError):
        assert_rows_close(expected[:, :10], expected[:, :11])  # shapes must match
    assert_scalars_close([1.0, 2.0], [1.0, 2.0 + 100 * EPS32], scale=1.0)
    with pytest.raises(AssertionError):
        assert_scalars_close([1.0], [1.01], scale=10.0)
