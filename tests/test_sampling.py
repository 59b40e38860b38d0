"""Dynamic sampling and overlong shaping (DAPO), on the cpu-smoke setting with real tiny models."""

from __future__ import annotations

import pytest
import torch

from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.rewards import RewardError, overlong_penalty
from fipo_nb.trainer import FIPOTrainer

TIMING = ("time/", "tokens_per_s")


def smoke(tmp_path, *overrides):
    # raw 1 / -1 rewards (cpu-smoke shapes them by length), scored in this process: the tests' reward functions
    # count their calls here
    return apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", "overlong_buffer=0",
                                                     "reward_workers=null", *overrides])


def coin(prompt, response, sample):
    return float(sum(map(ord, response)) % 2)


def even_answers_only(prompt, response, sample):
    """Informative only for problems with an even answer: odd-answer groups score 0 throughout."""
    return coin(prompt, response, sample) if int(sample.answer) % 2 == 0 else 0.0


def test_overlong_penalty_by_hand():
    # max 20, buffer 8: free up to 12 tokens, then -1/8 per token, -1 at 20 (factor 1), -0.5 at 20 (factor 0.5)
    assert overlong_penalty([5, 12, 13, 16, 20], 20, 8) == [0.0, 0.0, -0.125, -0.5, -1.0]
    assert overlong_penalty([20], 20, 8, factor=0.5) == [-0.5]
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty([1], 20, 0)


def test_dynamic_sampling_drops_uniform_groups_and_fills_the_batch(tmp_path):
    config = smoke(tmp_path, "dynamic_sampling=true", "filter_metric=reward", "max_num_gen_batches=6")
    trainer = FIPOTrainer(config, reward_fn=even_answers_only)
    result = trainer.step()
    m = result.metrics
    assert m["dynamic_sampling/kept_groups"] == 4 and m["dynamic_sampling/incomplete"] == 0
    assert m["dynamic_sampling/gen_batches"] >= 2 and m["dynamic_sampling/dropped_groups"] >= 1
    assert len(result.rollout) == 4 * 8
    groups = result.rewards.view(4, 8)
    assert (groups.max(1).values > groups.min(1).values).all()  # every kept group carries signal
    assert all(int(p.answer) % 2 == 0 for p in result.problems)


def test_dynamic_sampling_gives_up_after_max_batches_and_says_so(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path, "dynamic_sampling=true", "max_num_gen_batches=2"),
                          reward_fn=lambda prompt, response, sample: 1.0)
    with pytest.warns(UserWarning, match="training on what there is"):
        result = trainer.step()
    m = result.metrics
    assert (m["dynamic_sampling/gen_batches"], m["dynamic_sampling/kept_groups"]) == (2, 0)
    assert m["dynamic_sampling/dropped_groups"] == 8 and m["dynamic_sampling/incomplete"] == 1
    assert (result.advantages == 0).all() and m["update/skipped"] == 0


def test_generation_batches_of_their_own_size(tmp_path):
    config = smoke(tmp_path, "dynamic_sampling=true", "gen_prompts_per_batch=8")
    result = FIPOTrainer(config, reward_fn=coin).step()
    assert result.metrics["dynamic_sampling/gen_batches"] == 1  # 8 informative groups drawn, 4 kept
    assert result.metrics["dynamic_sampling/kept_groups"] == 4 and len(result.rollout) == 32


def test_overlong_shaping_and_filtering(tmp_path):
    config = smoke(tmp_path, "overlong_buffer=8", "overlong_filter=true")
    result = FIPOTrainer(config, reward_fn=lambda prompt, response, sample: 0.0).step()
    lengths = result.rollout.response_lengths
    expected = torch.tensor(overlong_penalty(lengths.tolist(), 24, 8))
    torch.testing.assert_close(result.rewards, expected)  # base reward 0 + the penalty
    truncated = torch.tensor([f == "length" for f in result.rollout.finish_reasons])
    assert truncated.any()
    assert result.metrics["overlong/filtered_frac"] == pytest.approx(truncated.float().mean().item())
    assert result.metrics["policy/tokens"] == int(lengths[~truncated].sum())  # truncated rows left out of the loss
    assert not result.in_loss[truncated].any() and result.in_loss[~truncated].all()
    assert (result.weights[truncated] == 1).all() and (result.future_kl[truncated] == 0).all()  # never computed


def test_small_generation_batches_without_signal_do_not_crash(tmp_path):
    config = smoke(tmp_path, "dynamic_sampling=true", "gen_prompts_per_batch=2", "max_num_gen_batches=2")
    with pytest.warns(UserWarning, match="training on what there is"):
        result = FIPOTrainer(config, reward_fn=lambda p, r, s: 0.0).step()
    assert len(result.rollout) == 2 * 8 and (result.advantages == 0).all()


def test_a_mini_batch_with_nothing_in_the_loss_takes_no_optimizer_step(tmp_path):
    config = smoke(tmp_path, "overlong_filter=true", "weight_decay=0.1", "trace_samples=4")
    trainer = FIPOTrainer(config, reward_fn=coin)
    eos = trainer.policy.tokenizer.eos_token_id

    def never_stop(module, inputs, logits):  # every response runs to the length limit
        logits = logits.clone()
        logits[..., eos] = -1e4
        return logits

    handle = trainer.policy.model.get_output_embeddings().register_forward_hook(never_stop)
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    result = trainer.step()
    handle.remove()
    assert result.metrics["response/truncated_frac"] == 1.0 and result.metrics["update/empty"] == 2
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.policy.trainable_parameters()))
    from fipo_nb.trace import load_traces

    traces = load_traces(tmp_path)
    assert len(traces) == 4 and not traces["in_loss"].any()  # traced as left out of the loss


class BrokenThenFixed:
    """coin, except that sample 5 of the first two rollouts it sees fails: it raises, then returns NaN."""

    def __init__(self):
        self.failures = [KeyError("no 'answer' here"), float("nan")]
        self.calls = 0

    def __call__(self, prompt, response, sample):
        self.calls += 1
        if self.failures and self.calls == 6:  # sample 5 of the rollout
            failure, self.calls = self.failures.pop(0), 0  # the next rollout counts from 0 again
            if isinstance(failure, Exception):
                raise failure
            return failure
        return coin(prompt, response, sample)


def test_a_failing_reward_stops_the_step_before_any_update_and_the_trainer_goes_on(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path / "a"), reward_fn=BrokenThenFixed())
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    with pytest.raises(RewardError, match=r"sample 5 \(id 'single-digit:\d+'\): KeyError"):
        trainer.step()
    with pytest.raises(RewardError, match=r"sample 5 \(id 'single-digit:\d+'\): ValueError: reward is nan"):
        trainer.step()
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.policy.trainable_parameters()))
    assert trainer.step_count == 0 and trainer.history == [] and trainer.optimizer.state == {}
    # the step runs again on the same prompts and samples, as if nothing had failed
    result = trainer.step()
    clean = FIPOTrainer(smoke(tmp_path / "b"), reward_fn=coin).step()
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith(TIMING)}  # noqa: E731
    assert strip(result.metrics) == strip(clean.metrics) and result.metrics["reward/errors"] == 0


def test_reward_errors_incorrect_scores_the_failures_warns_and_counts_them(tmp_path):
    def fails_on_even_rows(prompt, response, sample):
        fails_on_even_rows.calls += 1
        if fails_on_even_rows.calls % 2:
            raise RuntimeError("grader crashed")
        return coin(prompt, response, sample)

    fails_on_even_rows.calls = 0
    trainer = FIPOTrainer(smoke(tmp_path, "reward_errors=incorrect", "reward_incorrect=-0.5"),
                          reward_fn=fails_on_even_rows)
    with pytest.warns(UserWarning, match=r"sample 0 \(id .*RuntimeError: grader crashed; 16 of 32 response"):
        result = trainer.step()
    assert result.metrics["reward/errors"] == 16 and result.metrics["update/count"] == 2
    assert (result.rewards[0::2] == -0.5).all() and not any(result.correct[0::2])
