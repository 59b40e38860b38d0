"""TrainConfig -> verl 0.9.1 Hydra overrides: the table `FIELDS` behind `fipo-nb launch verl`, derived from
each field's declared verl mapping (config/fields.py), and the rules that mappings needing logic name.

    Keys(...)      the field's value under these Hydra keys (and the critic's, when one runs)
    Rule(name)     RULES[name] below: a translation, several keys, or a refusal naming the field
    MappedBy(f)    read by field f's rule (and those in `also`)
    Unused(why)    no meaning under verl: a note that launch.sh lists

FIPOConfig's fields map through `loss_fields` (the launch and `verl.actor_config`) and `fipo_from_verl`
(the loss inside verl, back). Imports no verl.
"""

from __future__ import annotations

import math
from pathlib import Path

from ...config import FIPOConfig, TrainConfig
from ...config.fields import Actor, Keys, MappedBy, PolicyLoss, Rule, Unused, described, optional_type

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


# ------------------------------------------------------------------------------------------ data files


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


# ------------------------------------------------------------------------------------------ rules: (context, field) -> overrides


def _data(x: _Context, name: str):
    """data.train_files / val_files and their sample limits; other sources become verl parquet files under OUT/data."""
    c, which = x.c, "train" if name == "data" else "val"
    source = c.data if which == "train" or c.eval_holdout else c.eval_data  # held-out problems come from data
    key = "train_files" if which == "train" else "val_files"
    limit = c.data_limit if which == "train" else c.eval_limit
    limit_key = "train_max_samples" if which == "train" else "val_max_samples"
    if source is None:  # no evaluation: verl still reads a validation file, the training one
        return [f"data.val_files={_value(x.launch_train_file)}", "data.val_max_samples=1",
                "trainer.val_before_train=false", "trainer.test_freq=-1"]
    path = Path(source)
    repeats = which == "val" and path.suffix == ".parquet" and path.exists() and _has_repeats(path, name)
    if path.suffix == ".parquet" and (not path.exists() or _is_verl_parquet(path, name)) and not repeats \
            and not c.eval_holdout:  # held-out problems split data in two converted files
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


def _model(x: _Context, name: str):
    """The model path for the actor (and the critic); fipo_nb's own offline builds are refused."""
    c = x.c
    if c.model.startswith("tiny-") or c.model == "smollm2-135m-instruct":
        _fail(name, f"{c.model!r} is built by fipo_nb itself; verl loads a hub id or a checkpoint folder")
    out = [f"actor_rollout_ref.model.path={_value(c.model)}", f"actor_rollout_ref.model.external_lib={PLUGIN}",
           "actor_rollout_ref.model.use_remove_padding=true"]
    if x.gae:
        out += [f"critic.model.path={_value(c.model)}", "critic.model.use_remove_padding=true"]
    return out


def _mode(x: _Context, name: str):
    """full: lora_rank=0; lora: rank, alpha, target modules, merged before each weight sync; qlora is refused."""
    c = x.c
    if c.mode == "qlora":
        _fail(name, "'qlora' (a 4-bit base) is not available in verl: use mode=lora (bf16 base) or full")
    if c.mode == "full":
        return ["actor_rollout_ref.model.lora_rank=0"]
    targets = "all-linear" if c.lora_target_modules == "all-linear" else \
        [t.strip() for t in c.lora_target_modules.split(",") if t.strip()]
    # merged into the base weights before each sync: vLLM samples from plain weights, at any rank
    return [f"actor_rollout_ref.model.lora_rank={c.lora_r}", f"actor_rollout_ref.model.lora_alpha={c.lora_alpha}",
            f"actor_rollout_ref.model.target_modules={_value(targets)}", "actor_rollout_ref.model.lora.merge=true"]


def _lora(x: _Context, name: str):
    """Written by mode's rule; a note when mode=full leaves it unused."""
    if x.c.mode == "full":
        x.launch.notes.append(f"{name}={getattr(x.c, name)!r}: unused with mode=full")
    return []


def _dtype(x: _Context, name: str):
    """The actor's and the rollout's dtype (auto: bfloat16); verl computes in bfloat16, float16 or float32."""
    dtype = {"auto": "bfloat16", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(x.c.dtype, x.c.dtype)
    if dtype not in ("bfloat16", "float16", "float32"):
        _fail(name, f"verl computes in bfloat16, float16 or float32; got {x.c.dtype!r}")
    return [f"actor_rollout_ref.actor.fsdp_config.dtype={dtype}", f"actor_rollout_ref.rollout.dtype={dtype}"]


def _device(x: _Context, name: str):
    """verl runs on GPUs: auto or cuda, else refused."""
    if x.c.device not in ("auto", "cuda"):
        _fail(name, f"verl runs on GPUs; got {x.c.device!r} (use auto or cuda)")
    return []


def _strategy(x: _Context, name: str):
    """verl's engine for the actor (and the critic): fsdp2 for "fsdp2", else fsdp."""
    strategy = "fsdp2" if x.c.strategy == "fsdp2" else "fsdp"
    out = [f"actor_rollout_ref.actor.strategy={strategy}"]
    return out + ([f"critic.strategy={strategy}"] if x.gae else [])


def _instruction(x: _Context, name: str):
    """Used when a source is converted to verl's parquet; files passed as they are keep their prompts (a note)."""
    if not x.launch.conversions and x.c.instruction != "dapo":
        x.launch.notes.append(f"instruction={x.c.instruction!r}: the data files are passed as they are (their prompts "
                              "already hold the instruction)")
    return []


def _micro_batch(x: _Context, name: str):
    """Dynamic batch sizes: micro_batch_size full-length responses' worth of tokens per GPU, for every pass."""
    budget = x.tokens_per_gpu
    out = ["actor_rollout_ref.actor.use_dynamic_bsz=true", f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={budget}",
           f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={budget}",
           f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={budget}"]
    return out + ([f"critic.ppo_max_token_len_per_gpu={budget}"] if x.gae else [])


def _schedule(x: _Context, name: str):
    """verl's lr scheduler type and warm-up (cosine ends at 10% of lr, as fipo_nb's)."""
    c = x.c
    out = [f"actor_rollout_ref.actor.optim.lr_scheduler_type={c.lr_schedule}",
           f"actor_rollout_ref.actor.optim.lr_warmup_steps={c.lr_warmup_steps}"]
    if c.lr_schedule == "cosine":
        out.append("actor_rollout_ref.actor.optim.min_lr_ratio=0.1")  # fipo_nb's cosine ends at 10% of lr
    return out


def _grad_clip(x: _Context, name: str):
    """The actor's (and the critic's) gradient clip; 0 (off) becomes 1e9, since verl always clips."""
    clip = x.c.grad_clip if x.c.grad_clip > 0 else 1e9
    out = [f"actor_rollout_ref.actor.grad_clip={clip!r}", f"actor_rollout_ref.actor.optim.clip_grad={clip!r}"]
    return out + ([f"critic.grad_clip={clip!r}", f"critic.optim.clip_grad={clip!r}"] if x.gae else [])


def _steps(x: _Context, name: str):
    """0: one pass over the data, as the official scripts run (trainer.total_epochs=1; verl counts the steps).
    N: N steps (trainer.total_training_steps, and as many epochs, so that the data never runs out first)."""
    if x.c.steps == 0:
        return ["trainer.total_epochs=1"]
    return [f"trainer.total_training_steps={x.c.steps}", f"trainer.total_epochs={x.c.steps}"]


def _top_k(x: _Context, name: str):
    """Top-k for training and validation samples; 0 (off) is verl's -1."""
    top_k = x.c.top_k if x.c.top_k > 0 else -1
    return [f"actor_rollout_ref.rollout.top_k={top_k}", f"actor_rollout_ref.rollout.val_kwargs.top_k={top_k}"]


def _rollout_batch_size(x: _Context, name: str):
    """vLLM's max_num_seqs; None: verl's default."""
    rows = x.c.rollout_batch_size
    return [] if rows is None else [f"actor_rollout_ref.rollout.max_num_seqs={rows}"]


def _dynamic_sampling(x: _Context, name: str):
    """verl's filter_groups (metric acc or reward) and its generation width."""
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


def _overlong(x: _Context, name: str):
    """The DAPO reward manager's overlong buffer (its length and penalty)."""
    c = x.c
    if c.overlong_buffer == 0:
        return ["+reward.reward_kwargs.overlong_buffer_cfg.enable=false"]
    return ["+reward.reward_kwargs.overlong_buffer_cfg.enable=true",
            f"+reward.reward_kwargs.overlong_buffer_cfg.len={c.overlong_buffer}",
            f"+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor={float(c.overlong_penalty)!r}",
            "+reward.reward_kwargs.overlong_buffer_cfg.log=false",
            f"+reward.reward_kwargs.max_resp_len={c.max_response_length}"]


def _overlong_filter(x: _Context, name: str):
    """Refused when on: verl has no overlong filtering."""
    if x.c.overlong_filter:
        _fail(name, "verl has no overlong filtering (truncated responses always enter the loss)")
    return []


_DAPO_REWARDS = {"reward_correct": 1.0, "reward_incorrect": -1.0}  # what verl's math_dapo scorer gives


def _reward_value(x: _Context, name: str):
    """verl's DAPO scorer gives 1 and -1: other rewards are refused."""
    expected = _DAPO_REWARDS[name]
    if getattr(x.c, name) != expected:
        _fail(name, f"verl's DAPO scorer (math_dapo) gives {expected:g}; got {getattr(x.c, name)!r}")
    return []


def _answer_mode(x: _Context, name: str):
    """verl's dapo reward manager, which is answer_mode=dapo; the other modes are refused."""
    if x.c.answer_mode != "dapo":  # the other modes score differently (math-verify, \\boxed{}, the last number)
        _fail(name, f"verl scores with its own DAPO scorer (math_dapo), which is answer_mode=dapo; "
                    f"got {x.c.answer_mode!r}: set answer_mode=dapo")
    return ["reward.reward_manager.name=dapo"]


def _reward_errors(x: _Context, name: str):
    """Refused unless "raise": verl's reward manager stops the run when scoring fails."""
    if x.c.reward_errors != "raise":
        _fail(name, "verl's reward manager stops the run when scoring fails; it cannot score failures as incorrect")
    return []


def _output_dir(x: _Context, name: str):
    """Checkpoints, the metrics file logger and the experiment name, under OUT."""
    run = x.out.name or "fipo_nb"
    return [f"trainer.default_local_dir={_value(str((x.out / 'checkpoints').resolve()))}",
            "trainer.logger=[console,file]", "trainer.project_name=fipo_nb", f"trainer.experiment_name={_value(run)}",
            "trainer.resume_mode=auto",
            f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="
            f"{_value(str((x.out / 'verl_metrics.jsonl').resolve()))}"]


def _trace(x: _Context, name: str):
    """The fipo_nb loss's trace settings (FIPOPolicyLossConfig.trace_dir / trace_samples); 0: none."""
    if x.c.trace_samples == 0:
        return []
    return [f"+actor_rollout_ref.actor.policy_loss.trace_dir={_value(str(x.out.resolve()))}",
            f"+actor_rollout_ref.actor.policy_loss.trace_samples={x.c.trace_samples}"]


def _trace_post_update(x: _Context, name: str):
    """Refused when on: verl's actor makes no forward pass after the step."""
    if x.c.trace_post_update:
        _fail(name, "the post-update Future-KL needs a forward pass after the step, which verl's actor does not make")
    return []


def _eval_every(x: _Context, name: str):
    """verl's test_freq, and validation before training when it is on."""
    if x.c.eval_data is None:
        return []  # eval_data's rule turns validation off
    every = x.c.eval_every if x.c.eval_every > 0 else -1
    return [f"trainer.test_freq={every}", f"trainer.val_before_train={_value(x.c.eval_every > 0)}"]


END_ONLY = 1_000_000_000  # a save_freq no run reaches: verl then saves at its last step only


def _save_every(x: _Context, name: str):
    """verl's save_freq (-1: never; 0: at the end only: every `steps` steps, or, for one epoch (steps=0), a period
    no run reaches, since verl saves at its last step only when save_freq > 0)."""
    c = x.c
    return [f"trainer.save_freq={-1 if c.save_every < 0 else c.save_every or c.steps or END_ONLY}"]


def _advantage_estimator(x: _Context, name: str):
    """verl's adv_estimator; "gae" adds the critic (its lr, lambda, weight decay, offload)."""
    c = x.c
    if not x.gae:
        return ["algorithm.adv_estimator=grpo", "algorithm.norm_adv_by_std_in_grpo=true"]
    return ["algorithm.adv_estimator=gae", "algorithm.gamma=1.0", f"algorithm.lam={c.gae_lambda!r}",
            "critic.enable=true", f"critic.optim.lr={c.critic_lr!r}",
            f"critic.optim.weight_decay={c.weight_decay!r}",
            f"critic.fsdp.param_offload={_value(c.offload)}", f"critic.fsdp.optimizer_offload={_value(c.offload)}"]


def _critic(x: _Context, name: str):
    """Written by advantage_estimator's rule; a note when advantage_estimator=grpo leaves it unused.
    verl 0.9.1 has one lambda (algorithm.lam) for the policy's advantages and the critic's targets, and no
    length-adaptive lambda: a launch that asks for either is refused by name."""
    c = x.c
    if not x.gae:
        x.launch.notes.append(f"{name}={getattr(c, name)!r}: unused with advantage_estimator=grpo")
    elif name == "critic_gae_lambda" and c.critic_gae_lambda != c.gae_lambda:
        raise LaunchError(f"TrainConfig.critic_gae_lambda={c.critic_gae_lambda!r}: verl 0.9.1 uses one lambda "
                          f"(algorithm.lam = gae_lambda = {c.gae_lambda!r}) for advantages and the critic's targets; "
                          "set them equal, or train with fipo_nb's own trainer")
    elif name == "gae_lambda_alpha" and c.gae_lambda_alpha is not None:
        raise LaunchError("TrainConfig.gae_lambda_alpha: verl 0.9.1 has no length-adaptive lambda (VAPO); "
                          "leave it None, or train with fipo_nb's own trainer")
    return []


def _fipo(x: _Context, name: str):
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


RULES = {  # the rules that TrainConfig fields name with verl=Rule(...)
    "model": _model, "mode": _mode, "lora": _lora, "dtype": _dtype, "device": _device, "strategy": _strategy,
    "data": _data, "eval_data": _data, "instruction": _instruction, "micro_batch_size": _micro_batch,
    "lr_schedule": _schedule, "grad_clip": _grad_clip, "steps": _steps, "top_k": _top_k,
    "rollout_batch_size": _rollout_batch_size, "dynamic_sampling": _dynamic_sampling, "overlong_buffer": _overlong,
    "overlong_filter": _overlong_filter, "reward_value": _reward_value, "answer_mode": _answer_mode,
    "reward_errors": _reward_errors, "output_dir": _output_dir, "trace_samples": _trace,
    "trace_post_update": _trace_post_update, "eval_every": _eval_every, "save_every": _save_every,
    "advantage_estimator": _advantage_estimator, "critic": _critic, "fipo": _fipo,
}


# ------------------------------------------------------------------------------------------ the table, derived


def _handler(name: str, mapping):
    """The override function of one TrainConfig field, from its declared verl mapping."""
    if isinstance(mapping, Keys):
        def keys(x: _Context):
            value = _value(getattr(x.c, name))
            return [f"{key}={value}" for key in mapping.keys + (mapping.critic if x.gae else ())]
        return keys
    if isinstance(mapping, Rule):
        if mapping.name not in RULES:
            raise LookupError(f"TrainConfig.{name} names verl rule {mapping.name!r}, which {__name__}.RULES lacks")
        rule = RULES[mapping.name]
        return lambda x: rule(x, name)
    if isinstance(mapping, MappedBy):
        for reader in mapping.readers:
            if not isinstance(_MAPPINGS.get(reader), Rule):
                raise LookupError(f"TrainConfig.{name} is mapped by {reader!r}, which has no verl rule")
        return lambda x: []
    if isinstance(mapping, Unused):
        def unused(x: _Context):
            x.launch.notes.append(f"{name}={getattr(x.c, name)!r}: {mapping.why}")
            return []
        return unused
    raise LookupError(f"TrainConfig.{name}: {mapping!r} is not a TrainConfig verl mapping")


_MAPPINGS = {d.name: d.setting.verl for d in described(TrainConfig)}
FIELDS = {name: _handler(name, mapping) for name, mapping in _MAPPINGS.items()}  # every TrainConfig field

CONSTANT = [  # the official recipe's settings that no TrainConfig field varies
    "actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.enable_chunked_prefill=true",
    "actor_rollout_ref.rollout.val_kwargs.do_sample=true", "actor_rollout_ref.actor.ppo_epochs=1",
    "actor_rollout_ref.actor.entropy_coeff=0", "actor_rollout_ref.actor.use_kl_loss=false",
    "algorithm.use_kl_in_reward=false", "data.prompt_key=prompt", "data.truncation=left",
]


# ------------------------------------------------------------------------------------------ FIPOConfig <-> verl's loss

AGGREGATION = {"fipo": "token-mean", "dapo": "token-mean", "grpo": "seq-mean-token-mean"}  # verl's loss_agg_mode
DUAL_CLIP_OFF = 10.0  # clip_ratio_c when FIPOConfig.dual_clip is None: verl's default, unused (dual_clip=false)


def loss_fields(f: FIPOConfig) -> tuple[dict, dict]:
    """A FIPOConfig as (verl actor fields, fipo_nb policy-loss fields), from each field's Actor / PolicyLoss
    mapping: the one mapping that the launch's overrides and `verl.actor_config` share."""
    actor, policy = {}, {}
    for d in described(FIPOConfig):
        value, mapping = getattr(f, d.name), d.setting.verl
        if isinstance(mapping, Actor):
            actor[mapping.key] = value
            if mapping.flag:
                policy[mapping.flag] = value is not None
        elif isinstance(mapping, PolicyLoss):
            policy[mapping.name or d.name] = value
        else:
            raise LookupError(f"FIPOConfig.{d.name}: verl={mapping!r}; the loss maps Actor and PolicyLoss fields")
    if f.loss == "grpo":  # GRPO's symmetric clip
        actor["clip_ratio_high"] = f.clip_low
    if f.dual_clip is None:
        actor["clip_ratio_c"] = DUAL_CLIP_OFF
    actor["loss_agg_mode"] = AGGREGATION[f.loss]
    return actor, policy


def fipo_from_verl(actor, policy_loss) -> FIPOConfig:
    """The FIPOConfig that a verl actor config and its FIPOPolicyLossConfig describe (validated)."""
    values = {}
    for d in described(FIPOConfig):
        mapping = d.setting.verl
        if isinstance(mapping, Actor):
            used = getattr(policy_loss, mapping.flag) if mapping.flag else True
            values[d.name] = float(getattr(actor, mapping.key)) if used else None
        else:
            values[d.name] = getattr(policy_loss, mapping.name or d.name)
    return FIPOConfig(**values).validate()


def policy_loss_fields() -> list[tuple[str, object, object, str]]:
    """(name, type, default, doc) of each FIPO field of verl's policy-loss config, in FIPOConfig's order: a
    PolicyLoss field keeps its type, default and doc; an Actor field with a flag is a bool saying whether
    the actor's value is in use."""
    out = []
    for d in described(FIPOConfig):
        mapping = d.setting.verl
        if isinstance(mapping, PolicyLoss):
            out.append((mapping.name or d.name, optional_type(d.kind, d.optional), d.default, d.setting.doc))
        elif isinstance(mapping, Actor) and mapping.flag:
            out.append((mapping.flag, bool, d.default is not None,
                        f"Whether FIPOConfig.{d.name} is in use: its value is actor.{mapping.key}. {d.setting.doc}"))
    return out
