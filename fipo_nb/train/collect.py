"""Stages 1-4 of a step: data -> rollout -> reward (overlong shaping and filtering) -> dynamic sampling.

One generation batch (`generate_batch`) draws the next problems, samples G responses each and
scores them; DAPO's overlong shaping adds its penalty to the rewards and overlong filtering marks
truncated responses to stay out of the loss, both here, at the reward. Without dynamic sampling a
step is one generation batch of `prompts_per_step` prompts. With it (DAPO), generation batches of
`gen_prompts_per_batch` prompts are drawn until `prompts_per_step` groups with differing accuracy
(or reward) are found, or `max_num_gen_batches` is reached, in which case the step trains on the
groups it has.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..core import informative_groups
from ..rewards import overlong_penalty, score_responses
from ..rollout import Rollout, concat_rollouts, decode_responses, generate


@dataclass
class Batch:
    """Sampled, scored rows, grouped: rows g*G .. g*G+G-1 share prompt g."""

    rollout: Rollout
    problems: list
    prompts: list[str]  # formatted prompt text per row
    responses: list[str]  # decoded response text per row
    scored: list  # RewardResult per row
    rewards: torch.Tensor  # [N] reward + overlong penalty
    penalty: torch.Tensor  # [N] the overlong penalty alone (<= 0)
    in_loss: torch.Tensor  # [N] bool: False for truncated responses under overlong filtering

    @property
    def loss_mask(self) -> torch.Tensor:
        """[N, R] the response tokens that enter the loss (overlong-filtered rows have none)."""
        return self.rollout.response_mask & self.in_loss[:, None]

    def select_groups(self, groups: list[int]) -> "Batch":
        group = self.rollout.group_size
        rows = [g * group + i for g in groups for i in range(group)]
        return Batch(
            rollout=self.rollout.select(rows), problems=[self.problems[r] for r in rows],
            prompts=[self.prompts[r] for r in rows], responses=[self.responses[r] for r in rows],
            scored=[self.scored[r] for r in rows], rewards=self.rewards[rows], penalty=self.penalty[rows],
            in_loss=self.in_loss[rows],
        )


def generate_batch(policy, problems, reward_fn, config: TrainConfig, *, pool=None) -> tuple[Batch, float, float]:
    """G responses per problem, scored, shaped and filtered; returns (batch, generate seconds, reward seconds).
    pool: a rewards.workers.RewardPool to score in (None: in this process)."""
    started = time.perf_counter()
    # 2. rollout
    rollout = generate(
        policy.model, policy.tokenizer, [p.prompt for p in problems], n=config.samples_per_prompt,
        max_prompt_length=config.max_prompt_length, max_new_tokens=config.max_response_length,
        temperature=config.temperature, top_p=config.top_p, top_k=config.top_k, batch_size=config.rollout_batch_size,
        backend=config.rollout_backend,
    )
    generated = time.perf_counter()
    # 3. reward, DAPO's overlong shaping (a penalty near the length limit) and overlong filtering
    rows = [p for p in problems for _ in range(config.samples_per_prompt)]
    prompts = rollout.prompt_texts
    responses = decode_responses(policy.tokenizer, rollout)
    truncated = [f == "length" for f in rollout.finish_reasons]  # ran out of tokens: no final answer
    scored = score_responses(reward_fn, prompts, responses, rows, on_error=config.reward_errors,
                             error_reward=config.reward_incorrect, truncated=truncated, pool=pool)
    rewards = torch.tensor([s.reward for s in scored], dtype=torch.float32)  # [N]
    penalty = torch.zeros_like(rewards)  # [N]
    if config.overlong_buffer:
        penalty = torch.tensor(overlong_penalty(rollout.response_lengths.tolist(), config.max_response_length,
                                                config.overlong_buffer, config.overlong_penalty))
    cut = torch.tensor(truncated)  # [N] no stop token
    in_loss = ~cut if config.overlong_filter else torch.ones_like(cut)  # [N]
    batch = Batch(rollout, rows, prompts, responses, scored, rewards + penalty, penalty, in_loss)
    return batch, generated - started, time.perf_counter() - generated


def sample_batch(policy, sampler, reward_fn, config: TrainConfig, *, seed: int, pad_id: int, pool=None):
    """The training batch of one step and its sampling metrics. `seed` seeds generation batch i as seed + i.
    pool: a rewards.workers.RewardPool that scores (None: this process).

    If anything fails (a reward function that raises, hangs past reward_timeout or crashes its worker,
    under reward_errors="raise"), the data order is put back as it was: the same step can be run
    again and draws the same prompts and samples.
    """
    state = sampler.state_dict()
    try:
        return _sample_batch(policy, sampler, reward_fn, config, seed=seed, pad_id=pad_id, pool=pool)
    except BaseException:
        sampler.load_state_dict(state)
        raise


def _sample_batch(policy, sampler, reward_fn, config: TrainConfig, *, seed: int, pad_id: int, pool=None):
    group = config.samples_per_prompt
    parts, generated = [], []
    kept_groups = dropped_groups = 0
    times = {"generate_s": 0.0, "reward_s": 0.0}
    while True:
        torch.manual_seed(seed + len(generated))  # reproducible whatever came before
        problems = sampler.next_batch()  # 1. data
        batch, generate_s, reward_s = generate_batch(policy, problems, reward_fn, config, pool=pool)  # 2-3
        times["generate_s"] += generate_s
        times["reward_s"] += reward_s
        generated.append(batch)
        groups = list(range(len(batch.problems) // group))
        if config.dynamic_sampling:  # 4. keep the groups whose samples differ
            values = torch.tensor([float(s.correct) for s in batch.scored]) if config.filter_metric == "accuracy" \
                else batch.rewards
            informative = informative_groups(values, group).tolist()
            dropped_groups += len(informative) - sum(informative)
            groups = [g for g in groups if informative[g]][: config.prompts_per_step - kept_groups]
        if groups:
            kept_groups += len(groups)
            parts.append(batch.select_groups(groups))
        if not config.dynamic_sampling or kept_groups >= config.prompts_per_step \
                or len(generated) >= config.max_num_gen_batches:
            break
    incomplete = config.dynamic_sampling and kept_groups < config.prompts_per_step
    if not parts:  # nothing informative at all: the last batch as it is (all advantages 0)
        last = generated[-1]
        parts = [last.select_groups(list(range(min(config.prompts_per_step, len(last.problems) // group))))]
    batch = Batch(
        rollout=concat_rollouts([p.rollout for p in parts], pad_id),
        problems=[x for p in parts for x in p.problems], prompts=[x for p in parts for x in p.prompts],
        responses=[x for p in parts for x in p.responses], scored=[x for p in parts for x in p.scored],
        rewards=torch.cat([p.rewards for p in parts]), penalty=torch.cat([p.penalty for p in parts]),
        in_loss=torch.cat([p.in_loss for p in parts]),
    )
    truncated_prompts = sum(b.rollout.prompts_truncated for b in generated)
    every = [s for b in generated for s in b.scored]
    errors = [s.error for s in every if s.error is not None]
    metrics = {
        "reward/errors": float(len(errors)),
        "dynamic_sampling/gen_batches": float(len(generated)),
        "dynamic_sampling/kept_groups": float(kept_groups),
        "dynamic_sampling/dropped_groups": float(dropped_groups),
        "dynamic_sampling/incomplete": float(incomplete),
        "accuracy/generated_mean": sum(s.correct for s in every) / len(every),
        "overlong/penalty_mean": batch.penalty.mean().item(),
        "prompt/truncated": float(truncated_prompts),
        "overlong/filtered_frac": (~batch.in_loss).float().mean().item(),
    }
    if incomplete:
        warnings.warn(f"{kept_groups} informative group(s) after {len(generated)} generation batches, fewer than "
                      f"prompts_per_step={config.prompts_per_step}: training on what there is", stacklevel=3)
    if errors:
        warnings.warn(f"{errors[0]}; {len(errors)} of {len(every)} response(s) scored as incorrect "
                      f"({config.reward_incorrect:g}) because reward_errors='incorrect'", stacklevel=3)
    if truncated_prompts:
        warnings.warn(f"{truncated_prompts} prompt(s) longer than max_prompt_length={config.max_prompt_length} "
                      "were cut on the left", stacklevel=3)
    return batch, metrics, times
