"""analysis/credit.py: per-token credit read by rank within a response."""

from __future__ import annotations

import numpy as np
import pytest

from fipo_nb.analysis.credit import CreditRow, group_ranks, percentile_ranks, spearman


def test_percentile_ranks_run_from_0_to_1_and_ties_share_their_average():
    assert percentile_ranks([3.0, 1.0, 2.0]).tolist() == [1.0, 0.0, 0.5]
    assert percentile_ranks([1.0, 1.0, 2.0, 0.0]).tolist() == pytest.approx([0.5, 0.5, 1.0, 0.0])
    assert percentile_ranks([7.0, 7.0]).tolist() == [0.5, 0.5]
    assert percentile_ranks([4.0]).tolist() == [0.5]


def test_spearman_is_pearson_on_ranks_and_none_for_a_constant_side():
    a = np.array([0.1, 0.5, 0.2, 0.9])
    assert spearman(a, a ** 3) == pytest.approx(1.0)  # monotone: perfectly ranked alike
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.ones(4)) is None  # FIPO's first mini-batch: every weight 1


def test_group_ranks_say_which_segment_a_method_credits_more_in_the_outcomes_direction():
    tokens = ["First, ", "3 + 4 = 7", ". ", "Wait, ", "let me check: ", "4 + 3 = 7", ".\n", "The answer is 7."]
    from fipo_nb.analysis.segments import token_groups

    kinds, opening = token_groups(tokens)
    assert opening.any()  # "Wait," opens a verification move
    verify = opening.astype(float)
    up = CreditRow(0, 1, 1.0, 1.0, tokens, {"a": (1 + verify).tolist(), "b": (1 - verify).tolist()}, None)
    down = CreditRow(1, 1, -1.0, -1.0, tokens, {"a": (-1 - verify).tolist(), "b": (-1 + verify).tolist()}, None)
    ranks = group_ranks([up, down])
    # a pushes the opening tokens most in both directions (up when right, down when wrong); b least
    assert ranks["a"]["verify_open"] > 0.5 > ranks["b"]["verify_open"]
    assert ranks["tokens"]["verify_open"] == 2 * opening.sum()
