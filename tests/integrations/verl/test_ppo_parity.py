"""fipo_nb.ppo against verl 0.9.1's own functions on random ragged batches: GAE
(core_algos.compute_gae_advantage_return), the clipped value loss (core_algos.compute_value_loss, every
loss_agg_mode) and the critic metrics (metric_utils.compute_data_metrics), equal to float rounding."""

from __future__ import annotations

import pytest
import torch

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.metric_utils import compute_data_metrics  # noqa: E402

from fipo_nb.ppo import critic_metrics, gae, value_loss  # noqa: E402

SEEDS = range(5)
DTYPES = [torch.float64, torch.float32]


def batch(seed, dtype, rows=7, length=13, holes=False):
    """Rewards, values, new values and an int64 response mask: right-padded rows of lengths 1..length, one row
    of a single token, one of every token, one empty; holes=True masks a few tokens inside rows too (verl's
    observation tokens of multi-turn rollouts)."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(rows, length, generator=g, dtype=torch.float64).to(dtype)
    values = torch.randn(rows, length, generator=g, dtype=torch.float64).to(dtype)
    vpreds = (values + 0.3 * torch.randn(rows, length, generator=g, dtype=torch.float64)).to(dtype)
    lengths = torch.randint(1, length + 1, (rows,), generator=g)
    lengths[0], lengths[1], lengths[2] = 1, length, 0
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    if holes:
        mask = mask * (torch.rand(rows, length, generator=g) > 0.25).long()
    return rewards, values, vpreds, mask


def assert_rounding_equal(actual, expected, dtype, scale):
    """Equal to float rounding: float64 ~1e-12 relative, float32 a few eps times the values' scale."""
    eps = torch.finfo(dtype).eps
    tol = 64 * eps * float(scale) if dtype == torch.float32 else 1e-12 * max(float(scale), 1.0)
    assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, rtol=0, atol=tol, equal_nan=True)


@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_gae_equals_verls(seed, dtype, holes):
    rewards, values, _, mask = batch(seed, dtype, holes=holes)
    g = torch.Generator().manual_seed(1000 + seed)
    per_row = torch.rand(rewards.shape[0], generator=g, dtype=torch.float64).to(dtype)
    for mask_like in (mask, mask.to(dtype)):  # verl's trainer gives an int mask; a float one rounds otherwise
        for gamma, lam in [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0), (1.0, per_row)]:
            ours = gae(rewards, values, mask_like, gamma, lam)
            theirs = core_algos.compute_gae_advantage_return(rewards, values, mask_like, gamma, lam)  # lam [B]: rows
            for a, b in zip(ours, theirs):
                assert_rounding_equal(a, b, dtype, b.abs().max())
    ours = gae(rewards, values, mask, 0.99, per_row[:, None])  # [B, 1] too (verl would broadcast it to [B, B])
    assert_rounding_equal(ours[1], core_algos.compute_gae_advantage_return(rewards, values, mask, 0.99, per_row)[1],
                          dtype, ours[1].abs().max())


AGG = [
    ("token-mean", {}),
    ("token-mean", {"dp_size": 4, "batch_num_tokens": 200}),
    ("token-sum", {"dp_size": 2}),
    ("seq-mean-token-sum", {}),
    ("seq-mean-token-sum", {"dp_size": 2, "global_batch_size": 16}),
    ("seq-mean-token-sum-norm", {}),
    ("seq-mean-token-sum-norm", {"loss_scale_factor": 4096}),
    ("seq-mean-token-mean", {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_value_loss_equals_verls(seed, dtype):
    rewards, values, vpreds, mask = batch(seed, dtype)
    _, returns = core_algos.compute_gae_advantage_return(rewards, values, mask, 1.0, 1.0)  # VC-PPO's critic lambda
    for mask_like in (mask.bool(), mask, mask.to(dtype)):  # verl's critic passes a bool mask
        for mode, extra in AGG:
            for clip in (0.05, 0.5):
                mine = vpreds.clone().requires_grad_()
                theirs = vpreds.clone().requires_grad_()
                loss, clipfrac = value_loss(mine, returns, values, mask_like, clip, mode, **extra)
                ref_loss, ref_clipfrac = core_algos.compute_value_loss(theirs, returns, values, mask_like, clip,
                                                                      loss_agg_mode=mode, **extra)
                scale = ref_loss.abs().item() + 1.0
                assert_rounding_equal(loss, ref_loss, dtype, scale)
                assert_rounding_equal(clipfrac, ref_clipfrac, ref_clipfrac.dtype, 1.0)
                loss.backward()
                ref_loss.backward()
                assert_rounding_equal(mine.grad, theirs.grad, dtype, theirs.grad.abs().max() + 1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_critic_metrics_equal_verls_compute_data_metrics(seed, dtype):
    rewards, values, vpreds, mask = batch(seed, dtype)
    advantages, returns = core_algos.compute_gae_advantage_return(rewards, values, mask, 1.0, 0.95)
    rows, length = rewards.shape
    prompts = torch.ones(rows, 3, dtype=torch.long)
    data = DataProto.from_dict(tensors={
        "token_level_scores": rewards, "token_level_rewards": rewards, "advantages": advantages, "returns": returns,
        "values": values, "prompts": prompts, "responses": torch.ones(rows, length, dtype=torch.long),
        "response_mask": mask, "attention_mask": torch.cat([torch.ones_like(prompts), mask], dim=1),
    })
    theirs = compute_data_metrics(data, use_critic=True)
    loss, clipfrac = value_loss(vpreds, returns, values, mask.bool(), 0.2)
    ours = critic_metrics(values, returns, advantages, mask, vf_loss=loss, vf_clipfrac=clipfrac)
    assert ours["critic/vf_loss"] == loss.item() and ours["critic/vf_clipfrac"] == clipfrac.item()
    shared = {k for k in ours if k not in ("critic/vf_loss", "critic/vf_clipfrac")}
    assert shared <= set(theirs)
    for key in shared:
        assert ours[key] == pytest.approx(theirs[key], rel=0, abs=64 * torch.finfo(dtype).eps * (abs(theirs[key]) + 1))
