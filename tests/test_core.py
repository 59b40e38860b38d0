"""fipo_nb.core: hand-worked cases (check them with a pencil), properties, and edge cases."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fipo_nb.core
from fipo_nb import FIPOConfig
from fipo_nb.core import (
    discounted_suffix_sum,
    future_kl,
    future_kl_reference,
    group_advantages,
    influence_weights,
    policy_loss,
    weight_bounds,
)

E = math.e


def t(*rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def naive_future_kl(log_ratio, mask, decay_rate, dual_clip=None, clamp=20.0):
    """The definition as a float64 reverse loop: y_t = M_t mask_t delta_t + gamma y_{t+1}."""
    return future_kl_reference(log_ratio, mask, decay_rate=decay_rate, dual_clip=dual_clip, log_ratio_clamp=clamp)


def test_doctests_in_core_pass():
    assert doctest.testmod(fipo_nb.core).failed == 0


# ---------------------------------------------------------------- Future-KL, by hand


def test_future_kl_sums_the_discounted_future_including_the_current_token():
    # decay_rate 1 -> gamma = 0.5; delta = [0.4, 0.2, 0.8]
    # FKL_2 = 0.8; FKL_1 = 0.2 + 0.5 * 0.8 = 0.6; FKL_0 = 0.4 + 0.5 * 0.6 = 0.7
    out = future_kl(t([0.4, 0.2, 0.8]), torch.ones(1, 3), decay_rate=1.0)
    torch.testing.assert_close(out, t([0.7, 0.6, 0.8]))


def test_decay_rate_is_a_half_life_in_tokens():
    # one log-ratio of 1.0, four tokens ahead, decay_rate 4: gamma^4 = 2^(-4/4) = 0.5
    out = future_kl(t([0.0, 0.0, 0.0, 0.0, 1.0]), torch.ones(1, 5), decay_rate=4.0)
    assert out[0, 0].item() == pytest.approx(0.5)
    assert out[0, 2].item() == pytest.approx(2 ** -0.5)


def test_participation_mask_leaves_out_tokens_past_the_dual_clip():
    # c = 10 -> log c = 2.303; delta = [0.1, 3.0, 0.2]: the middle token (ratio e^3 = 20 > 10) feeds nothing
    # with the mask:    FKL = [0.1 + 0.5 * (0 + 0.5 * 0.2), 0 + 0.5 * 0.2, 0.2] = [0.15, 0.1, 0.2]
    # without the mask: FKL = [0.1 + 0.5 * 3.1, 3.0 + 0.1, 0.2]                 = [1.65, 3.1, 0.2]
    delta, mask = t([0.1, 3.0, 0.2]), torch.ones(1, 3)
    torch.testing.assert_close(future_kl(delta, mask, decay_rate=1.0, dual_clip=10.0), t([0.15, 0.1, 0.2]))
    torch.testing.assert_close(future_kl(delta, mask, decay_rate=1.0, dual_clip=None), t([1.65, 3.1, 0.2]))


def test_masked_tokens_feed_nothing_and_read_zero():
    # mask = [1, 0, 1]; the 5.0 under the hole is ignored; the hole still passes on the discount
    # FKL_2 = 0.8; FKL_1 -> 0 (masked); FKL_0 = 0.4 + 0.5 * (0 + 0.5 * 0.8) = 0.6
    out = future_kl(t([0.4, 5.0, 0.8]), t([1, 0, 1]), decay_rate=1.0)
    torch.testing.assert_close(out, t([0.6, 0.0, 0.8]))


def test_log_ratio_is_clamped_at_twenty_before_summing():
    out = future_kl(t([30.0, -50.0]), torch.ones(1, 2), decay_rate=1.0)
    # clamp -> [20, -20]; FKL_1 = -20; FKL_0 = 20 + 0.5 * -20 = 10
    torch.testing.assert_close(out, t([10.0, -20.0]))


# ---------------------------------------------------------------- weights, by hand


@pytest.mark.parametrize(
    "weight_clip, high_only, expected",
    [
        # FKL = [0, ln 1.1, ln 2, -ln 2, ln 20] -> exp = [1, 1.1, 2, 0.5, 20]
        (0.2, True, [1.0, 1.1, 1.2, 1.0, 1.2]),  # high-only: [1, 1.2]
        (0.2, False, [1.0, 1.1, 1.2, 0.8, 1.2]),  # two-sided: [0.8, 1.2]
        (0.0, True, [1.0, 1.1, 2.0, 0.5, 10.0]),  # no clipping: cap at 10
        (None, False, [1.0, 1.1, 2.0, 0.5, 10.0]),
    ],
)
def test_weight_clipping_modes(weight_clip, high_only, expected):
    fkl = t([0.0, math.log(1.1), math.log(2.0), -math.log(2.0), math.log(20.0)])
    weights = influence_weights(
        fkl, torch.ones(1, dtype=torch.float64), torch.ones_like(fkl),
        weight_clip=weight_clip, weight_clip_high_only=high_only, safety_threshold=10.0,
    )
    torch.testing.assert_close(weights, t(expected))


def test_safety_rule_holds_risky_negative_tokens_in_point_eight_to_one():
    # A < 0 and ratio 12 > 10: the weight is clamped into [0.8, 1.0]
    # token weights before the rule (no clipping): [2.0, 0.5, 2.0]; ratios [12, 12, 5]
    # -> [1.0 (2 -> 1), 0.8 (0.5 -> 0.8), 2.0 (ratio 5 <= 10: untouched)]
    fkl = t([math.log(2.0), math.log(0.5), math.log(2.0)])
    ratio = t([12.0, 12.0, 5.0])
    kwargs = dict(weight_clip=None, weight_clip_high_only=True)
    neg = influence_weights(fkl, torch.tensor([-1.0]), ratio, safety_threshold=10.0, **kwargs)
    torch.testing.assert_close(neg, t([1.0, 0.8, 2.0]))
    pos = influence_weights(fkl, torch.tensor([1.0]), ratio, safety_threshold=10.0, **kwargs)
    torch.testing.assert_close(pos, t([2.0, 0.5, 2.0]))  # positive advantages: the rule does not apply
    off = influence_weights(fkl, torch.tensor([-1.0]), ratio, safety_threshold=None, **kwargs)
    torch.testing.assert_close(off, t([2.0, 0.5, 2.0]))


def test_weight_bounds_per_mode():
    assert weight_bounds(0.2, True) == (1.0, 1.2)
    assert weight_bounds(0.2, False) == (0.8, 1.2)
    assert weight_bounds(0.0, True) == (0.0, 10.0)
    assert weight_bounds(None, False) == (0.0, 10.0)


# ---------------------------------------------------------------- the loss, by hand


def one_token_loss(log_ratio, advantage, **cfg):
    log_prob = torch.tensor([[log_ratio]], dtype=torch.float64, requires_grad=True)
    out = policy_loss(log_prob, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([advantage]),
                      torch.ones(1, 1), FIPOConfig(**cfg))
    out.loss.backward()
    return out.loss.item(), log_prob.grad.item(), out


def test_unclipped_positive_token_loss_is_minus_advantage_times_ratio():
    # delta = 0.1 -> r = e^0.1 = 1.10517 (inside [0.8, 1.28]); single token: FKL = 0.1 -> f = e^0.1
    # loss = -A f r = -1.10517 * 1.10517 = -1.22140; d loss / d logp = -A f r (f detached) = -1.22140
    loss, grad, _ = one_token_loss(0.1, 1.0)
    assert loss == pytest.approx(-math.exp(0.2))
    assert grad == pytest.approx(-math.exp(0.2))


def test_clip_higher_caps_positive_ratio_at_one_point_two_eight():
    # delta = 0.5 -> r = 1.6487 > 1.28; dapo: l1 = -1.6487, l2 = -1.28 -> max = -1.28, no gradient
    loss, grad, out = one_token_loss(0.5, 1.0, loss="dapo")
    assert loss == pytest.approx(-1.28)
    assert grad == 0.0
    assert out.metrics["policy/clip_frac"] == 1.0


def test_negative_advantage_ratio_below_low_clip_is_held_at_point_eight():
    # delta = -0.5 -> r = 0.6065 < 0.8; A = -1: l1 = 0.6065, l2 = 0.8 -> max = 0.8, no gradient
    loss, grad, _ = one_token_loss(-0.5, -1.0, loss="dapo")
    assert loss == pytest.approx(0.8)
    assert grad == 0.0


def test_dual_clip_caps_negative_advantage_loss_at_c():
    # delta = ln 20 -> r = 20; A = -1: l1 = 20, l2 = 1.28, cl1 = 20; l3 = -A c = 10 -> min(10, 20) = 10
    loss, grad, out = one_token_loss(math.log(20.0), -1.0, loss="dapo")
    assert loss == pytest.approx(10.0)
    assert grad == 0.0
    assert out.metrics["policy/dual_clip_frac"] == 1.0
    loss_off, _, _ = one_token_loss(math.log(20.0), -1.0, loss="dapo", dual_clip=None)
    assert loss_off == pytest.approx(20.0)


def test_fipo_weights_scale_each_tokens_advantage():
    # decay_rate 1 (gamma 0.5), delta = [0, 0.1], A = 1, high-only clip 0.2
    # FKL = [0 + 0.5 * 0.1, 0.1] = [0.05, 0.1] -> f = [e^0.05, e^0.1] = [1.05127, 1.10517]
    # loss_t = -f r = [-1.05127 * 1, -1.10517 * 1.10517] = [-1.05127, -1.22140]; token-mean = -1.13634
    # grad_t = loss_t / 2 = [-0.52564, -0.61070]
    log_prob = torch.tensor([[0.0, 0.1]], dtype=torch.float64, requires_grad=True)
    out = policy_loss(log_prob, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1.0]),
                      torch.ones(1, 2), FIPOConfig(decay_rate=1.0))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-(math.exp(0.05) + math.exp(0.2)) / 2)
    torch.testing.assert_close(out.weights, t([math.exp(0.05), math.exp(0.1)]))
    torch.testing.assert_close(log_prob.grad, t([-math.exp(0.05) / 2, -math.exp(0.2) / 2]))


def test_sequence_with_two_dual_clipped_tokens_is_dropped():
    # A = -1 for both sequences; seq 0 has two tokens with r = 20 (> c = 10 bound), seq 1 has one
    # -> seq 0 leaves the loss (count 2 > 1); seq 1 stays. Loss = token-mean over seq 1's 2 tokens:
    # seq 1: token r=20 -> min(10, 20) = 10; token r=1 -> max(1, 1) = 1 (weight: FKL excludes the r=20 token)
    big = math.log(20.0)
    log_prob = t([big, big], [big, 0.0])
    out = policy_loss(log_prob, torch.zeros(2, 2, dtype=torch.float64), torch.tensor([-1.0, -1.0]),
                      torch.ones(2, 2), FIPOConfig(decay_rate=1.0))
    assert out.token_mask.tolist() == [[False, False], [True, True]]
    assert out.metrics["policy/dropped_seq_frac"] == 0.5
    # seq 1 weights: token 1 FKL = 0 -> f = 1; token 0: delta > log c so M = 0, FKL = 0.5 * 0 = 0 -> f = 1
    assert out.loss.item() == pytest.approx((10.0 + 1.0) / 2)
    dapo = policy_loss(log_prob, torch.zeros(2, 2, dtype=torch.float64), torch.tensor([-1.0, -1.0]),
                       torch.ones(2, 2), FIPOConfig(loss="dapo"))
    assert dapo.token_mask.all()  # the baseline keeps every sequence unless the config asks


def test_grpo_uses_symmetric_clip_and_sequence_mean():
    # seq 0: 1 token, r = 1.25, A = 1 -> clip at 1 + 0.2 (not 1.28): loss -1.2
    # seq 1: 3 tokens, r = 1, A = -1 -> loss +1 each -> sequence mean 1
    # grpo: mean of sequence means = (-1.2 + 1) / 2 = -0.1; dapo token-mean: (-1.25 + 3) / 4 = 0.4375
    log_prob = t([math.log(1.25), 0, 0], [0, 0, 0])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    args = (log_prob, torch.zeros(2, 3, dtype=torch.float64), torch.tensor([1.0, -1.0]), mask)
    assert policy_loss(*args, FIPOConfig(loss="grpo")).loss.item() == pytest.approx(-0.1)
    assert policy_loss(*args, FIPOConfig(loss="dapo")).loss.item() == pytest.approx(0.4375)


# ---------------------------------------------------------------- properties


@st.composite
def batches(draw, max_len=300):
    batch = draw(st.integers(1, 4))
    length = draw(st.integers(1, max_len))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    log_ratio = torch.randn(batch, length, generator=gen, dtype=torch.float64) * draw(st.sampled_from([0.01, 1.0, 30.0]))
    mask = torch.rand(batch, length, generator=gen) > draw(st.sampled_from([0.0, 0.3, 0.9]))
    if draw(st.booleans()):
        mask[draw(st.integers(0, batch - 1))] = False  # an all-masked row
    return log_ratio, mask


@settings(max_examples=150, deadline=None)
@given(
    data=batches(),
    decay_rate=st.floats(0.5, 300.0),
    dual_clip=st.sampled_from([None, 10.0, 1.5]),
    chunk_size=st.sampled_from([2, 3, 7, 64, 128]),
)
def test_future_kl_matches_the_reverse_loop(data, decay_rate, dual_clip, chunk_size):
    log_ratio, mask = data
    expected = naive_future_kl(log_ratio, mask, decay_rate, dual_clip)
    exact = future_kl(log_ratio, mask, decay_rate=decay_rate, dual_clip=dual_clip, chunk_size=chunk_size)
    assert exact.dtype == torch.float64
    torch.testing.assert_close(exact, expected, rtol=1e-9, atol=1e-9)
    single = future_kl(log_ratio.float(), mask, decay_rate=decay_rate, dual_clip=dual_clip, chunk_size=chunk_size)
    assert single.dtype == torch.float32
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(single.double(), expected, rtol=0, atol=2e-6 * scale)


@settings(max_examples=40, deadline=None)
@given(data=batches(), decay_rate=st.sampled_from([1.0, 32.0, 256.0]))
def test_half_precision_input_accumulates_in_float32(data, decay_rate):
    log_ratio, mask = data
    for dtype in (torch.bfloat16, torch.float16):
        low = log_ratio.clamp(-20, 20).to(dtype)
        out = future_kl(low, mask, decay_rate=decay_rate)
        assert out.dtype == torch.float32
        expected = naive_future_kl(low.double(), mask, decay_rate)
        scale = max(1.0, expected.abs().max().item())
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-6 * scale)


def test_discounted_suffix_sum_equals_dense_matrix_on_long_input():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5000, generator=gen, dtype=torch.float64)
    gamma = 2 ** (-1 / 32)
    y = discounted_suffix_sum(x, gamma, chunk_size=16)  # three levels of recursion
    expected = naive_future_kl(x, torch.ones_like(x), 32.0, clamp=1e9)
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("decay_rate", [1.0, 8.0, 32.0, 256.0])
def test_future_kl_and_weights_are_finite_at_20480_tokens(decay_rate):
    length = 20480
    for value in (20.0, -20.0, 1e4):
        log_ratio = torch.full((2, length), value)
        mask = torch.ones(2, length, dtype=torch.bool)
        fkl = future_kl(log_ratio, mask, decay_rate=decay_rate)  # dual clip off: every token feeds
        assert torch.isfinite(fkl).all()
        bound = min(value, 20.0) / (1 - 2 ** (-1 / decay_rate))
        assert fkl[:, 0].abs().max().item() == pytest.approx(abs(bound), rel=1e-3)
        out = policy_loss(log_ratio.clone().requires_grad_(), torch.zeros(2, length), torch.tensor([1.0, -1.0]),
                          mask, FIPOConfig(decay_rate=decay_rate, weight_clip=None))
        assert math.isfinite(out.loss.item())
        assert all(math.isfinite(v) for v in out.metrics.values()), out.metrics


def random_batch(seed=0, batch=6, length=40, scale=0.3):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=gen) * 3
    new = old + scale * torch.randn(batch, length, generator=gen)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    adv = torch.randn(batch, generator=gen)
    return new, old, adv, mask


def test_on_policy_fipo_equals_dapo_in_value_and_gradient():
    _, old, adv, mask = random_batch()
    grads, losses = [], []
    for loss_name in ("fipo", "dapo"):
        log_prob = old.clone().requires_grad_()
        out = policy_loss(log_prob, old, adv, mask, FIPOConfig(loss=loss_name))
        out.loss.backward()
        assert torch.equal(out.weights, torch.ones_like(out.weights))  # delta == 0 -> FKL == 0 -> f == 1
        losses.append(out.loss.item())
        grads.append(log_prob.grad)
    assert losses[0] == losses[1]
    assert torch.equal(grads[0], grads[1])
    # and the gradient is the plain policy gradient: -A / N at every response token
    expected = torch.where(mask, -adv[:, None].expand_as(old) / mask.sum(), torch.zeros_like(old))
    torch.testing.assert_close(grads[0], expected)


@pytest.mark.parametrize("loss_name", ["fipo", "dapo", "grpo"])
def test_gradient_flows_through_the_ratio_only_and_not_at_masked_positions(loss_name):
    new, old, adv, mask = random_batch(seed=3, scale=0.4)
    log_prob = new.clone().requires_grad_()
    old_leaf = old.clone().requires_grad_()
    adv_leaf = adv.clone().requires_grad_()
    out = policy_loss(log_prob, old_leaf, adv_leaf, mask, FIPOConfig(loss=loss_name))
    out.loss.backward()
    assert old_leaf.grad is None and adv_leaf.grad is None  # constants of the update
    assert not out.weights.requires_grad
    assert (log_prob.grad[~mask] == 0).all()
    if loss_name == "grpo":
        return
    # analytic gradient with the weights held fixed: d/dlogp (-A~ r) = -A~ r where the PPO term is
    # unclipped, 0 where a clip is active
    ratio = torch.exp(new - old)
    weighted = adv[:, None] * out.weights
    unclipped = torch.where(weighted >= 0, ratio <= 1.28, ratio >= 0.8)
    unclipped &= ~((weighted < 0) & (ratio > 10.0))
    expected = torch.where(unclipped & out.token_mask, -weighted * ratio, torch.zeros_like(ratio)) / out.token_mask.sum()
    torch.testing.assert_close(log_prob.grad, expected)


def test_extreme_and_non_finite_inputs_give_finite_outputs():
    new, old, adv, mask = random_batch(seed=5)
    new = new.clone()
    new[:, ::3] = 1e4
    new[:, 1::3] = -1e4
    new[~mask] = float("nan")
    old = old.clone()
    old[~mask] = float("inf")
    adv_tokens = adv[:, None].expand_as(new).clone()
    adv_tokens[~mask] = float("nan")
    for loss_name in ("fipo", "dapo", "grpo"):
        log_prob = new.clone().requires_grad_()
        out = policy_loss(log_prob, old, adv_tokens, mask, FIPOConfig(loss=loss_name, weight_clip=None))
        out.loss.backward()
        assert math.isfinite(out.loss.item())
        assert torch.isfinite(log_prob.grad).all()
        assert torch.isfinite(out.future_kl).all() and torch.isfinite(out.weights).all()
        assert all(math.isfinite(v) for v in out.metrics.values())


def test_batch_without_kept_tokens_gives_zero_loss():
    new, old, adv, _ = random_batch()
    log_prob = new.clone().requires_grad_()
    out = policy_loss(log_prob, old, adv, torch.zeros_like(new, dtype=torch.bool), FIPOConfig())
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert torch.equal(log_prob.grad, torch.zeros_like(new))
    assert all(v == 0.0 for v in out.metrics.values())


@pytest.mark.parametrize("loss_name", ["fipo", "dapo", "grpo"])
def test_micro_batches_with_global_counts_match_the_whole_mini_batch(loss_name):
    new, old, adv, mask = random_batch(seed=7, batch=8, scale=0.2)
    config = FIPOConfig(loss=loss_name, dual_clip=None)  # no drops, so kept == response tokens
    whole = new.clone().requires_grad_()
    policy_loss(whole, old, adv, mask, config).loss.backward()
    split = new.clone().requires_grad_()
    for part in (slice(0, 3), slice(3, 8)):
        out = policy_loss(split[part], old[part], adv[part], mask[part], config,
                          num_tokens=int(mask.sum()), num_sequences=8)
        out.loss.backward()
    torch.testing.assert_close(split.grad, whole.grad)


def test_advantages_per_token_equal_per_sequence_broadcast():
    new, old, adv, mask = random_batch(seed=9)
    a = policy_loss(new, old, adv, mask, FIPOConfig())
    b = policy_loss(new, old, adv[:, None].expand_as(new), mask, FIPOConfig())
    assert a.loss.item() == pytest.approx(b.loss.item())


def test_metrics_report_weights_clips_and_kl():
    new, old, adv, mask = random_batch(seed=11, scale=0.5)
    out = policy_loss(new, old, adv, mask, FIPOConfig())
    m = out.metrics
    for key in ("fipo/weight_mean", "fipo/weight_min", "fipo/weight_max", "fipo/raw_weight_mean",
                "fipo/weight_clip_frac_upper", "fipo/weight_clip_frac_lower", "fipo/future_kl_mean",
                "policy/clip_frac", "policy/dual_clip_frac", "policy/dropped_seq_frac", "policy/approx_kl"):
        assert key in m
    assert 1.0 <= m["fipo/weight_min"] <= m["fipo/weight_mean"] <= m["fipo/weight_max"] <= 1.2 + 1e-6
    assert m["policy/approx_kl"] == pytest.approx(((old - new)[mask]).mean().item(), rel=1e-5)
    assert m["fipo/future_kl_mean"] == pytest.approx(out.future_kl[mask].mean().item(), rel=1e-5)
    assert 0.0 < m["policy/clip_frac"] < 1.0


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="same"):
        future_kl(torch.zeros(2, 3), torch.ones(2, 4), decay_rate=32)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3), FIPOConfig())


# ---------------------------------------------------------------- group advantages


def test_group_advantages_by_hand():
    # group [1, -1, -1, -1]: mean -0.5, unbiased std sqrt((1.5^2 + 3 * 0.5^2) / 3) = 1
    # -> [1.5, -0.5, -0.5, -0.5]; group [1, 1, 1, 1]: all equal -> 0
    adv = group_advantages(torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]), 4)
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0]), atol=1e-5, rtol=0)
    centred = group_advantages(torch.tensor([3.0, 1.0]), 2, normalize_std=False)
    torch.testing.assert_close(centred, torch.tensor([1.0, -1.0]))


def test_group_advantages_bad_input_is_named():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.ones(4), 3)
    with pytest.raises(ValueError, match="reward 2"):
        group_advantages(torch.tensor([1.0, 0.0, float("nan"), 1.0]), 2)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.ones(4), 1)


# ---------------------------------------------------------------- config


def test_defaults_are_the_official_fipo_32b_script():
    c = FIPOConfig()
    assert (c.loss, c.clip_low, c.clip_high, c.dual_clip) == ("fipo", 0.2, 0.28, 10.0)
    assert (c.decay_rate, c.weight_clip, c.weight_clip_high_only, c.safety_threshold) == (32.0, 0.2, True, 10.0)
    assert c.drop_dual_clipped_sequences is True and c.log_ratio_clamp == 20.0
    assert FIPOConfig(loss="dapo").drop_dual_clipped_sequences is False
    assert c.validate() is c


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(loss="ppo"), "loss"),
        (dict(clip_low=1.5), "clip_low"),
        (dict(clip_high=-0.1), "clip_high"),
        (dict(dual_clip=1.2), "dual_clip must exceed 1 \\+ clip_high"),
        (dict(decay_rate=0), "decay_rate"),
        (dict(decay_rate=float("inf")), "decay_rate"),
        (dict(weight_clip=1.0), "weight_clip"),
        (dict(weight_clip_high_only="yes"), "weight_clip_high_only"),
        (dict(safety_threshold=-1), "safety_threshold"),
        (dict(drop_dual_clipped_sequences=1), "drop_dual_clipped_sequences"),
        (dict(log_ratio_clamp=0), "log_ratio_clamp"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FIPOConfig(**kwargs).validate()
