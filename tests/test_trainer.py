"""FIPOTrainer end to end on the cpu-smoke setting: real tiny model, real rewards, real updates."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from fipo_nb import FIPOConfig
from fipo_nb.models import load_policy
from fipo_nb.presets import apply_overrides, get_preset
from fipo_nb.train.metrics import merge_loss_metrics
from fipo_nb.trainer import FIPOTrainer

REQUIRED = [
    "step", "reward/mean", "accuracy/mean", "length/mean", "length/median", "length/q25", "length/q75",
    "length/min", "length/max", "fipo/weight_mean", "fipo/weight_max", "fipo/future_kl_mean", "policy/clip_frac",
    "policy/dual_clip_frac", "policy/dropped_seq_frac", "policy/approx_kl", "grad_norm", "lr", "time/generate_s",
    "time/logprob_s", "time/update_s", "time/step_s", "tokens_per_s",
]


def smoke(tmp_path, *overrides):
    return apply_overrides(get_preset("cpu-smoke"), [f"output_dir={tmp_path}", *overrides])


def test_two_cpu_smoke_steps_log_every_metric(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path))
    metrics = trainer.train(2, progress=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and [json.loads(x)["step"] for x in lines] == [1, 2]
    for row in map(json.loads, lines):
        missing = [k for k in REQUIRED if k not in row]
        assert not missing, missing
        assert all(math.isfinite(v) for v in row.values())
        assert row["update/count"] == 2  # 4 prompts, mini-batches of 2
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == "tiny-qwen2-char" and config["fipo"]["loss"] == "fipo"
    assert metrics[-1]["step"] == 2 and trainer.step_count == 2
    # the smoke task is one a random model sometimes gets right: some group has mixed rewards
    assert min(m["groups/all_equal_frac"] for m in metrics) < 1.0


def coin(prompt, response, sample):
    """A reward that splits random responses about half and half, so every group has signal."""
    return float(sum(map(ord, response)) % 2)


def test_first_mini_batch_is_on_policy_and_later_ones_are_reweighted(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path), reward_fn=coin)
    result = trainer.step()
    first = result.mini_batch == 0  # [N]
    mask = result.rollout.response_mask
    # old log-probs come from the training model itself: on the 1st update delta == 0 exactly
    assert torch.equal(result.weights[first][mask[first]], torch.ones(int(mask[first].sum())))
    assert (result.future_kl[first] == 0).all()
    # rewards vary inside the groups ...
    groups = result.rewards.view(-1, 8)
    assert (groups.max(1).values > groups.min(1).values).all()
    # ... so the 1st update moved the policy and the 2nd mini-batch sees Future-KL != 0
    later = ~first
    assert result.future_kl[later][mask[later]].abs().max() > 0
    assert result.weights[later][mask[later]].max() > 1.0


@pytest.mark.parametrize("loss", ["dapo", "grpo"])
def test_baselines_run_through_the_same_loop(tmp_path, loss):
    trainer = FIPOTrainer(smoke(tmp_path, f"fipo.loss={loss}"))
    result = trainer.step()
    assert (result.weights == 1).all()
    assert result.metrics["update/count"] == 2 and result.metrics["update/skipped"] == 0
    assert trainer.config.fipo.drop_dual_clipped_sequences is False


def test_micro_batching_does_not_change_the_gradients(tmp_path):
    grads = []  # per micro-batch size: the gradient each optimizer update applies
    for micro in (16, 5):
        trainer = FIPOTrainer(smoke(tmp_path / str(micro), f"micro_batch_size={micro}"))
        seen = []
        trainer.optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: seen.append(torch.cat([p.grad.flatten() for p in trainer.policy.trainable_parameters()]))
        )
        trainer.step()
        grads.append(seen)
    assert len(grads[0]) == len(grads[1]) == 2
    # num_tokens makes micro-batches sum to the mini-batch's token-mean. Only float32 rounding may differ: each
    # gradient element sums ~10^3 token terms in another order (and CPU kinds order their sums differently), so
    # the tolerance is relative to the gradient's scale, 1000 float32 epsilons of it (a wrong rescale is off by
    # whole percents)
    eps = torch.finfo(torch.float32).eps
    for whole, split in zip(*grads):
        torch.testing.assert_close(split, whole, rtol=0, atol=1000 * eps * whole.abs().max().item())
        assert (split - whole).norm() <= 1000 * eps * whole.norm()


def test_non_finite_loss_skips_the_update_and_keeps_the_weights(tmp_path):
    config = smoke(tmp_path)
    policy = load_policy(config.model, config.mode, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
                         device="cpu", seed=config.seed)
    trainer = FIPOTrainer(config, policy=policy)

    def poison(module, inputs, output):  # the rollout and old-log-prob passes are fine; training passes are NaN
        if torch.is_grad_enabled():
            return output * float("nan")
        return output

    handle = policy.model.get_output_embeddings().register_forward_hook(poison)
    before = [p.detach().clone() for p in policy.trainable_parameters()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = trainer.step()
    handle.remove()
    assert result.metrics["update/skipped"] == 2
    assert any("update skipped" in str(w.message) for w in caught)
    for old, new in zip(before, policy.trainable_parameters()):
        assert torch.equal(old, new)
    trainer.step()  # and training goes on afterwards
    assert any(not torch.equal(o, n) for o, n in zip(before, policy.trainable_parameters()))


def test_custom_reward_callable_and_problem_list(tmp_path):
    from fipo_nb.data import from_records

    problems = from_records([{"problem": f"Say {d}.", "answer": str(d)} for d in range(4)], instruction=None)
    seen = []

    def reward(prompt, response, sample):
        seen.append(sample.answer)
        return float(len(response) % 2)  # any callable (prompt, response, sample) -> float

    trainer = FIPOTrainer(smoke(tmp_path, "overlong_buffer=0", "reward_workers=null"),  # raw rewards, in-process
                          problems=problems, reward_fn=reward)
    result = trainer.step()
    assert len(seen) == 32 and set(seen) <= {"0", "1", "2", "3"}
    assert result.metrics["accuracy/mean"] == pytest.approx(float((result.rewards > 0).float().mean()))


def test_long_prompts_are_truncated_and_counted(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path, "max_prompt_length=20"))
    with pytest.warns(UserWarning, match="cut on the left"):
        result = trainer.step()
    assert result.metrics["prompt/truncated"] == 4 and result.rollout.prompt_length == 20


def test_merge_loss_metrics_weights_by_tokens():
    a = {"policy/tokens": 10.0, "policy/kept_tokens": 10.0, "policy/sequences": 1.0, "policy/clip_frac": 0.5,
         "fipo/weight_max": 1.1, "fipo/weight_min": 1.0, "policy/dropped_seq_frac": 0.0}
    b = {"policy/tokens": 30.0, "policy/kept_tokens": 0.0, "policy/sequences": 3.0, "policy/clip_frac": 0.1,
         "fipo/weight_max": 1.2, "fipo/weight_min": 0.9, "policy/dropped_seq_frac": 1.0}
    m = merge_loss_metrics([a, b])
    assert m["policy/clip_frac"] == pytest.approx((0.5 * 10 + 0.1 * 30) / 40)
    assert (m["fipo/weight_max"], m["fipo/weight_min"]) == (1.2, 0.9)
    assert m["policy/dropped_seq_frac"] == pytest.approx(0.75) and m["policy/tokens"] == 40


def test_the_trainer_is_part_of_the_public_api():
    import fipo_nb

    assert fipo_nb.FIPOTrainer is FIPOTrainer and fipo_nb.TrainConfig is type(get_preset("cpu-smoke"))


def test_scale_out_presets_say_what_they_need(tmp_path):
    config = apply_overrides(get_preset("paper-fipo-32b"), [f"output_dir={tmp_path}"])
    assert (config.prompts_per_step, config.samples_per_prompt, config.mini_batch_size) == (512, 16, 64)
    assert config.max_response_length == 20480 and config.lr == 1e-6 and config.fipo == FIPOConfig()
    with pytest.raises(ValueError, match="scale-out"):
        FIPOTrainer(config)


@pytest.mark.parametrize("mode", ["qlora", "lora", "full"])
def test_rollout_update_rollout_update_in_every_adapter_mode(tmp_path, mode):
    # qlora on CPU: bitsandbytes breaks after an eval-mode no-grad forward; the trainer never leaves train()
    trainer = FIPOTrainer(smoke(tmp_path, f"mode={mode}", "gradient_checkpointing=true"), reward_fn=coin)
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    for _ in range(2):
        result = trainer.step()
        assert result.metrics["update/skipped"] == 0 and math.isfinite(result.metrics["grad_norm"])
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.policy.trainable_parameters()))
    if mode == "qlora":
        assert any(type(m).__name__ == "Linear4bit" for m in trainer.policy.model.modules())


def test_a_failure_while_finishing_a_step_is_retried_without_losing_or_repeating_it(tmp_path, monkeypatch):
    import fipo_nb.analysis.traces

    trainer = FIPOTrainer(smoke(tmp_path, "lr_warmup_steps=4"))
    real = fipo_nb.analysis.traces.write_step
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(fipo_nb.analysis.traces, "write_step", flaky)
    with pytest.raises(OSError, match="disk full"):
        trainer.step()
    assert trainer.step_count == 0 and trainer.history == [] and trainer.step_in_progress is not None
    result = trainer.step()  # finishes the same step: no update runs twice
    assert result.step == 1 and trainer.step_count == 1 and [m["step"] for m in trainer.history] == [1]
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.config.lr * 1 / 4)  # warm-up moved once


def test_saving_the_same_step_twice_writes_once(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path, "save_every=1"))
    trainer.train(1, progress=False)  # saved by save_every, then train() asks again at its end
    manifest = tmp_path / "checkpoints" / "step-1" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    assert trainer.save() == manifest.parent and manifest.stat().st_mtime_ns == stamp


def test_old_log_probs_and_updates_split_rows_into_the_same_micro_batches(tmp_path):
    # 16 rows per update, micro-batches of 6: both passes must see 0-5, 6-11, 12-15 | 16-21, 22-27, 28-31
    trainer = FIPOTrainer(smoke(tmp_path, "micro_batch_size=6"), reward_fn=coin)
    seen = {False: [], True: []}  # grad enabled -> response ids of each micro-batch, in order
    score = trainer.micro_log_probs

    def recording(part):
        seen[torch.is_grad_enabled()].append(part.response_ids)
        return score(part)

    trainer.micro_log_probs = recording
    trainer.step()
    # the no-grad pass covers the 2nd mini-batch only: the 1st update's forward gives the 1st one's old log-probs
    assert [len(ids) for ids in seen[True]] == [6, 6, 4, 6, 6, 4]
    assert [len(ids) for ids in seen[False]] == [6, 6, 4]
    for old, new in zip(seen[False], seen[True][3:]):
        assert torch.equal(old, new)


@pytest.mark.parametrize("micro", [16, 6])
def test_the_first_updates_forward_gives_the_old_log_probs_a_no_grad_pass_gives(tmp_path, micro):
    from fipo_nb.train.step import log_probs

    trainer = FIPOTrainer(smoke(tmp_path, f"micro_batch_size={micro}"), reward_fn=coin)
    sampled = trainer.sample()
    every_row = log_probs(trainer, sampled.batch.rollout)  # [N, R] the full no-grad pass, before any update
    result = trainer.step(sampled)
    first = result.mini_batch == 0
    # a forward with grad computes what the no-grad one does (float32: a few epsilons of the scale at most)
    eps, scale = torch.finfo(torch.float32).eps, every_row.abs().max().item()
    assert first.sum() == 16
    torch.testing.assert_close(result.old_log_probs[first], every_row[first], rtol=0, atol=64 * eps * scale)
    assert torch.equal(result.old_log_probs[~first], every_row[~first])  # the 2nd mini-batch's: that pass itself
    assert (result.log_ratio[first] == 0).all()  # and the 1st update's log-ratio is exactly 0 by construction


def test_a_critic_warm_up_step_takes_every_old_log_prob_from_the_no_grad_pass(tmp_path):
    from fipo_nb.train.step import log_probs

    trainer = FIPOTrainer(smoke(tmp_path, "advantage_estimator=gae", "critic_warmup=2", "fipo.loss=dapo"),
                          reward_fn=coin)
    sampled = trainer.sample()
    every_row = log_probs(trainer, sampled.batch.rollout)
    result = trainer.step(sampled)  # step 1 < critic_warmup: the policy sits out, no policy forward with grad
    assert result.metrics["critic/warmup"] == 1.0
    assert torch.equal(result.old_log_probs, every_row)


def test_dropout_in_the_attention_modules_is_switched_off(tmp_path):
    from fipo_nb.models import tiny_model

    config = smoke(tmp_path)
    model, tokenizer = tiny_model(config.model)
    model = type(model)(type(model.config)(**{**model.config.to_dict(), "attention_dropout": 0.1}))  # built with it
    assert any(getattr(m, "attention_dropout", 0) == 0.1 for m in model.modules())  # copied into each layer
    with pytest.warns(UserWarning, match="attention_dropout"):
        policy = load_policy(model, "lora", tokenizer=tokenizer, lora_r=8, lora_alpha=16, device="cpu")
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in policy.model.modules())
    result = FIPOTrainer(config, policy=policy, reward_fn=coin).step()
    first = result.mini_batch == 0
    assert (result.log_ratio[first] == 0).all()  # in train() mode, exactly: no dropout noise
    assert (result.weights[first] == 1).all()


def test_a_policy_built_elsewhere_has_its_dropout_switched_off_too(tmp_path):
    from fipo_nb.models import Policy, tiny_model

    config = smoke(tmp_path)
    model, tokenizer = tiny_model(config.model)
    model = type(model)(type(model.config)(**{**model.config.to_dict(), "attention_dropout": 0.1}))
    with pytest.warns(UserWarning, match="attention_dropout"):
        trainer = FIPOTrainer(config, policy=Policy(model, tokenizer, "tiny", "full"), reward_fn=coin)
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in trainer.policy.model.modules())
    first = trainer.step()
    assert (first.log_ratio[first.mini_batch == 0] == 0).all()


def test_warm_up_starts_at_zero_as_verl(tmp_path):
    # verl: step k (1-based) trains at lr * (k - 1) / N; the first step changes no weight
    trainer = FIPOTrainer(smoke(tmp_path, "lr_warmup_steps=4", "lr=0.01"), reward_fn=coin)
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    first = trainer.step().metrics
    assert first["lr"] == 0.0 and first["update/count"] == 2 and first["grad_norm"] > 0
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.policy.trainable_parameters()))
    assert trainer.step().metrics["lr"] == pytest.approx(0.01 / 4)


def test_step_on_a_sampled_batch_equals_a_plain_step(tmp_path):
    plain = FIPOTrainer(smoke(tmp_path / "plain"), reward_fn=coin).step()
    trainer = FIPOTrainer(smoke(tmp_path / "split"), reward_fn=coin)
    sampled = trainer.sample()
    result = trainer.step(sampled)
    assert torch.equal(result.rollout.response_ids, plain.rollout.response_ids)
    assert torch.equal(result.weights, plain.weights)
    untimed = lambda m: {k: v for k, v in m.items() if not k.startswith("time/") and k != "tokens_per_s"}  # noqa: E731
    assert untimed(result.metrics) == untimed(plain.metrics)


def test_truncated_responses_are_counted_and_never_score_as_correct(tmp_path):
    trainer = FIPOTrainer(smoke(tmp_path, "max_response_length=6", "overlong_buffer=0"))  # most run out of tokens
    result = trainer.step()
    truncated = [reason == "length" for reason in result.rollout.finish_reasons]
    assert result.metrics["response/truncated"] == sum(truncated) > 0
    assert not any(correct for correct, cut in zip(result.correct, truncated) if cut)
    assert all(reward == -1.0 for reward, cut in zip(result.rewards.tolist(), truncated) if cut)


def test_a_run_whose_responses_mostly_run_out_of_tokens_says_so_once(tmp_path, capsys):
    from fipo_nb.train.runlog import truncation_note

    trainer = FIPOTrainer(smoke(tmp_path, "max_response_length=6", "overlong_buffer=0"))
    rows = trainer.train(1, progress=False, table=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:") and "ran out" in line]
    assert lines == [truncation_note(rows, 6)]
    assert "ran out of max_response_length=6 tokens" in lines[0] and "--set max_response_length=N" in lines[0]
    assert truncation_note([{"response/truncated_frac": 0.2}, {"response/truncated_frac": 0.25}], 6) is None
    assert truncation_note([{"response/truncated_frac": 0.2}, {"response/truncated_frac": 0.3}], 6) is not None


def test_steps_where_every_group_scored_alike_are_named():
    from fipo_nb.train.runlog import no_signal_note

    note = no_signal_note([{"step": 1, "groups/all_equal_frac": 1.0}, {"step": 2, "groups/all_equal_frac": 0.5},
                           {"step": 3, "groups/all_equal_frac": 1.0}])
    assert note.startswith("note: at step(s) 1, 3 every group's responses scored alike") and "dynamic_sampling" in note
    assert no_signal_note([{"step": 1, "groups/all_equal_frac": 0.75}]) is None


@pytest.mark.parametrize("micro", [16, 6])
def test_the_first_updates_gradient_is_the_objectives_computed_the_plain_way(tmp_path, micro):
    # every speed path of a step (packing, shared prompts, the first update's forward as its old log-probs, the
    # frozen head's gradient in its forward) against the objective computed the plain way: full logits of the
    # padded rows (naive_token_logprobs), a separate no-grad pass for the old log-probs, autograd for the rest
    from fipo_nb.core import group_advantages, policy_loss
    from fipo_nb.models.logprobs import naive_token_logprobs

    config = smoke(tmp_path, f"micro_batch_size={micro}", "grad_clip=0")
    trainer = FIPOTrainer(config, reward_fn=coin)
    sampled = trainer.sample()
    batch, rollout, model = sampled.batch, sampled.batch.rollout, trainer.policy.model
    params = trainer.policy.trainable_parameters()
    first = slice(0, config.mini_batch_size * config.samples_per_prompt)
    ids = torch.cat([rollout.prompt_ids, rollout.response_ids], dim=1)[first]
    attention = torch.cat([rollout.prompt_mask, rollout.response_mask], dim=1).long()[first]

    def plain():
        return naive_token_logprobs(model, ids, attention, rollout.prompt_ids.shape[1], temperature=config.temperature)

    with torch.no_grad():
        old = plain()
    mask = batch.loss_mask[first]
    out = policy_loss(plain(), old, group_advantages(batch.rewards, config.samples_per_prompt)[first], mask, config.fipo,
                      num_tokens=int(mask.sum()), num_sequences=int(mask.any(dim=1).sum()))
    expected = torch.autograd.grad(out.loss, params)
    expected = torch.cat([g.flatten() for g in expected])
    applied = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: applied.append(torch.cat([p.grad.flatten() for p in params])))
    trainer.step(sampled)
    eps = torch.finfo(torch.float32).eps  # float32 sums in other orders: ~1000 epsilons of the scale at most
    torch.testing.assert_close(applied[0], expected, rtol=0, atol=1000 * eps * expected.abs().max().item())
    assert expected.abs().max() > 0
