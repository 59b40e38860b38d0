"""fipo_nb.integrations.trl: FIPO's loss inside TRL's real GRPOTrainer, on a tiny random Qwen2 on the CPU."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from fipo_nb import FIPOConfig
from fipo_nb.core import policy_loss
from fipo_nb.models import tiny_checkpoint, tiny_model

PROMPTS = ["1 + 1 =", "2 + 3 =", "4 + 4 =", "5 + 1 ="]


@pytest.fixture(scope="module")
def trl():
    module = pytest.importorskip("trl", reason="TRL is not installed: pip install 'fipo_nb[trl]' (make test does)")
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY = True  # TRL pings the hub from each trainer; offline here
    return module


@pytest.fixture(scope="module")
def FIPOGRPOTrainer(trl):
    from fipo_nb.integrations.trl import FIPOGRPOTrainer

    return FIPOGRPOTrainer


def length_reward(completions, **kwargs):
    return [len(text) / 10 for text in completions]  # differs within a group: advantages are not all 0


def make_trainer(trl, cls, tmp_path, model=None, tokenizer=None, fipo_config=None, peft_config=None, **settings):
    from datasets import Dataset

    if model is None:
        model, tokenizer = tiny_model("tiny-qwen2", seed=0)
    options = dict(
        output_dir=str(tmp_path), bf16=False, use_cpu=True, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=6, gradient_accumulation_steps=1, max_steps=1, learning_rate=0.05, logging_steps=1,
        report_to="none", save_strategy="no", seed=0, epsilon_high=0.28,
    )
    options.update(settings)
    extra = {} if cls is trl.GRPOTrainer else {"fipo_config": fipo_config}
    if peft_config is not None:
        extra["peft_config"] = peft_config
    trainer = cls(model=model, reward_funcs=length_reward, args=trl.GRPOConfig(**options),
                  train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer, **extra)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = options["gradient_accumulation_steps"]  # set by train() otherwise
    return trainer


def micro_batch(lengths, advantages, seed, width=7, prompt=5):
    """A batch as TRL's _prepare_inputs hands it to the loss: left-padded prompts, right-padded completions."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    prompt_mask = torch.ones(len(lengths), prompt, dtype=torch.long)
    prompt_mask[0, :2] = 0  # a shorter, left-padded prompt
    completion_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()  # [B, T]
    return {
        "prompt_ids": torch.randint(0, 5000, (len(lengths), prompt), generator=gen),
        "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(0, 5000, (len(lengths), width), generator=gen),
        "completion_mask": completion_mask,
        "advantages": torch.tensor(advantages),
        "num_items_in_batch": completion_mask.sum(),
    }


def new_log_probs(trainer, batch):
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    return trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, attention,
                                                      batch["completion_ids"].size(1))[0]


def with_old_log_probs(trainer, batch, seed):
    """An off-policy batch: old log-probs = the model's own, moved by noise, one ratio e^3 = 20 > c."""
    with torch.no_grad():
        current = new_log_probs(trainer, batch)  # [B, T]
    noise = 0.3 * torch.randn(current.shape, generator=torch.Generator().manual_seed(seed))
    old = current + noise
    old[1, 0] = current[1, 0] - 3.0  # sample 1 has A < 0: this token meets the dual clip
    return {**batch, "old_per_token_logps": old}


def loss_and_grads(trainer, batch):
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    loss = trainer._compute_loss(trainer.model, batch)
    return loss.detach(), torch.autograd.grad(loss, params)


def assert_same(first, second, atol=1e-6):
    (loss_a, grads_a), (loss_b, grads_b) = first, second
    torch.testing.assert_close(loss_a, loss_b, atol=atol, rtol=1e-5)
    for grad_a, grad_b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(grad_a, grad_b, atol=atol, rtol=1e-4)


BATCH = dict(lengths=[7, 3, 5, 1, 7, 4], advantages=[1.0, -0.5, 0.8, -1.2, 0.3, -0.4], seed=0)


def test_fipo_nb_and_the_module_import_without_trl():
    code = (
        "import sys\n"
        "sys.modules['trl'] = None  # as if TRL were not installed\n"
        "import fipo_nb, fipo_nb.integrations.trl as integration\n"
        "try:\n"
        "    integration.FIPOGRPOTrainer\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ImportError:" in out.stdout and "pip install 'fipo_nb[trl]'" in out.stdout


@pytest.mark.parametrize("config", [FIPOConfig(), FIPOConfig(loss="dapo")], ids=["fipo", "dapo"])
def test_on_policy_loss_and_gradient_equal_trl_dapo(trl, FIPOGRPOTrainer, tmp_path, config):
    # no old log-probs: TRL uses the new ones, delta == 0, every weight is 1 and FIPO is DAPO
    reference = make_trainer(trl, trl.GRPOTrainer, tmp_path / "trl")
    ours = make_trainer(trl, FIPOGRPOTrainer, tmp_path / "fipo", fipo_config=config)
    batch = micro_batch(**BATCH)
    assert_same(loss_and_grads(ours, batch), loss_and_grads(reference, batch))
    assert ours._metrics["train"]["fipo/weight_max"] == [1.0]


def test_off_policy_dapo_equals_trl_dapo_with_its_dual_clip(trl, FIPOGRPOTrainer, tmp_path):
    # TRL's delta=c caps the ratio of every token at c, which is the dual clip for A < 0 and does
    # nothing for A > 0 (the clip-higher bound 1.28 comes first); so the two losses agree everywhere
    reference = make_trainer(trl, trl.GRPOTrainer, tmp_path / "trl", delta=10.0)
    ours = make_trainer(trl, FIPOGRPOTrainer, tmp_path / "fipo", fipo_config=FIPOConfig(loss="dapo"))
    batch = with_old_log_probs(reference, micro_batch(**BATCH), seed=1)
    assert_same(loss_and_grads(ours, batch), loss_and_grads(reference, batch))
    assert ours._metrics["train"]["policy/dual_clip_frac"][0] > 0  # the dual clip was really exercised


def test_off_policy_fipo_loss_is_core_policy_loss_on_trls_tensors(trl, FIPOGRPOTrainer, tmp_path):
    ours = make_trainer(trl, FIPOGRPOTrainer, tmp_path)
    batch = with_old_log_probs(ours, micro_batch(**BATCH), seed=1)
    got = ours._compute_loss(ours.model, batch)
    expected = policy_loss(new_log_probs(ours, batch), batch["old_per_token_logps"], batch["advantages"],
                           batch["completion_mask"], FIPOConfig(), num_tokens=int(batch["num_items_in_batch"]))
    torch.testing.assert_close(got, expected.loss)
    dapo = policy_loss(new_log_probs(ours, batch), batch["old_per_token_logps"], batch["advantages"],
                       batch["completion_mask"], FIPOConfig(loss="dapo"), num_tokens=int(batch["num_items_in_batch"]))
    assert abs(got.item() - dapo.loss.item()) > 1e-4  # the influence weights change the loss
    logged = ours._metrics["train"]
    assert logged["fipo/weight_max"] == [pytest.approx(expected.metrics["fipo/weight_max"])] and logged["entropy"]


def test_update_sizes_count_each_optimizer_update_of_a_generation(trl, FIPOGRPOTrainer, tmp_path):
    ours = make_trainer(trl, FIPOGRPOTrainer, tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                        steps_per_generation=4)
    # four micro-batches of 2 sequences with 3, 5, 2 and 7 response tokens; two updates of two each
    chunks = [micro_batch(lengths, [1.0, -1.0], seed) for seed, lengths in enumerate([[2, 1], [3, 2], [1, 1], [4, 3]])]
    ours._count_update_sizes(chunks)
    assert [c["fipo_update_tokens"] for c in chunks] == [8, 8, 9, 9]  # 3 + 5, 2 + 7
    assert [c["fipo_update_sequences"] for c in chunks] == [4, 4, 4, 4]


def test_micro_batches_of_an_update_sum_to_the_loss_of_the_whole_update(trl, FIPOGRPOTrainer, tmp_path):
    # exact token-mean over the update (3 + 9 = 12 tokens), where TRL's "dapo" would divide by the
    # generation batch's count x GA / S, the average update
    ours = make_trainer(trl, FIPOGRPOTrainer, tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                        steps_per_generation=2)
    first = with_old_log_probs(ours, micro_batch([2, 1], [1.0, -1.0], seed=3), seed=4)
    second = with_old_log_probs(ours, micro_batch([5, 4], [-0.5, 0.5], seed=5), seed=6)
    ours._count_update_sizes([first, second])
    params = [p for p in ours.model.parameters() if p.requires_grad]
    summed = ours._compute_loss(ours.model, first) + ours._compute_loss(ours.model, second)
    grads = torch.autograd.grad(summed, params)
    whole = {key: torch.cat([first[key], second[key]]) for key in
             ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "old_per_token_logps")}
    expected = policy_loss(new_log_probs(ours, whole), whole["old_per_token_logps"], whole["advantages"],
                           whole["completion_mask"], FIPOConfig(), num_tokens=12)
    torch.testing.assert_close(summed, expected.loss)
    for got, want in zip(grads, torch.autograd.grad(expected.loss, params), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(loss_type="grpo"), "loss_type='grpo'"),
        (dict(epsilon_high=0.4), "epsilon_high=0.4"),
        (dict(delta=5.0), "delta=5.0.*dual_clip"),
        (dict(importance_sampling_level="sequence"), "importance_sampling_level='sequence'"),
        (dict(entropy_coef=0.01), "entropy_coef"),
    ],
)
def test_grpo_config_fields_that_would_change_the_loss_are_refused(trl, FIPOGRPOTrainer, tmp_path, setting, message):
    args = trl.GRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none", **setting)
    with pytest.raises(ValueError, match=message):
        FIPOGRPOTrainer(model="unused: refused before loading", reward_funcs=length_reward, args=args)


@pytest.mark.slow
@pytest.mark.parametrize("updates", [dict(steps_per_generation=2), dict(num_iterations=2)],
                         ids=["steps_per_generation", "num_iterations"])
def test_weights_leave_one_from_the_second_update_of_a_generation(trl, FIPOGRPOTrainer, tmp_path, updates):
    trainer = make_trainer(trl, FIPOGRPOTrainer, tmp_path, max_steps=2, **updates)
    trainer.train()
    first, second = (row for row in trainer.state.log_history if "fipo/weight_max" in row)
    # the 1st update sees the policy that sampled (old log-probs from TRL's no-grad pass): ratio 1, weight 1
    assert first["policy/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert first["fipo/weight_max"] == pytest.approx(1.0, abs=1e-5)
    # the 2nd update of the same generation: Future-KL moves the weights into (1, 1.2]
    assert second["policy/approx_kl"] != 0.0
    assert 1.01 < second["fipo/weight_max"] <= 1.2 + 1e-6 and second["fipo/weight_mean"] > 1.0
    for batch in trainer._buffered_inputs:  # one micro-batch per update here: its own tokens
        assert batch["fipo_update_tokens"] == int(batch["completion_mask"].sum())


def test_one_lora_training_step_from_a_model_folder(trl, FIPOGRPOTrainer, tmp_path):
    from peft import LoraConfig

    folder = tiny_checkpoint("tiny-qwen2", 0)  # TRL loads it by path, as it would a hub id
    trainer = make_trainer(trl, FIPOGRPOTrainer, tmp_path, model=str(folder),
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    assert lora and all("lora_" in name for name in lora)
    trainer.train()
    row = next(row for row in trainer.state.log_history if "loss" in row)
    assert math.isfinite(row["loss"]) and row["policy/tokens"] > 0 and row["fipo/weight_mean"] == 1.0
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(params[n], before) for n, before in lora.items())  # the adapters learnt
    assert all(torch.equal(params[n], before) for n, before in frozen.items())  # the base did not move
