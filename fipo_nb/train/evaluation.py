"""Evaluation: k samples per held-out problem, accuracy avg@k and pass@k, response lengths.

avg@k is the mean accuracy over all k x problems samples (the paper's AIME "avg@32"); pass@k
is the share of problems with at least one correct sample among their k.

Problems are sampled once each: DAPO's AIME-2024 file repeats every problem 32 times (verl
samples each row once), so k = 32 on it would cost 32x and compute pass@k over duplicates.
`unique_problems` keeps the first of identical (prompt, answer) rows.
"""

from __future__ import annotations

import warnings

import torch

from ..data import unique_problems
from ..rewards import score_responses
from ..rollout import decode_responses, generate
from .metrics import length_metrics


def evaluate(
    policy,
    problems,
    reward_fn,
    *,
    k: int,
    max_prompt_length: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int | None = None,
    backend: str = "compact",
    seed: int = 0,
    reward_errors: str = "raise",
    error_reward: float = -1.0,
    pool=None,
) -> dict[str, float]:
    """Sample k responses per problem and score them; returns "eval/..." metrics.

    reward_errors / error_reward: what a failing reward function does, as TrainConfig.reward_errors
    ("incorrect" counts the failures in eval/reward_errors); pool: a rewards.workers.RewardPool to score
    in (None: this process). Repeated problems are sampled once
    (`unique_problems`; `eval/duplicates` counts the rows left out). Runs under its own RNG seed,
    restoring the caller's afterwards, so evaluating in the middle of training does not change
    what training samples next.
    """
    if not problems:
        raise ValueError("evaluate: no problems")
    given = len(problems)
    problems = unique_problems(problems)
    with torch.random.fork_rng():  # CPU and every CUDA device: manual_seed reseeds them all
        torch.manual_seed(seed)
        rollout = generate(
            policy.model, policy.tokenizer, [p.prompt for p in problems], n=k, max_prompt_length=max_prompt_length,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, batch_size=batch_size,
            backend=backend,
        )
    rows = [p for p in problems for _ in range(k)]
    scored = score_responses(reward_fn, rollout.prompt_texts, decode_responses(policy.tokenizer, rollout), rows,
                             on_error=reward_errors, error_reward=error_reward,
                             truncated=[f == "length" for f in rollout.finish_reasons], pool=pool)
    errors = sum(s.error is not None for s in scored)
    if errors:
        first = next(s.error for s in scored if s.error is not None)
        warnings.warn(f"evaluation: the reward function failed on {errors} response(s), scored {error_reward:g} "
                      f"because reward_errors='incorrect' (first: {first})", stacklevel=2)
    correct = torch.tensor([s.correct for s in scored], dtype=torch.float64).view(len(problems), k)  # [P, k]
    return {
        f"eval/avg@{k}": correct.mean().item(),
        f"eval/pass@{k}": (correct.max(dim=1).values > 0).double().mean().item(),
        "eval/reward_mean": sum(s.reward for s in scored) / len(scored),
        "eval/truncated_frac": sum(r == "length" for r in rollout.finish_reasons) / len(rollout),
        "eval/problems": float(len(problems)),
        "eval/duplicates": float(given - len(problems)),
        "eval/reward_errors": float(errors),
        **length_metrics(rollout.response_lengths, "eval/length"),
    }
