"""PPO with a critic in the single-device trainer (advantage_estimator="gae"): the critic learns, shares the
policy's base without touching it, warms up alone, and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from fipo_nb.data import from_records
from fipo_nb.models.critic import Critic
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.trainer import FIPOTrainer

PPO = ["advantage_estimator=gae", "fipo.loss=dapo", "critic_lr=3e-3"]
TIMING = ("time/", "tokens_per_s")


def smoke(tmp_path, *overrides):
    return apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", *PPO, *overrides])


def rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(TIMING)} for line in lines]


def test_the_critic_learns_problems_with_a_fixed_reward_each(tmp_path):
    # each problem's reward is fixed by its prompt (+1 for "yes ...", -1 for "no ..."), whatever is written:
    # the value of every token is then learnable from the prompt, and the critic must learn it
    records = [{"problem": "yes yes yes" if d % 2 else "no no no no", "answer": str(d)} for d in range(8)]
    problems = from_records(records, instruction=None)

    def fixed(prompt, response, sample):
        return 1.0 if int(sample.answer) % 2 else -1.0

    config = smoke(tmp_path, "overlong_buffer=0", "critic_lr=1e-2", "value_clip=10", "critic_warmup=100")
    trainer = FIPOTrainer(config, problems=problems, reward_fn=fixed)
    history = [trainer.step().metrics for _ in range(5)]
    losses = [m["critic/vf_loss"] for m in history]
    explained = [m["critic/vf_explained_var"] for m in history]
    assert losses[-1] < 0.25 * losses[0], losses  # measured: 0.41 -> 0.007
    assert explained[0] < 0.2 and explained[-1] > 0.8, explained  # measured: 0.01 -> 0.99
    assert all(m["critic/warmup"] == 1.0 for m in history)  # critic_warmup: the policy never moved


def test_gae_metrics_use_verls_names_and_the_critic_leaves_the_policy_alone(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path))
    policy_names = [n for n, p in trainer.policy.model.named_parameters() if p.requires_grad]
    assert not any(".critic." in n for n in policy_names)  # the critic's adapter is frozen at rest
    critic_before = [p.detach().clone() for p in trainer.critic.parameters()]
    result = trainer.step()
    for key in ("critic/vf_loss", "critic/vf_clipfrac", "critic/vf_explained_var", "critic/values/mean",
                "critic/returns/mean", "critic/advantages/mean", "critic/advantages/max", "critic/advantages/min",
                "time/critic_s"):
        assert key in result.metrics, key
    assert [n for n, p in trainer.policy.model.named_parameters() if p.requires_grad] == policy_names
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, trainer.critic.parameters()))
    mask = result.rollout.response_mask
    assert result.values.shape == result.returns.shape == result.token_advantages.shape == mask.shape
    # gamma 1, one reward at the end: with lambda 1 the return of every token is the response's reward
    ends = result.returns.masked_fill(~mask, float("nan"))
    assert torch.allclose(ends.nanmean(dim=1), result.rewards, atol=1e-5)
    eps = torch.finfo(torch.float32).eps
    assert abs(result.token_advantages[mask].mean().item()) < 100 * eps  # whitened, and DAPO's weights are 1


def test_critic_warmup_trains_only_the_critic_until_its_step(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path, "critic_warmup=2"))
    policy_before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    first = trainer.step()  # verl: the actor updates once critic_warmup <= the step
    assert first.metrics["critic/warmup"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(policy_before, trainer.policy.trainable_parameters()))
    second = trainer.step()
    assert second.metrics["critic/warmup"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, trainer.policy.trainable_parameters()))


def test_future_kl_weights_compose_with_gae_advantages(tmp_path):
    result = FIPOTrainer(smoke(tmp_path, "fipo.loss=fipo")).step()
    later = result.mini_batch == 1
    mask = result.rollout.response_mask
    assert (result.weights[~later][mask[~later]] == 1).all()  # the first mini-batch sees the sampling policy
    assert (result.weights[later][mask[later]] != 1).any()  # then Future-KL re-weights GAE advantages


def test_resume_with_a_critic_is_exact(tmp_path):
    straight = FIPOTrainer(smoke(tmp_path / "straight"))
    straight.train(3, progress=False)
    split = FIPOTrainer(smoke(tmp_path / "split"))
    split.train(2, progress=False)
    folder = split.save()
    assert (folder / "critic.safetensors").is_file() and (folder / "critic_optimizer.pt").is_file()
    resumed = FIPOTrainer.resume(tmp_path / "split")
    resumed.train(1, progress=False)
    assert rows(tmp_path / "split") == rows(tmp_path / "straight")


def test_a_checkpoint_without_a_critic_does_not_resume_a_ppo_run(tmp_path):
    from fipo_nb.train.checkpoint import CheckpointError

    plain = FIPOTrainer(apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}"]))
    plain.train(1, progress=False)
    with pytest.raises(CheckpointError, match=r"critic.safetensors: missing; this run trains a critic"):
        FIPOTrainer.resume(tmp_path, config=smoke(tmp_path))


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_the_critic_starts_as_the_policys_base_model(tmp_path, mode):
    from fipo_nb.models import load_policy
    from fipo_nb.models.logprobs import _body_and_head

    policy = load_policy("tiny-qwen2-char", mode, lora_r=8, lora_alpha=16, device="cpu", seed=0)
    critic = Critic(policy, seed=0)
    ids = torch.randint(5, 60, (2, 6))
    mask = torch.ones_like(ids)
    body, _ = _body_and_head(policy.model)
    with torch.no_grad():
        policy_hidden = body(input_ids=ids, attention_mask=mask)[0]
        with critic.active():
            critic_hidden = _body_and_head(critic.model)[0](input_ids=ids, attention_mask=mask)[0]
    assert torch.equal(policy_hidden, critic_hidden)  # LoRA's B starts at 0; a copy is a copy


def test_micro_batches_narrower_than_the_rollout_take_their_own_columns_of_the_token_advantages(tmp_path):
    # one row per micro-batch: each is trimmed to its own response's length, narrower than the rollout's widest;
    # GAE's advantages are per token ([N, R]), and each micro-batch's loss takes its own columns of them
    wide = FIPOTrainer(smoke(tmp_path / "wide")).step()
    narrow = FIPOTrainer(smoke(tmp_path / "narrow", "micro_batch_size=1")).step()
    lengths = narrow.rollout.response_lengths
    assert int(lengths.min()) < narrow.rollout.response_ids.shape[1]  # some micro-batch is narrower
    assert torch.equal(narrow.rollout.response_ids, wide.rollout.response_ids)  # the same samples
    scale = float(wide.token_advantages.abs().max())
    assert torch.allclose(narrow.token_advantages, wide.token_advantages, rtol=0,
                          atol=1000 * torch.finfo(torch.float32).eps * scale)
    assert narrow.metrics["critic/vf_loss"] == pytest.approx(wide.metrics["critic/vf_loss"], rel=1e-3)
