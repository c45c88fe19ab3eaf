"""labkit.disentanglement on constructed responses whose answers are known by hand."""

import math

import numpy as np
import pytest
import torch

from labkit.disentanglement import coverage, dci, disentanglement, top_two_gap

PERMUTATION = torch.eye(4)[[2, 0, 3, 1]] * 3.0


def dense_rotation(n: int = 4) -> torch.Tensor:
    """|Q| for a random orthogonal Q: every direction moves every factor."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    return q.abs()


def test_shares_and_gaps_by_hand():
    r = torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.0, 2.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    share, gap = disentanglement(r), top_two_gap(r)
    assert share.dtype == gap.dtype == torch.float64
    assert torch.allclose(share[[0, 1, 3]], torch.tensor([0.75, 0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(gap[[0, 1, 3]], torch.tensor([0.5, 0.25, 1.0], dtype=torch.float64))
    assert math.isnan(share[2]) and math.isnan(gap[2])
    assert coverage(r) == 3  # tops: factor 0, 2 and 1; the zero row has none
    assert coverage(torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])) == 1


def test_coverage_counts_distinct_top_factors():
    assert coverage(PERMUTATION) == 4
    assert coverage(torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 1.0], [4.0, 0.0, 0.0]])) == 2
    assert coverage(torch.zeros(3, 2)) == 0


def test_a_tie_in_the_top_two_has_no_gap_and_one_factor_has_a_full_gap():
    assert top_two_gap(torch.tensor([[2.0, 2.0, 1.0]])).item() == 0.0
    assert top_two_gap(torch.tensor([[2.0], [0.5]])).tolist() == [1.0, 1.0]


def test_a_permutation_of_the_identity_is_perfect():
    assert disentanglement(PERMUTATION).tolist() == [1.0] * 4
    assert top_two_gap(PERMUTATION).tolist() == [1.0] * 4
    d, c = dci(PERMUTATION)
    assert d == pytest.approx(1.0, abs=1e-12) and c == pytest.approx(1.0, abs=1e-12)


def test_a_dense_rotation_scores_lower():
    d, c = dci(dense_rotation())
    assert d < 0.5 and c < 0.5  # about 0.04 for this Q
    assert disentanglement(dense_rotation()).max() < 1


def test_uniform_rows_have_no_disentanglement():
    d, c = dci(torch.full((3, 5), 0.7))
    assert d == pytest.approx(0.0, abs=1e-12) and c == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(disentanglement(torch.full((3, 5), 0.7)), torch.full((3,), 0.2, dtype=torch.float64))


def test_dci_matches_a_two_by_two_example_worked_by_hand():
    # R = [[3, 1], [0, 2]], T = 6. Rows: p = (3/4, 1/4) and (0, 1), D_1 = 1 − H_2(3/4, 1/4), D_2 = 1,
    # weights 4/6 and 2/6. Columns: (1, 0) and (1/3, 2/3), C_1 = 1, C_2 = 1 − H_2(1/3, 2/3), weights 3/6 each.
    h = lambda *p: -sum(q * math.log2(q) for q in p)  # noqa: E731
    d, c = dci(np.array([[3.0, 1.0], [0.0, 2.0]]))
    assert d == pytest.approx(4 / 6 * (1 - h(0.75, 0.25)) + 2 / 6 * 1.0, rel=1e-12)
    assert c == pytest.approx(3 / 6 * 1.0 + 3 / 6 * (1 - h(1 / 3, 2 / 3)), rel=1e-12)
    assert (d, c) == pytest.approx((0.4591479, 0.5408521), abs=1e-7)


def test_every_metric_ignores_the_scale_of_the_response():
    r = dense_rotation(5)[:, :3]
    for scale in (1e-6, 7.0):
        assert torch.allclose(disentanglement(scale * r), disentanglement(r))
        assert torch.allclose(top_two_gap(scale * r), top_two_gap(r))
        assert coverage(scale * r) == coverage(r)
        assert dci(scale * r) == pytest.approx(dci(r), rel=1e-12)


def test_zero_rows_and_columns_contribute_nothing_to_dci():
    padded = torch.zeros(6, 6)
    padded[:4, :4] = PERMUTATION
    assert dci(padded) == pytest.approx((1.0, 1.0), abs=1e-12)
    assert all(math.isnan(x) for x in dci(torch.zeros(2, 3)))


def test_dci_with_one_direction_or_one_factor():
    # one direction: each factor is moved by it alone (complete); it moves two factors equally (D = 0)
    assert dci(torch.tensor([[1.0, 1.0]])) == pytest.approx((0.0, 1.0), abs=1e-12)
    # one factor: each direction moves only it (D = 1); two directions share it equally (C = 0)
    assert dci(torch.tensor([[1.0], [1.0]])) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_numpy_integer_and_torch_inputs_agree():
    r = np.array([[3, 1], [0, 2]])
    assert dci(r) == dci(torch.tensor(r, dtype=torch.float32))
    assert torch.equal(disentanglement(r), disentanglement(torch.from_numpy(r).double()))


@pytest.mark.parametrize("bad, error, needle", [
    (torch.tensor([[1.0, -0.2], [0.5, 0.5]]), ValueError, "negative"),
    (torch.tensor([[1.0, math.nan]]), ValueError, "NaN"),
    (np.array([[1.0, math.inf]]), ValueError, "infinite"),
    (torch.ones(3), ValueError, "2 dimensions"),
    (torch.ones(0, 3), ValueError, "non-empty"),
    ([[1.0, 0.0]], TypeError, "torch.Tensor"),
])
@pytest.mark.parametrize("metric", [disentanglement, top_two_gap, coverage, dci])
def test_bad_responses_are_refused(metric, bad, error, needle):
    with pytest.raises(error, match=needle) as info:
        metric(bad)
    assert "response" in str(info.value)


def test_a_negative_entry_no_longer_gives_a_share_above_one():
    # the old scorer's bug: [1, −0.9] gave max / sum = 1 / 0.1 = 10
    with pytest.raises(ValueError, match="absolute values"):
        disentanglement(torch.tensor([[1.0, -0.9]]))
