"""fipo_nb.train.update: one mini-batch's gradient over micro-batches, normalised as the official loss."""

from __future__ import annotations

import torch

from fipo_nb import FIPOConfig
from fipo_nb.core import policy_loss
from fipo_nb.models.logprobs import token_logprobs
from fipo_nb.models import load_policy
from fipo_nb.rollout import generate
from fipo_nb.train.update import accumulate_gradient, micro_batch_ranges

PROMPTS = [[{"role": "user", "content": "What is 1 + 2?"}], [{"role": "user", "content": "Name a prime."}]]



def assert_same_gradient(got, official):
    """Equal up to float32 summation order (micro-batches sum in another order, and CPU kinds round sums in
    the last bits): 1000 float32 epsilons of the gradient's scale, elementwise."""
    scale = float(official.abs().max())
    torch.testing.assert_close(got, official, rtol=0, atol=1000 * torch.finfo(torch.float32).eps * scale)

def test_micro_batch_ranges_never_cross_a_mini_batch():
    # 10 rows, mini-batches of 4, micro-batches of 3: 0-2 | 3 ; 4-6 | 7 ; 8-9
    assert micro_batch_ranges(10, 4, 3) == [[range(0, 3), range(3, 4)], [range(4, 7), range(7, 8)], [range(8, 10)]]
    assert micro_batch_ranges(4, 4, 8) == [[range(0, 4)]]


def _scored_rollout():
    policy = load_policy("tiny-qwen2-char", "full", device="cpu")
    torch.manual_seed(0)
    rollout = generate(policy.model, policy.tokenizer, PROMPTS, n=4, max_prompt_length=64, max_new_tokens=12)

    def log_probs(rows):
        part = rollout.select(rows)
        return token_logprobs(policy.model, part.input_ids(), part.attention_mask(), part.prompt_length)

    return policy, rollout, log_probs


def _flat_grad(params):
    return torch.cat([p.grad.flatten() for p in params])


def test_token_mean_divides_by_the_tokens_kept_after_the_drop_rule():
    policy, rollout, log_probs = _scored_rollout()
    params = policy.trainable_parameters()
    mask = rollout.response_mask  # [8, R]
    with torch.no_grad():
        current = log_probs(range(8))  # [8, R]
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.0, -1.0, 0.5, -0.5])
    # row 1 (A < 0): the policy moved up by 3 nats on two tokens, ratio e^3 ~ 20 > c = 10: both hit the
    # dual-clip bound, so the official drop rule removes the whole sequence from the loss
    old = current.clone()
    assert mask[1].sum() >= 2
    old[1, :2] -= 3.0
    config = FIPOConfig()

    whole = policy_loss(log_probs(range(8)), old, advantages, mask, config)  # num_tokens=None: kept tokens
    assert not whole.token_mask[1].any() and whole.token_mask.sum() < mask.sum()  # the drop rule fired
    whole.loss.backward()
    official = _flat_grad(params).clone()  # grad of sum_kept loss_t / kept, the official formula
    for p in params:
        p.grad = None
    policy_loss(log_probs(range(8)), old, advantages, mask, config, num_tokens=int(mask.sum())).loss.backward()
    all_tokens = _flat_grad(params).clone()  # what dividing by every response token would give
    assert not torch.allclose(all_tokens, official)

    # the same mini-batch in micro-batches of 3 rows (3 + 3 + 2)
    grad = accumulate_gradient(micro_batch_ranges(8, 8, 3)[0], log_probs, old, advantages, mask, mask, config, params)
    assert grad.finite and grad.tokens == int(mask.sum()) and grad.kept == int(whole.token_mask.sum())
    assert grad.in_loss.tolist() == whole.token_mask.any(dim=1).tolist()
    assert_same_gradient(_flat_grad(params), official)


def test_grpo_means_over_the_sequences_left_in_the_loss():
    policy, rollout, log_probs = _scored_rollout()
    params = policy.trainable_parameters()
    mask = rollout.response_mask.clone()
    mask[2] = False  # e.g. overlong-filtered: no token of row 2 is in the loss
    with torch.no_grad():
        old = log_probs(range(8)) - 0.1
    advantages = torch.linspace(-1, 1, 8)
    config = FIPOConfig(loss="grpo")
    policy_loss(log_probs(range(8)), old, advantages, mask, config).loss.backward()  # mean over 7 sequences
    official = _flat_grad(params).clone()
    grad = accumulate_gradient(micro_batch_ranges(8, 8, 3)[0], log_probs, old, advantages, mask,
                               rollout.response_mask, config, params)
    assert grad.in_loss.tolist() == [True, True, False, True, True, True, True, True]
    assert_same_gradient(_flat_grad(params), official)


def test_a_mini_batch_with_nothing_in_the_loss_leaves_no_gradient():
    policy, rollout, log_probs = _scored_rollout()
    params = policy.trainable_parameters()
    empty = torch.zeros_like(rollout.response_mask)
    zeros = torch.zeros(rollout.response_mask.shape)
    grad = accumulate_gradient([range(0, 4)], log_probs, zeros, torch.ones(8), empty, rollout.response_mask,
                               FIPOConfig(), params)
    assert grad.tokens == 0 and grad.kept == 0 and all(p.grad is None for p in params)
