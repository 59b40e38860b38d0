"""The fipo_nb loss inside verl: driven through verl's own ppo_loss (verl/workers/utils/losses.py) over
verl's micro-batches, it equals fipo_nb.core.policy_loss on the whole mini-batch; on-policy it equals
verl's vanilla loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from fipo_nb.config import FIPOConfig
from fipo_nb.core import policy_loss
from fipo_nb.integrations.verl import actor_config
from verl_tiny_run import mini_batches, sequence_log_probs, verl_batch


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return Qwen2ForCausalLM(config).double()  # float64: sums over micro-batches compare to ~1e-12


def fields(seed: int, rows: int = 8, prompt: int = 6, response: int = 12) -> dict:
    """A padded verl batch: left-padded prompts, right-padded responses of several lengths (ids < 1000)."""
    g = torch.Generator().manual_seed(seed)
    pad = 1023
    prompt_len = torch.randint(2, prompt + 1, (rows,), generator=g)
    response_len = torch.randint(3, response + 1, (rows,), generator=g)
    prompts, responses = torch.full((rows, prompt), pad), torch.full((rows, response), pad)
    mask = torch.zeros(rows, response, dtype=torch.long)
    for i in range(rows):
        prompts[i, prompt - prompt_len[i]:] = torch.randint(0, 1000, (int(prompt_len[i]),), generator=g)
        responses[i, : response_len[i]] = torch.randint(0, 1000, (int(response_len[i]),), generator=g)
        mask[i, : response_len[i]] = 1
    attention = torch.cat([(torch.arange(prompt)[None] >= prompt - prompt_len[:, None]).long(), mask], dim=1)
    advantages = torch.randn(rows, 1, generator=g, dtype=torch.float64).expand(rows, response) * mask
    return {"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention, "position_ids": (attention.cumsum(1) - 1).clamp(min=0),
            "response_mask": mask, "advantages": advantages.contiguous()}


def padded_log_probs(model, batch):
    """[N, R] log-probs of the responses, from the packed log-probs as verl's engine gives them."""
    return no_padding_2_padding(sequence_log_probs(model, list(batch["input_ids"].unbind())), batch)


def through_verl(model, config, batch, mini_batch_size, max_token_len):
    """verl's actor update without the optimizer: per micro-batch ppo_loss then backward; the loss sum and grads."""
    model.zero_grad()
    total, metrics, micro_count = 0.0, [], 0
    for _, _, micro in mini_batches(batch, mini_batch_size, max_token_len):
        for data in micro:
            loss, info = ppo_loss(config, {"log_probs": sequence_log_probs(model, list(data["input_ids"].unbind()))},
                                  data)
            loss.backward()
            total += float(loss.detach())
            metrics.append(info)
            micro_count += 1
        break  # one mini-batch
    return total, [p.grad.clone() for p in model.parameters()], metrics, micro_count


def whole(model, fipo, batch):
    """fipo_nb.core.policy_loss on the whole mini-batch (the batch here is one mini-batch)."""
    model.zero_grad()
    mask = batch["response_mask"].bool()
    log_prob = padded_log_probs(model, batch)
    out = policy_loss(log_prob, batch["old_log_probs"], batch["advantages"], mask, fipo,
                      num_tokens=int(mask.sum()))  # verl's batch_num_tokens: every response token of the mini-batch
    out.loss.backward()
    return float(out.loss), [p.grad.clone() for p in model.parameters()], out


def off_policy(model, seed: int, shift: float = 0.0):
    """A batch whose old log-probs differ from the model's: as on the 2nd mini-batch of a rollout. `shift`
    lowers some old log-probs by that much, so those tokens' ratio is exp(shift) (past the dual clip c = 10)."""
    f = fields(seed)
    with torch.no_grad():
        now = padded_log_probs(model, verl_batch(f, torch.zeros(f["responses"].shape, dtype=torch.float64)))
    g = torch.Generator().manual_seed(seed + 1)
    old = now + 0.3 * torch.randn(now.shape, generator=g, dtype=torch.float64)
    if shift:
        old[:, 1:3] -= shift
    return verl_batch(f, (old * f["response_mask"]).detach())


def test_micro_batches_through_verls_ppo_loss_equal_the_whole_mini_batch(model):
    fipo = FIPOConfig()
    batch = off_policy(model, seed=1, shift=3.0)  # ratio e^3 ~ 20 > c: dual-clipped tokens, dropped sequences
    config = actor_config(fipo, ppo_mini_batch_size=8, use_dynamic_bsz=True)
    total, grads, metrics, micro_count = through_verl(model, config, batch, 8, max_token_len=40)
    expected, expected_grads, out = whole(model, fipo, batch)
    assert micro_count >= 3  # several micro-batches
    assert out.metrics["policy/dropped_seq_frac"] > 0  # the drop rule acted, and dropped tokens stay counted
    assert total == pytest.approx(expected, rel=1e-10, abs=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-12)
    names = set().union(*metrics)
    assert {"actor/pg_loss", "actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower",
            "actor/fipo/weight_mean", "actor/fipo/future_kl_mean", "actor/policy/dropped_seq_frac"} <= names


def test_without_drops_it_is_fipo_nbs_kept_token_mean(model):
    fipo = FIPOConfig()
    batch = off_policy(model, seed=2)  # small moves: no sequence is dropped, so both denominators agree
    config = actor_config(fipo, ppo_mini_batch_size=8, use_dynamic_bsz=True)
    total, _, _, _ = through_verl(model, config, batch, 8, max_token_len=40)
    mask = batch["response_mask"].bool()
    with torch.no_grad():
        out = policy_loss(padded_log_probs(model, batch), batch["old_log_probs"], batch["advantages"], mask, fipo)
    assert out.metrics["policy/dropped_seq_frac"] == 0
    assert total == pytest.approx(float(out.loss), rel=1e-10)


def test_grpo_mode_is_the_whole_mini_batchs_sequence_mean(model):
    fipo = FIPOConfig(loss="grpo")
    batch = off_policy(model, seed=3)
    config = actor_config(fipo, ppo_mini_batch_size=8, use_dynamic_bsz=True)
    total, _, _, _ = through_verl(model, config, batch, 8, max_token_len=40)
    mask = batch["response_mask"].bool()
    with torch.no_grad():
        out = policy_loss(padded_log_probs(model, batch), batch["old_log_probs"], batch["advantages"], mask, fipo)
    assert total == pytest.approx(float(out.loss), rel=1e-10)


@pytest.mark.parametrize("loss, on_policy", [("fipo", True), ("dapo", True), ("dapo", False)])
def test_equals_verls_vanilla_loss(model, loss, on_policy):
    """On-policy (the 1st mini-batch: old == current) FIPO's weights are all 1, so it is verl's vanilla
    dual-clip loss; the DAPO setting equals it off-policy too."""
    fipo = FIPOConfig(loss=loss)
    if on_policy:
        f = fields(4)
        with torch.no_grad():
            now = padded_log_probs(model, verl_batch(f, torch.zeros(f["responses"].shape, dtype=torch.float64)))
        batch = verl_batch(f, (now * f["response_mask"]).detach())
    else:
        batch = off_policy(model, seed=5, shift=3.0)
    ours = actor_config(fipo, ppo_mini_batch_size=8, use_dynamic_bsz=True)
    vanilla_loss = dataclasses.replace(ours.policy_loss, loss_mode="vanilla")
    vanilla = actor_config(fipo, ppo_mini_batch_size=8, use_dynamic_bsz=True, policy_loss=vanilla_loss)
    got, got_grads, got_metrics, _ = through_verl(model, ours, batch, 8, max_token_len=40)
    want, want_grads, want_metrics, _ = through_verl(model, vanilla, batch, 8, max_token_len=40)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-13)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-13)
    for ours_m, theirs_m in zip(got_metrics, want_metrics):
        for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
            assert ours_m[key].values == pytest.approx(theirs_m[key].values, abs=1e-12)


def test_unsupported_settings_are_named(model):
    batch = off_policy(model, seed=6)
    data = next(iter(mini_batches(batch, 8, 400)))[2][0]
    log_probs = {"log_probs": sequence_log_probs(model, list(data["input_ids"].unbind()))}
    wrong_mode = actor_config(FIPOConfig(), ppo_mini_batch_size=8, loss_agg_mode="seq-mean-token-sum")
    with pytest.raises(ValueError, match="loss_agg_mode='token-mean'"):
        ppo_loss(wrong_mode, log_probs, data)
    plain = actor_config(FIPOConfig(), ppo_mini_batch_size=8)
    from verl.workers.config import PolicyLossConfig

    no_settings = dataclasses.replace(plain, policy_loss=PolicyLossConfig(loss_mode="fipo_nb"))
    with pytest.raises(ValueError, match="FIPOPolicyLossConfig"):
        ppo_loss(no_settings, log_probs, data)


@pytest.mark.parametrize("fipo", [FIPOConfig(), FIPOConfig(loss="dapo"), FIPOConfig(dual_clip=None),
                                  FIPOConfig(clip_low=0.1, clip_high=0.3, dual_clip=3.0, decay_rate=64.0,
                                             weight_clip=None, weight_clip_high_only=False, safety_threshold=None,
                                             log_ratio_clamp=5.0)])
def test_the_loss_config_verl_builds_gives_back_the_same_fipoconfig(fipo):
    """FIPOPolicyLossConfig is derived from FIPOConfig's declarations: through actor_config (and a pickle, as
    Ray ships configs to the workers) every setting comes back."""
    import pickle

    from fipo_nb.integrations.verl import fipo_config_of

    config = pickle.loads(pickle.dumps(actor_config(fipo, ppo_mini_batch_size=8)))
    assert fipo_config_of(config) == fipo


def test_the_loss_config_has_fipoconfigs_fields_under_verls_names_with_their_defaults():
    from typing import Optional

    from verl.workers.config import PolicyLossConfig

    from fipo_nb.integrations.verl import FIPOPolicyLossConfig

    own = [f for f in dataclasses.fields(FIPOPolicyLossConfig) if f.name not in
           {g.name for g in dataclasses.fields(PolicyLossConfig)}]
    assert [(f.name, f.type, f.default) for f in own] == [
        ("fipo_loss", str, "fipo"), ("dual_clip", bool, True), ("decay_rate", float, 32.0),
        ("weight_clip", Optional[float], 0.2), ("weight_clip_high_only", bool, True),
        ("safety_threshold", Optional[float], 10.0), ("drop_dual_clipped_sequences", Optional[bool], None),
        ("log_ratio_clamp", float, 20.0), ("trace_dir", Optional[str], None), ("trace_samples", int, 4),
    ]
    assert all(f.metadata["doc"] for f in own)
