"""fipo_nb.ppo: hand-worked cases, GAE's properties in float64 and the value loss (no verl here; the parity
with verl 0.9.1 is tests/integrations/verl/test_ppo_parity.py)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import fipo_nb.ppo
from fipo_nb.ppo import critic_metrics, explained_variance, gae, length_adaptive_lambda, value_loss

F64 = torch.float64
EPS = torch.finfo(F64).eps


def t(*rows, dtype=F64):
    return torch.tensor(rows, dtype=dtype)


def close(actual, expected, ulps=64.0, scale=1.0):
    """Equal to float64 rounding: |a - e| <= ulps * eps * scale."""
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=0, atol=ulps * EPS * scale)


def ragged(seed, rows=6, length=10):
    """Random float64 rewards/values and a right-padded int64 mask (lengths 1..length, one row of 1 token)."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(rows, length, generator=g, dtype=F64)
    values = torch.randn(rows, length, generator=g, dtype=F64)
    lengths = torch.randint(1, length + 1, (rows,), generator=g)
    lengths[0] = 1
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return rewards, values, mask, lengths


def masked_moments(x, mask):
    picked = x[mask.bool()]
    return picked.mean(), picked.var()  # unbiased


def test_doctests_in_ppo_pass():
    assert doctest.testmod(fipo_nb.ppo).failed == 0


# ---------------------------------------------------------------- GAE


def test_gae_by_hand():
    # gamma 1, lam 0.5, r = [0, 0, 1], V = [0.5, 0.25, 0.5]
    # delta = [0 + 0.25 - 0.5, 0 + 0.5 - 0.25, 1 + 0 - 0.5] = [-0.25, 0.25, 0.5]
    # A_2 = 0.5; A_1 = 0.25 + 0.5 * 0.5 = 0.5; A_0 = -0.25 + 0.5 * 0.5 = 0; R = A + V = [0.5, 0.75, 1.0]
    # whitened: mean 1/3, unbiased var = (1/9 + 1/36 + 1/36) / 2 = 1/12
    adv, ret = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.25, 0.5]), torch.ones(1, 3, dtype=torch.long), 1.0, 0.5)
    close(ret, [[0.5, 0.75, 1.0]])
    close(adv, (t([0.0, 0.5, 0.5]) - 1 / 3) / (1 / 12 + 1e-8) ** 0.5, ulps=16, scale=4)


@pytest.mark.parametrize("seed", range(4))
def test_lambda_one_gamma_one_returns_are_the_final_reward_and_advantages_are_whitened(seed):
    _, values, mask, lengths = ragged(seed)
    rewards = torch.zeros_like(values)
    final = torch.randn(len(lengths), generator=torch.Generator().manual_seed(100 + seed), dtype=F64)
    rewards[torch.arange(len(lengths)), lengths - 1] = final  # reward on the last valid token only
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    valid = mask.bool()
    close(ret[valid], final[:, None].expand_as(ret)[valid], scale=4 * (values.abs().max() + final.abs().max()))
    mean, var = masked_moments(adv, mask)
    close(mean, 0.0, ulps=256, scale=adv.abs().max())
    raw_var = masked_moments(ret - values, mask)[1]
    # var / (var + 1e-8), times N / (N - 1) rounded to float32 as verl computes it (an int mask's count)
    assert abs(var - 1) <= 1e-8 / raw_var + 2.0**-24 + 64 * EPS


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_lambda_zero_is_the_one_step_td_error(gamma):
    rewards, values, mask, lengths = ragged(7)
    _, ret = gae(rewards, values, mask, gamma, 0.0)
    nxt = torch.cat([values[:, 1:], torch.zeros(len(lengths), 1, dtype=F64)], dim=1) * torch.cat(
        [mask[:, 1:], torch.zeros(len(lengths), 1, dtype=torch.long)], dim=1)  # V_{t+1}, 0 past the last valid
    expected = rewards + gamma * nxt - values
    valid = mask.bool()
    close((ret - values)[valid], expected[valid], ulps=16, scale=rewards.abs().max() + 2 * values.abs().max())


@pytest.mark.parametrize("garbage", [1e6, float("nan"), float("inf")])
def test_padding_does_not_leak_into_valid_tokens(garbage):
    rewards, values, mask, _ = ragged(3)
    adv, ret = gae(rewards, values, mask, 0.99, 0.95)
    pad = torch.full((rewards.shape[0], 5), garbage, dtype=F64)
    filled = [torch.where(mask.bool(), x, garbage) for x in (rewards, values)]  # garbage past each row's end too
    adv2, ret2 = gae(torch.cat([filled[0], pad], 1), torch.cat([filled[1], -pad], 1),
                     torch.cat([mask, torch.zeros_like(pad, dtype=torch.long)], 1), 0.99, 0.95)
    valid = mask.bool()
    assert torch.equal(ret2[:, :10][valid], ret[valid])  # the same numbers through the same arithmetic
    close(adv2[:, :10][valid], adv[valid], ulps=64, scale=adv.abs().max())  # sums over another layout


def test_masked_tokens_inside_a_row_are_skipped_like_observation_tokens():
    # [a b _ _ c] with V/r at the holes anything: the recursion sees [a b c]
    rewards, values = t([0.1, 0.2, 5.0, -7.0, 1.0]), t([0.3, -0.4, 9.0, 9.0, 0.6])
    mask = torch.tensor([[1, 1, 0, 0, 1]])
    keep = mask[0].bool()
    _, ret = gae(rewards, values, mask, 0.9, 0.8)
    _, compact = gae(rewards[:, keep], values[:, keep], torch.ones(1, 3, dtype=torch.long), 0.9, 0.8)
    assert torch.equal(ret[:, keep], compact)


def test_per_sequence_lambda_equals_each_row_with_its_own_lambda():
    rewards, values, mask, _ = ragged(11)
    lam = torch.linspace(0.0, 1.0, rewards.shape[0], dtype=F64)
    for shape in [(-1,), (-1, 1)]:
        _, ret = gae(rewards, values, mask, 0.97, lam.reshape(shape))
        for i in range(rewards.shape[0]):
            # returns only: advantages are whitened over the whole batch. The row twice, so that a row of one
            # valid token still has the 2 tokens whitening needs
            _, row = gae(rewards[[i, i]], values[[i, i]], mask[[i, i]], 0.97, float(lam[i]))
            close(ret[i], row[0], ulps=2, scale=ret.abs().max())


def test_bool_int_and_float_masks_agree():
    rewards, values, mask, _ = ragged(5)
    adv, ret = gae(rewards, values, mask, 0.99, 0.95)
    adv_b, ret_b = gae(rewards, values, mask.bool(), 0.99, 0.95)
    assert torch.equal(adv, adv_b) and torch.equal(ret, ret_b)
    adv_f, ret_f = gae(rewards, values, mask.double(), 0.99, 0.95)
    assert torch.equal(ret, ret_f)
    # verl's masked mean keeps the + 1e-8 of a float64 mask's count (an int count rounds it away in float32),
    # and an int count's Bessel factor N / (N - 1) is a float32: the whitened advantages differ at ~1e-8
    torch.testing.assert_close(adv_f, adv, rtol=1e-7, atol=1e-7)
    assert not torch.equal(adv_f, adv)


def test_gae_rejects_bad_shapes_and_a_batch_with_one_token():
    with pytest.raises(ValueError, match="one \\[B, T\\] shape"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), 1.0, 1.0)
    with pytest.raises(ValueError, match="lam tensor"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), 1.0, torch.ones(3))
    with pytest.raises(ValueError, match="at least 2 valid tokens"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([[1, 0, 0], [0, 0, 0]]), 1.0, 1.0)


# ---------------------------------------------------------------- value loss


def test_value_loss_by_hand_with_its_clip_fraction_and_gradient():
    # c = 0.5. t0: V' = 1.0 inside [0.3, 1.3]: both (1 - 1.5)^2 = 0.25.   t1: V' = 2 clipped to 1.5:
    # max(1, 0.25) = 1 (unclipped wins).   t2: V' = 1 clipped to 0.5: max(0, 0.25) = 0.25 (clipped wins).
    # t3 masked. loss = 0.5 * (0.25 + 1 + 0.25) / 3 = 0.25; clipfrac = 1/3.
    vpreds = t([1.0, 2.0, 1.0, 9.0]).requires_grad_()
    returns, values = t([1.5, 1.0, 1.0, 0.0]).requires_grad_(), t([0.8, 1.0, 0.0, 0.0]).requires_grad_()
    mask = torch.tensor([[True, True, True, False]])
    loss, clipfrac = value_loss(vpreds, returns, values, mask, 0.5)
    close(loss, 0.25, ulps=4)
    assert clipfrac.item() == pytest.approx(1 / 3, rel=1e-7)  # a float32 mean, as in verl
    loss.backward()
    # d/dV' = 0.5 / 3 * 2 (V' - R) where the unclipped term is used: t0 -1/6, t1 1/3; t2 goes through the clip: 0
    close(vpreds.grad, [[-1 / 6, 1 / 3, 0.0, 0.0]], ulps=4)
    assert returns.grad is None and values.grad is None


def test_value_loss_aggregation_modes():
    g = torch.Generator().manual_seed(2)
    vpreds, returns, values = (torch.randn(3, 5, generator=g, dtype=F64) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    loss, _ = value_loss(vpreds, returns, values, mask, 0.2)
    per_token = 0.5 * torch.max((vpreds - returns) ** 2,
                                (vpreds.clamp(values - 0.2, values + 0.2) - returns) ** 2)  # [3, 5]
    close(loss, per_token[mask.bool()].mean(), ulps=8)
    close(value_loss(vpreds, returns, values, mask, 0.2, "token-sum")[0], per_token[mask.bool()].sum(), ulps=16)
    close(value_loss(vpreds, returns, values, mask, 0.2, batch_num_tokens=14, dp_size=2)[0],
          per_token[mask.bool()].sum() / 7, ulps=16)
    seq_sum = (per_token * mask).sum(1)[:2]
    close(value_loss(vpreds, returns, values, mask, 0.2, "seq-mean-token-sum")[0], seq_sum.mean(), ulps=16)
    close(value_loss(vpreds, returns, values, mask, 0.2, "seq-mean-token-sum-norm")[0], seq_sum.mean() / 5, ulps=16)
    close(value_loss(vpreds, returns, values, mask, 0.2, "seq-mean-token-mean")[0],
          (seq_sum / (mask.sum(1)[:2] + 1e-8)).mean(), ulps=16)
    with pytest.raises(ValueError, match="Invalid loss_agg_mode"):
        value_loss(vpreds, returns, values, mask, 0.2, "nope")


# ---------------------------------------------------------------- VAPO's lambda, metrics


def test_length_adaptive_lambda():
    # 1 - 1 / (0.05 l): l = 20 -> 0; 40 -> 0.5; 100 -> 0.8; 1000 -> 0.98; shorter than 20 -> clamped to 0
    close(length_adaptive_lambda(torch.tensor([0, 10, 20, 40, 100, 1000])), [0.0, 0.0, 0.0, 0.5, 0.8, 0.98], ulps=4)
    close(length_adaptive_lambda([20.0], alpha=0.1), [0.5], ulps=4)
    assert length_adaptive_lambda(torch.tensor([10**9])).item() <= 1.0
    with pytest.raises(ValueError, match="alpha"):
        length_adaptive_lambda([10], alpha=0.0)


def test_explained_variance():
    _, returns, mask, _ = ragged(9)
    values = torch.where(mask.bool(), returns, 123.0)  # masked positions do not count
    assert explained_variance(values, returns, mask) == 1.0
    var = returns[mask.bool()].var()
    expected = 1e-5 / (var + 1e-5)  # a constant critic: 1 - var / (var + 1e-5), ~0
    constant = explained_variance(torch.full_like(returns, 0.7), returns, mask)
    assert constant == pytest.approx(expected.item(), abs=64 * EPS) and abs(constant) < 1e-4
    assert math.isnan(explained_variance(values, returns, torch.zeros_like(mask)))


def test_critic_metrics_names_and_values():
    rewards, values, mask, _ = ragged(4)
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    loss, clipfrac = value_loss(values + 0.1, ret, values, mask, 0.05)
    metrics = critic_metrics(values, ret, adv, mask, vf_loss=loss, vf_clipfrac=clipfrac)
    names = {f"critic/{n}/{s}" for n in ("values", "returns", "advantages") for s in ("mean", "max", "min")}
    assert set(metrics) == names | {"critic/vf_explained_var", "critic/vf_loss", "critic/vf_clipfrac"}
    assert all(isinstance(v, float) for v in metrics.values())
    valid = mask.bool()
    assert metrics["critic/values/max"] == values[valid].max().item()
    assert metrics["critic/returns/min"] == ret[valid].min().item()
    assert metrics["critic/advantages/mean"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["critic/vf_clipfrac"] == clipfrac.item() and metrics["critic/vf_loss"] == loss.item()
    assert set(critic_metrics(values, ret, adv, mask)) == names | {"critic/vf_explained_var"}
