"""Where two methods put their credit, token by token, on the same responses.

A token's credit is the advantage its loss term used: A_i * f_t for FIPO (the response's group
advantage re-weighted by Future-KL), the GAE advantage A_t for PPO (from the critic's values), A_i
for DAPO and GRPO. The two are on different scales (group-normalised vs whitened over the batch), so
the comparison is by rank, within each response, of the credit in the direction of the response's
outcome (credit * sign(A_i): for a failed response the most blamed token ranks highest):

    rank_t      the token's percentile rank of that credit within its response, 0 (least) .. 1 (most),
                ties sharing their average rank
    rho         Spearman's rank correlation of the two methods' credit over a response's tokens
                (None when either is constant: FIPO's first mini-batch, where every f_t is 1)
    per group   the mean rank of the tokens of each reasoning segment kind (and of the tokens that
                open a verification move), per method: above 0.5, the method credits that group
                more than the rest of the response

`credit_rows` takes the step-1 results of two runs trained on identical rollouts (compare checks the
hash), so both methods are read on the very same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .segments import GROUPS, group_sums, token_groups

__all__ = ["CreditRow", "credit_rows", "group_ranks", "percentile_ranks", "spearman"]


def percentile_ranks(values) -> np.ndarray:
    """[L] the rank of each value among `values`, scaled to 0 .. 1, ties at their average rank
    (0.5 everywhere for a constant or one-token response)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return np.full(n, 0.5)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=np.float64)
    uniques, inverse = np.unique(values, return_inverse=True)  # ties: the mean of their ranks
    means = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
    return means[inverse] / (n - 1)


def spearman(a, b) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None when either side is constant."""
    ra, rb = percentile_ranks(a), percentile_ranks(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((da * da).sum() * (db * db).sum()))
    return float((da * db).sum() / denominator) if denominator > 1e-12 else None


@dataclass
class CreditRow:
    """One response, read by two methods."""

    row: int
    mini_batch: int
    reward: float
    direction: float  # sign of the response's group advantage: +1 pushed up, -1 pushed down
    tokens: list[str]
    credit: dict[str, list[float]]  # method -> [L] per-token credit
    rho: float | None  # Spearman's rank correlation of the two methods' credit

    def to_dict(self) -> dict:
        return {"row": self.row, "mini_batch": self.mini_batch, "reward": self.reward,
                "direction": self.direction, "tokens": self.tokens,
                "credit": self.credit, "rho": self.rho}


def credit_rows(results: dict, tokenizer, *, later_only: bool = True) -> list[CreditRow]:
    """The responses of `results` ({method: StepResult of the same rollout}) with each method's credit
    (StepResult.token_advantages). later_only: only rows of mini-batches after the first (where FIPO's
    weights can differ from 1) that every method kept in its loss. Rows whose group advantage is 0 (a
    group with equal rewards: no direction) are left out."""
    from ..models.tokens import token_pieces

    methods = list(results)
    first = results[methods[0]]
    rows = []
    for row in range(len(first.rollout)):
        mini_batch = int(first.mini_batch[row])
        if later_only and (mini_batch == 0 or not all(bool(r.in_loss[row]) for r in results.values())):
            continue
        length = int(first.rollout.response_lengths[row])
        direction = float(np.sign(float(first.advantages[row])))
        if length == 0 or direction == 0:
            continue
        credit = {m: results[m].token_advantages[row, :length].double().tolist() for m in methods}
        tokens = token_pieces(tokenizer, first.rollout.response_ids[row, :length].tolist())
        rho = spearman(credit[methods[0]], credit[methods[1]]) if len(methods) == 2 else None
        rows.append(CreditRow(row, mini_batch, float(first.rewards[row]), direction, tokens, credit, rho))
    return rows


def group_ranks(rows: list[CreditRow]) -> dict[str, dict[str, float | None]]:
    """{method: {group: mean percentile rank of its tokens' credit}} over `rows` (each token counts once;
    ranks are taken within each response), and the token count of each group under "tokens"."""
    methods = list(rows[0].credit) if rows else []
    counts = np.zeros(len(GROUPS))
    sums = {m: np.zeros(len(GROUPS)) for m in methods}
    for item in rows:
        kinds, opening = token_groups(item.tokens)
        for method in methods:
            ranks = percentile_ranks(np.asarray(item.credit[method]) * item.direction)
            count, total = group_sums(kinds, opening, ranks)
            sums[method] += total
        counts += count
    out: dict[str, dict[str, float | None]] = {"tokens": {g: float(c) for g, c in zip(GROUPS, counts)}}
    for method in methods:
        out[method] = {g: float(s / c) if c else None for g, s, c in zip(GROUPS, sums[method], counts)}
    return out
