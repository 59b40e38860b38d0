"""TrainConfig -> verl 0.9.1 Hydra overrides, field by field: the table `FIELDS` behind `fipo-nb launch verl`.

Each entry takes the mapping context and returns overrides, or raises LaunchError naming the field when verl cannot
express its value; entries for fields without meaning under verl add a note that launch.sh lists. Imports no verl.
"""

from __future__ import annotations

import math
from pathlib import Path

from ...config import TrainConfig

PLUGIN = "fipo_nb.integrations.verl"
POLICY_LOSS_TARGET = f"{PLUGIN}.FIPOPolicyLossConfig"


class LaunchError(ValueError):
    """A TrainConfig field (or value) the verl launch cannot express; the message names it."""


def _value(value) -> str:
    """A Hydra override value: booleans and None in YAML spelling, strings quoted when they need it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    text = str(value)
    if text and all(c.isalnum() or c in "_-./:~+@" for c in text) and text.lower() not in ("true", "false", "null"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Context:
    """What several fields share while mapping one config."""

    def __init__(self, config: TrainConfig, nodes: int, gpus: int, out: Path):
        self.c, self.nodes, self.gpus, self.out = config, nodes, gpus, out
        self.tokens_per_gpu = config.micro_batch_size * (config.max_prompt_length + config.max_response_length)
        self.gae = config.advantage_estimator == "gae"
        self.launch = None  # the Launch being built


def _fail(name: str, why: str):
    raise LaunchError(f"TrainConfig.{name}: {why}")


def _na(name: str, why: str):
    def handle(x: _Context):
        x.launch.notes.append(f"{name}={getattr(x.c, name)!r}: {why}")
        return []
    return handle


def _parquet_columns(path: Path, field: str) -> set[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return set(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        _fail(field, f"{path} is not a readable parquet file: {exc}")


def _is_verl_parquet(path: Path, field: str) -> bool:
    return {"prompt", "reward_model"} <= _parquet_columns(path, field)


def _has_repeats(path: Path, field: str) -> bool:
    """True when a parquet file holds the same prompt twice (eval_k samples each distinct problem)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = _parquet_columns(path, field)
    column = "prompt" if "prompt" in names else next((n for n in names if n.lower() in ("problem", "question")), None)
    if column is None:
        return False
    try:
        values = [repr(v) for v in pq.read_table(path, columns=[column]).column(column).to_pylist()]
    except (pa.ArrowException, OSError) as exc:
        _fail(field, f"{path}: column {column!r} cannot be read: {exc}")
    return len(set(values)) < len(values)


def _data(which: str):
    def handle(x: _Context):
        c = x.c
        source = c.data if which == "train" else c.eval_data
        key = "train_files" if which == "train" else "val_files"
        limit = c.data_limit if which == "train" else c.eval_limit
        limit_key = "train_max_samples" if which == "train" else "val_max_samples"
        if source is None:  # no evaluation: verl still reads a validation file, the training one
            return [f"data.val_files={_value(x.launch_train_file)}", "data.val_max_samples=1",
                    "trainer.val_before_train=false", "trainer.test_freq=-1"]
        path, field = Path(source), "data" if which == "train" else "eval_data"
        repeats = which == "val" and path.suffix == ".parquet" and path.exists() and _has_repeats(path, field)
        if path.suffix == ".parquet" and (not path.exists() or _is_verl_parquet(path, field)) and not repeats:
            target = str(path.resolve()) if path.exists() else source  # not here: a path on the cluster
            if which == "val" and not path.exists() and c.eval_k > 1:
                x.launch.warnings.append(
                    f"eval_data {source} is not here to check: verl samples eval_k={c.eval_k} responses per *row*; "
                    "if the file repeats each problem (DAPO's aime-2024.parquet holds each 32 times), pass the "
                    "file to `fipo-nb launch` where it exists (its repeats are then removed) or set eval_k=1")
        else:  # any other source (or an eval file that repeats problems) becomes a verl parquet under OUT/data
            target = str((x.out / "data" / f"{which}.parquet").resolve())
            x.launch.conversions[which] = (source, target)
        if which == "train":
            x.launch_train_file = target
        return [f"data.{key}={_value(target)}", f"data.{limit_key}={limit if limit is not None else -1}"]
    return handle


def _model(x: _Context):
    c = x.c
    if c.model.startswith("tiny-") or c.model == "smollm2-135m-instruct":
        _fail("model", f"{c.model!r} is built by fipo_nb itself; verl loads a hub id or a checkpoint folder")
    out = [f"actor_rollout_ref.model.path={_value(c.model)}", f"actor_rollout_ref.model.external_lib={PLUGIN}",
           "actor_rollout_ref.model.use_remove_padding=true"]
    if x.gae:
        out += [f"critic.model.path={_value(c.model)}", "critic.model.use_remove_padding=true"]
    return out


def _mode(x: _Context):
    c = x.c
    if c.mode == "qlora":
        _fail("mode", "'qlora' (a 4-bit base) is not available in verl: use mode=lora (bf16 base) or full")
    if c.mode == "full":
        return ["actor_rollout_ref.model.lora_rank=0"]
    targets = "all-linear" if c.lora_target_modules == "all-linear" else \
        [t.strip() for t in c.lora_target_modules.split(",") if t.strip()]
    # merged into the base weights before each sync: vLLM samples from plain weights, at any rank
    return [f"actor_rollout_ref.model.lora_rank={c.lora_r}", f"actor_rollout_ref.model.lora_alpha={c.lora_alpha}",
            f"actor_rollout_ref.model.target_modules={_value(targets)}", "actor_rollout_ref.model.lora.merge=true"]


def _lora(name: str):
    def handle(x: _Context):
        if x.c.mode == "full":
            x.launch.notes.append(f"{name}={getattr(x.c, name)!r}: unused with mode=full")
        return []  # mapped by "mode"
    return handle


def _dtype(x: _Context):
    dtype = {"auto": "bfloat16", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(x.c.dtype, x.c.dtype)
    if dtype not in ("bfloat16", "float16", "float32"):
        _fail("dtype", f"verl computes in bfloat16, float16 or float32; got {x.c.dtype!r}")
    return [f"actor_rollout_ref.actor.fsdp_config.dtype={dtype}", f"actor_rollout_ref.rollout.dtype={dtype}"]


def _device(x: _Context):
    if x.c.device not in ("auto", "cuda"):
        _fail("device", f"verl runs on GPUs; got {x.c.device!r} (use auto or cuda)")
    return []


def _strategy(x: _Context):
    strategy = "fsdp2" if x.c.strategy == "fsdp2" else "fsdp"
    out = [f"actor_rollout_ref.actor.strategy={strategy}"]
    return out + ([f"critic.strategy={strategy}"] if x.gae else [])


def _checkpointing(x: _Context):
    flag = _value(x.c.gradient_checkpointing)
    out = [f"actor_rollout_ref.model.enable_gradient_checkpointing={flag}"]
    return out + ([f"critic.model.enable_gradient_checkpointing={flag}"] if x.gae else [])


def _instruction(x: _Context):
    if not x.launch.conversions and x.c.instruction != "dapo":
        x.launch.notes.append(f"instruction={x.c.instruction!r}: the data files are passed as they are (their prompts "
                              "already hold the instruction)")
    return []  # used when converting a source to verl's parquet schema


def _micro_batch(x: _Context):
    budget = x.tokens_per_gpu  # micro_batch_size full-length responses' worth of tokens per GPU
    out = ["actor_rollout_ref.actor.use_dynamic_bsz=true", f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={budget}",
           f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={budget}",
           f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={budget}"]
    return out + ([f"critic.ppo_max_token_len_per_gpu={budget}"] if x.gae else [])


def _schedule(x: _Context):
    c = x.c
    out = [f"actor_rollout_ref.actor.optim.lr_scheduler_type={c.lr_schedule}",
           f"actor_rollout_ref.actor.optim.lr_warmup_steps={c.lr_warmup_steps}"]
    if c.lr_schedule == "cosine":
        out.append("actor_rollout_ref.actor.optim.min_lr_ratio=0.1")  # fipo_nb's cosine ends at 10% of lr
    return out


def _grad_clip(x: _Context):
    clip = x.c.grad_clip if x.c.grad_clip > 0 else 1e9  # 0 = off in fipo_nb; verl always clips
    out = [f"actor_rollout_ref.actor.grad_clip={clip!r}", f"actor_rollout_ref.actor.optim.clip_grad={clip!r}"]
    return out + ([f"critic.grad_clip={clip!r}", f"critic.optim.clip_grad={clip!r}"] if x.gae else [])


def _steps(x: _Context):
    return [f"trainer.total_training_steps={x.c.steps}", f"trainer.total_epochs={max(1, x.c.steps)}"]


def _top_k(x: _Context):
    return [f"actor_rollout_ref.rollout.top_k={x.c.top_k if x.c.top_k > 0 else -1}",
            f"actor_rollout_ref.rollout.val_kwargs.top_k={x.c.top_k if x.c.top_k > 0 else -1}"]


def _dynamic_sampling(x: _Context):
    c = x.c
    if not c.dynamic_sampling:
        return ["algorithm.filter_groups.enable=false"]
    gen = c.gen_prompts_per_batch or c.prompts_per_step
    metric = {"accuracy": "acc", "reward": "reward"}[c.filter_metric]
    # verl 0.9.1's v1 trainer refills filtered groups with up to max_inflight_gen_batches x train_batch_size
    # prompts in flight (the generation width); it overrides data.gen_batch_size and ignores max_num_gen_batches
    return ["algorithm.filter_groups.enable=true", f"algorithm.filter_groups.metric={metric}",
            f"algorithm.filter_groups.max_num_gen_batches={c.max_num_gen_batches}",
            f"algorithm.filter_groups.max_inflight_gen_batches={math.ceil(gen / c.prompts_per_step)}",
            f"data.gen_batch_size={gen}"]


def _overlong(x: _Context):
    c = x.c
    if c.overlong_buffer == 0:
        return ["+reward.reward_kwargs.overlong_buffer_cfg.enable=false"]
    return ["+reward.reward_kwargs.overlong_buffer_cfg.enable=true",
            f"+reward.reward_kwargs.overlong_buffer_cfg.len={c.overlong_buffer}",
            f"+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor={float(c.overlong_penalty)!r}",
            "+reward.reward_kwargs.overlong_buffer_cfg.log=false",
            f"+reward.reward_kwargs.max_resp_len={c.max_response_length}"]


def _reward_value(name: str, expected: float):
    def handle(x: _Context):
        if getattr(x.c, name) != expected:
            _fail(name, f"verl's DAPO scorer (math_dapo) gives {expected:g}; got {getattr(x.c, name)!r}")
        return []
    return handle


def _answer_mode(x: _Context):
    if x.c.answer_mode != "dapo":  # the other modes score differently (math-verify, \\boxed{}, the last number)
        _fail("answer_mode", f"verl scores with its own DAPO scorer (math_dapo), which is answer_mode=dapo; "
                             f"got {x.c.answer_mode!r}: set answer_mode=dapo")
    return ["reward.reward_manager.name=dapo"]


def _output_dir(x: _Context):
    name = x.out.name or "fipo_nb"
    return [f"trainer.default_local_dir={_value(str((x.out / 'checkpoints').resolve()))}",
            "trainer.logger=[console,file]", "trainer.project_name=fipo_nb", f"trainer.experiment_name={_value(name)}",
            "trainer.resume_mode=auto",
            f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="
            f"{_value(str((x.out / 'verl_metrics.jsonl').resolve()))}"]


def _trace(x: _Context):
    if x.c.trace_samples == 0:
        return []
    return [f"+actor_rollout_ref.actor.policy_loss.trace_dir={_value(str(x.out.resolve()))}",
            f"+actor_rollout_ref.actor.policy_loss.trace_samples={x.c.trace_samples}"]


def _eval_every(x: _Context):
    if x.c.eval_data is None:
        return []  # _data("val") turns validation off
    every = x.c.eval_every if x.c.eval_every > 0 else -1
    return [f"trainer.test_freq={every}", f"trainer.val_before_train={_value(x.c.eval_every > 0)}"]


def _save_every(x: _Context):
    c = x.c
    return [f"trainer.save_freq={-1 if c.save_every < 0 else c.save_every or c.steps}"]


def _gae(x: _Context):
    c = x.c
    if not x.gae:
        return ["algorithm.adv_estimator=grpo", "algorithm.norm_adv_by_std_in_grpo=true"]
    return ["algorithm.adv_estimator=gae", "algorithm.gamma=1.0", f"algorithm.lam={c.gae_lambda!r}",
            "critic.enable=true", f"critic.optim.lr={c.critic_lr!r}",
            f"critic.optim.weight_decay={c.weight_decay!r}",
            f"critic.fsdp.param_offload={_value(c.offload)}", f"critic.fsdp.optimizer_offload={_value(c.offload)}"]


def _gae_only(name: str):
    def handle(x: _Context):
        if not x.gae:
            x.launch.notes.append(f"{name}={getattr(x.c, name)!r}: unused with advantage_estimator=grpo")
        return []  # mapped by advantage_estimator
    return handle


def _set(name: str, *keys: str, fn=None):
    """The field's value (through fn) under each of `keys`."""
    def handle(x: _Context):
        value = getattr(x.c, name) if fn is None else fn(getattr(x.c, name))
        return [f"{key}={_value(value)}" for key in keys]
    return handle


def _with_critic(name: str, actor_key: str, critic_key: str):
    def handle(x: _Context):
        value = _value(getattr(x.c, name))
        return [f"{actor_key}={value}"] + ([f"{critic_key}={value}"] if x.gae else [])
    return handle


AGGREGATION = {"fipo": "token-mean", "dapo": "token-mean", "grpo": "seq-mean-token-mean"}  # verl's loss_agg_mode


def loss_fields(f) -> tuple[dict, dict]:
    """A FIPOConfig as (verl actor fields, fipo_nb policy-loss fields): the one mapping that the
    launch's overrides and `verl.actor_config` share."""
    actor = dict(clip_ratio_low=f.clip_low, clip_ratio_high=f.clip_low if f.loss == "grpo" else f.clip_high,
                 clip_ratio_c=f.dual_clip if f.dual_clip is not None else 10.0, loss_agg_mode=AGGREGATION[f.loss])
    policy = dict(fipo_loss=f.loss, dual_clip=f.dual_clip is not None, decay_rate=f.decay_rate,
                  weight_clip=f.weight_clip, weight_clip_high_only=f.weight_clip_high_only,
                  safety_threshold=f.safety_threshold, drop_dual_clipped_sequences=f.drop_dual_clipped_sequences,
                  log_ratio_clamp=f.log_ratio_clamp)
    return actor, policy


def _loss(x: _Context):
    """FIPOConfig -> the actor's loss: "fipo" is loss_mode fipo_nb; "dapo" / "grpo" are verl's own ("vanilla")."""
    f = x.c.fipo
    actor, settings = loss_fields(f)
    out = [f"actor_rollout_ref.actor.{key}={actor[key]!r}"
           for key in ("clip_ratio_low", "clip_ratio_high", "clip_ratio_c")]
    out += [f"actor_rollout_ref.actor.policy_loss._target_={POLICY_LOSS_TARGET}",
            f"actor_rollout_ref.actor.policy_loss.loss_mode={'fipo_nb' if f.loss == 'fipo' else 'vanilla'}",
            f"actor_rollout_ref.actor.loss_agg_mode={actor['loss_agg_mode']}"]
    if f.loss != "fipo":  # verl's own loss: what it cannot do is an error
        if f.dual_clip is None:
            raise LaunchError("FIPOConfig.dual_clip: verl's vanilla loss always dual-clips; None needs fipo.loss=fipo")
        if f.drop_dual_clipped_sequences:
            raise LaunchError("FIPOConfig.drop_dual_clipped_sequences: verl's vanilla loss has no sequence drop rule; "
                              "true needs fipo.loss=fipo")
        if f.log_ratio_clamp != 20.0:
            raise LaunchError(f"FIPOConfig.log_ratio_clamp: verl's vanilla loss clamps at 20; got {f.log_ratio_clamp!r}")
    return out + [f"+actor_rollout_ref.actor.policy_loss.{k}={_value(v)}" for k, v in settings.items()]


_NOT_APPLICABLE = "fipo_nb's own trainer only; verl"
FIELDS = {  # every TrainConfig field -> its mapping (tests check that none is missing)
    "model": _model, "mode": _mode, "lora_r": _lora("lora_r"), "lora_alpha": _lora("lora_alpha"),
    "lora_target_modules": _lora("lora_target_modules"), "dtype": _dtype, "device": _device,
    "gradient_checkpointing": _checkpointing, "strategy": _strategy,
    "data": _data("train"), "data_limit": lambda x: [], "instruction": _instruction,  # data_limit: with "data"
    "prompts_per_step": _set("prompts_per_step", "data.train_batch_size"),
    "samples_per_prompt": _set("samples_per_prompt", "actor_rollout_ref.rollout.n"),
    "mini_batch_size": _set("mini_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size"),
    "micro_batch_size": _micro_batch,
    "lr": _set("lr", "actor_rollout_ref.actor.optim.lr"), "lr_warmup_steps": lambda x: [],  # with lr_schedule
    "lr_schedule": _schedule, "weight_decay": _set("weight_decay", "actor_rollout_ref.actor.optim.weight_decay"),
    "grad_clip": _grad_clip, "steps": _steps,
    "max_prompt_length": _set("max_prompt_length", "data.max_prompt_length"),
    "max_response_length": _set("max_response_length", "data.max_response_length"),
    "temperature": _set("temperature", "actor_rollout_ref.rollout.temperature"),
    "top_p": _set("top_p", "actor_rollout_ref.rollout.top_p"), "top_k": _top_k,
    "rollout_batch_size": lambda x: [] if x.c.rollout_batch_size is None else
    [f"actor_rollout_ref.rollout.max_num_seqs={x.c.rollout_batch_size}"],
    "dynamic_sampling": _dynamic_sampling, "gen_prompts_per_batch": lambda x: [],  # with dynamic_sampling
    "max_num_gen_batches": lambda x: [], "filter_metric": lambda x: [],  # with dynamic_sampling
    "overlong_buffer": _overlong, "overlong_penalty": lambda x: [],  # with overlong_buffer
    "overlong_filter": lambda x: _fail("overlong_filter", "verl has no overlong filtering (truncated responses "
                                                          "always enter the loss)") if x.c.overlong_filter else [],
    "reward_correct": _reward_value("reward_correct", 1.0), "reward_incorrect": _reward_value("reward_incorrect", -1.0),
    "answer_mode": _answer_mode,
    "reward_errors": lambda x: _fail("reward_errors", "verl's reward manager stops the run when scoring fails; it "
                                                      "cannot score failures as incorrect") if x.c.reward_errors != "raise"
    else [],
    "seed": _set("seed", "data.seed", "actor_rollout_ref.rollout.seed"),
    "output_dir": _output_dir,
    "logprob_chunk_size": _na("logprob_chunk_size", f"{_NOT_APPLICABLE} computes log-probs with its own kernels"),
    "rollout_backend": _na("rollout_backend", f"{_NOT_APPLICABLE} samples with vLLM (actor_rollout_ref.rollout.name)"),
    "pack_sequences": _na("pack_sequences", f"{_NOT_APPLICABLE} removes padding itself (use_remove_padding=true)"),
    "trace_samples": _trace,
    "trace_post_update": lambda x: _fail("trace_post_update", "the post-update Future-KL needs a forward pass after "
                                                              "the step, which verl's actor does not make")
    if x.c.trace_post_update else [],
    "eval_data": _data("val"), "eval_every": _eval_every,
    "eval_k": _set("eval_k", "actor_rollout_ref.rollout.val_kwargs.n"), "eval_limit": lambda x: [],  # with eval_data
    "eval_temperature": _set("eval_temperature", "actor_rollout_ref.rollout.val_kwargs.temperature"),
    "eval_top_p": _set("eval_top_p", "actor_rollout_ref.rollout.val_kwargs.top_p"),
    "save_every": _save_every,
    "advantage_estimator": _gae, "gae_lambda": _gae_only("gae_lambda"), "critic_lr": _gae_only("critic_lr"),
    "rollout_tensor_parallel": _set("rollout_tensor_parallel", "actor_rollout_ref.rollout.tensor_model_parallel_size"),
    "rollout_gpu_memory": _set("rollout_gpu_memory", "actor_rollout_ref.rollout.gpu_memory_utilization"),
    "sequence_parallel": _with_critic("sequence_parallel", "actor_rollout_ref.actor.ulysses_sequence_parallel_size",
                                      "critic.ulysses_sequence_parallel_size"),
    "offload": _set("offload", "actor_rollout_ref.actor.fsdp_config.param_offload",
                    "actor_rollout_ref.actor.fsdp_config.optimizer_offload"),
    "fipo": _loss,
}

CONSTANT = [  # the official recipe's settings that no TrainConfig field varies
    "actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.enable_chunked_prefill=true",
    "actor_rollout_ref.rollout.val_kwargs.do_sample=true", "actor_rollout_ref.actor.ppo_epochs=1",
    "actor_rollout_ref.actor.entropy_coeff=0", "actor_rollout_ref.actor.use_kl_loss=false",
    "algorithm.use_kl_in_reward=false", "data.prompt_key=prompt", "data.truncation=left",
]


