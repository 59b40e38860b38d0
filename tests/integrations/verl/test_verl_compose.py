"""Every generated launch composes with verl's own Hydra config and passes its validation."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import verl
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import omega_conf_to_dataclass, validate_config

from fipo_nb.config import FIPOConfig
from fipo_nb.integrations.verl import launch, write_launch
from fipo_nb.presets import apply_overrides, get_preset

CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


@pytest.fixture(scope="module")
def hydra():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        yield


@pytest.fixture(scope="module")
def qwen32b_folder(tmp_path_factory):
    """Qwen2.5-32B's config.json and the Qwen tokenizer, no weights: what verl's HFModelConfig reads when the
    critic of paper-ppo-32b is validated (no hub here)."""
    from transformers import Qwen2Config

    from fipo_nb.models import qwen_tokenizer

    folder = tmp_path_factory.mktemp("qwen2.5-32b")
    Qwen2Config(architectures=["Qwen2ForCausalLM"], vocab_size=152064, hidden_size=5120, intermediate_size=27648,
                num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8, max_position_embeddings=131072,
                tie_word_embeddings=False).save_pretrained(folder)
    qwen_tokenizer().save_pretrained(folder)
    return folder


def composed(overrides):
    started = time.perf_counter()
    cfg = compose(config_name="ppo_trainer", overrides=list(overrides))
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    print(f"composed and validated {len(overrides)} overrides in {time.perf_counter() - started:.2f} s")
    return cfg


def test_paper_fipo_32b_composes_with_the_official_numbers(hydra, tmp_path):
    cfg = composed(launch(get_preset("paper-fipo-32b"), out=tmp_path).overrides)
    actor, rollout, data = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout, cfg.data
    assert (data.train_batch_size, rollout.n, actor.ppo_mini_batch_size) == (512, 16, 64)  # 8 updates per rollout
    assert (data.max_prompt_length, data.max_response_length, data.gen_batch_size) == (2048, 20480, 2048)
    assert (actor.optim.lr, actor.optim.lr_warmup_steps, actor.optim.weight_decay, actor.grad_clip) == (1e-6, 10, 0.1, 1.0)
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (0.2, 0.28, 10.0)
    assert actor.loss_agg_mode == "token-mean" and actor.entropy_coeff == 0 and not actor.use_kl_loss
    assert (rollout.name, rollout.tensor_model_parallel_size, rollout.gpu_memory_utilization) == ("vllm", 4, 0.8)
    assert rollout.enable_chunked_prefill and rollout.max_num_batched_tokens == 22528
    assert (rollout.temperature, rollout.top_p, rollout.val_kwargs.top_p, rollout.val_kwargs.n) == (1.0, 1.0, 0.7, 32)
    assert actor.use_dynamic_bsz and actor.ppo_max_token_len_per_gpu == 22528 and actor.ulysses_sequence_parallel_size == 8
    assert actor.fsdp_config.param_offload and actor.fsdp_config.optimizer_offload
    assert cfg.actor_rollout_ref.model.enable_gradient_checkpointing and cfg.actor_rollout_ref.model.use_remove_padding
    assert cfg.actor_rollout_ref.model.external_lib == "fipo_nb.integrations.verl"
    groups = cfg.algorithm.filter_groups
    assert groups.enable and groups.metric == "acc" and groups.max_num_gen_batches == 10
    assert cfg.reward.reward_manager.name == "dapo"
    assert dict(cfg.reward.reward_kwargs.overlong_buffer_cfg) == {"enable": True, "len": 4096, "penalty_factor": 1.0,
                                                                  "log": False}
    assert cfg.reward.reward_kwargs.max_resp_len == 20480
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node, cfg.algorithm.adv_estimator) == (16, 8, "grpo")
    loss = omega_conf_to_dataclass(actor).policy_loss  # the typed FIPO fields, instantiated by verl
    assert loss.loss_mode == "fipo_nb" and loss.fipo_config(actor) == FIPOConfig()


def test_paper_dapo_32b_uses_verls_own_loss(hydra, tmp_path):
    cfg = composed(launch(get_preset("paper-dapo-32b"), out=tmp_path).overrides)
    actor = cfg.actor_rollout_ref.actor
    assert actor.policy_loss.loss_mode == "vanilla" and actor.ppo_mini_batch_size == 32  # 16 updates per rollout
    assert cfg.data.gen_batch_size == 1536 and (actor.clip_ratio_high, actor.clip_ratio_c) == (0.28, 10.0)


def test_paper_ppo_32b_has_gae_and_a_critic(hydra, tmp_path, qwen32b_folder):
    config = apply_overrides(get_preset("paper-ppo-32b"), [f"model={qwen32b_folder}"])
    cfg = composed(launch(config, out=tmp_path).overrides)
    assert cfg.algorithm.adv_estimator == "gae" and need_critic(cfg) and cfg.critic.optim.lr == 1e-5
    assert (cfg.algorithm.gamma, cfg.algorithm.lam) == (1.0, 1.0) and not cfg.algorithm.filter_groups.enable
    assert cfg.critic.model.path == str(qwen32b_folder) and cfg.critic.ulysses_sequence_parallel_size == 8
    # verl 0.9.1's critic engine reads its own fsdp section: the deprecated key alone leaves it at 1
    assert cfg.critic.fsdp.ulysses_sequence_parallel_size == 8
    from verl.utils.config import omega_conf_to_dataclass

    critic = omega_conf_to_dataclass(cfg.critic)
    assert critic.fsdp.ulysses_sequence_parallel_size == critic.ulysses_sequence_parallel_size == 8
    assert (cfg.critic.cliprange_value, cfg.trainer.critic_warmup) == (0.5, 0)  # value_clip, critic_warmup
    assert cfg.actor_rollout_ref.actor.clip_ratio_high == 0.2


def test_a_small_preset_composes_on_one_gpu(hydra, tmp_path):
    config = apply_overrides(get_preset("qlora-qwen2.5-0.5b"), ["mode=lora", "answer_mode=dapo",
                                                                "data=single-digit?size=64"])
    job = launch(config, out=tmp_path)
    write_launch(job)
    cfg = composed(job.overrides)
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node, cfg.actor_rollout_ref.model.lora_rank) == (1, 1, 32)
    assert cfg.data.train_files == str((tmp_path / "data" / "train.parquet").resolve())
    import pyarrow.parquet as pq

    rows = pq.read_table(cfg.data.train_files).to_pylist()
    assert len(rows) == 64 and rows[0]["data_source"] == "math_dapo" and rows[0]["prompt"][0]["role"] == "user"
    from verl.utils.reward_score import default_compute_score

    truth = rows[0]["reward_model"]["ground_truth"]
    assert default_compute_score("math_dapo", f"Answer: {truth}", truth)["score"] == 1.0  # verl's scorer reads it


def test_a_misspelt_override_fails_with_verls_error(hydra, tmp_path):
    job = launch(get_preset("paper-fipo-32b"), out=tmp_path, extra=["actor_rollout_ref.actor.ppo_mini_batchsize=64"])
    with pytest.raises(ConfigCompositionException, match="ppo_mini_batchsize"):
        compose(config_name="ppo_trainer", overrides=job.overrides)
    bad_field = launch(get_preset("paper-fipo-32b"), out=tmp_path,
                       extra=["+actor_rollout_ref.actor.policy_loss.decay_rte=16"]).overrides
    with pytest.raises(Exception, match="decay_rte"):  # composes (a new key), then the typed config refuses it
        composed(bad_field)


@pytest.mark.slow
def test_launch_sh_composes_through_verls_entry_point(tmp_path):
    """The written script itself, with `--cfg job`: verl.trainer.main_ppo composes and prints, without Ray."""
    job = launch(get_preset("paper-fipo-32b"), out=tmp_path)
    write_launch(job)
    script = (tmp_path / "launch.sh").read_text()
    command = shlex.split(script.split("\nfi\n", 1)[1].replace("\\\n", " "))  # after the verl check
    assert command[:3] == ["python3", "-m", "verl.trainer.main_ppo"] and command[3:-1] == job.overrides
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(tmp_path / "launch.sh"), "--cfg", "job"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loss_mode: fipo_nb" in done.stdout and "ppo_max_token_len_per_gpu: 22528" in done.stdout
