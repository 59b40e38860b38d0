"""Configuration dataclasses.

`FIPOConfig` holds the algorithm's knobs. Its defaults are the official FIPO 32B script
(Qwen2.5-32B base, DAPO-Math-17k); see ../shared/reference/FIPO_REFERENCE.md, "Official
hyperparameters". Every field carries a docstring line saying what it does and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

LOSSES = ("fipo", "dapo", "grpo")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class FIPOConfig:
    """The FIPO objective (and its DAPO / GRPO baselines), as in the official code."""

    loss: str = "fipo"
    """"fipo" (Future-KL weighted), "dapo" (weights == 1, token-mean) or "grpo" (symmetric clip, sequence mean)."""

    clip_low: float = 0.2
    """eps_low: the ratio is clipped below at 1 - clip_low."""

    clip_high: float = 0.28
    """eps_high: the ratio is clipped above at 1 + clip_high (DAPO's clip-higher; ignored by "grpo")."""

    dual_clip: float | None = 10.0
    """c: negative-advantage losses are capped at -A * c, and tokens with ratio > c do not feed
    Future-KL (the participation mask M_k). None disables both."""

    decay_rate: float = 32.0
    """tau, a half-life in tokens: gamma = 2 ** (-1 / tau). The paper found 8 collapses early, 256 is volatile."""

    weight_clip: float | None = 0.2
    """eps_f: influence weights are clipped to [1, 1 + eps_f] (high-only) or [1 - eps_f, 1 + eps_f];
    0 or None means no clipping beyond the official cap at 10."""

    weight_clip_high_only: bool = True
    """True: [1, 1 + eps_f] (the 32B recipe). False: [1 - eps_f, 1 + eps_f] (the 7B pilot)."""

    safety_threshold: float | None = 10.0
    """Where A < 0 and the ratio exceeds this, the weight is held in [0.8, 1.0]. None disables the rule."""

    drop_dual_clipped_sequences: bool | None = None
    """Drop a sequence from the loss when more than one of its negative-advantage tokens hits the
    dual-clip bound. None resolves to True for "fipo" (official FIPO) and False for the baselines."""

    log_ratio_clamp: float = 20.0
    """log pi - log pi_old is clamped to [-this, this] before exp, as the official code does."""

    def __post_init__(self):
        if self.drop_dual_clipped_sequences is None:
            self.drop_dual_clipped_sequences = self.loss == "fipo"

    def validate(self) -> "FIPOConfig":
        """Raise ValueError naming the first field outside its allowed range; return self."""
        if self.loss not in LOSSES:
            raise ValueError(f"FIPOConfig.loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if not _is_number(self.clip_low) or not 0.0 <= self.clip_low < 1.0:
            raise ValueError(f"FIPOConfig.clip_low must be a number in [0, 1); got {self.clip_low!r}")
        if not _is_number(self.clip_high) or self.clip_high < 0.0:
            raise ValueError(f"FIPOConfig.clip_high must be a number >= 0; got {self.clip_high!r}")
        if self.dual_clip is not None:
            if not _is_number(self.dual_clip) or self.dual_clip <= 1.0 + self.clip_high:
                raise ValueError(
                    f"FIPOConfig.dual_clip must exceed 1 + clip_high = {1.0 + self.clip_high:g} "
                    f"(or be None); got {self.dual_clip!r}"
                )
        if not _is_number(self.decay_rate) or self.decay_rate <= 0.0:
            raise ValueError(f"FIPOConfig.decay_rate must be a number > 0 (tokens); got {self.decay_rate!r}")
        if self.weight_clip is not None and (
            not _is_number(self.weight_clip) or not 0.0 <= self.weight_clip < 1.0
        ):
            raise ValueError(
                f"FIPOConfig.weight_clip must be in [0, 1), or 0/None for no clipping; got {self.weight_clip!r}"
            )
        if not isinstance(self.weight_clip_high_only, bool):
            raise ValueError(
                f"FIPOConfig.weight_clip_high_only must be True or False; got {self.weight_clip_high_only!r}"
            )
        if self.safety_threshold is not None and (
            not _is_number(self.safety_threshold) or self.safety_threshold <= 0.0
        ):
            raise ValueError(
                f"FIPOConfig.safety_threshold must be a number > 0 or None; got {self.safety_threshold!r}"
            )
        if not isinstance(self.drop_dual_clipped_sequences, bool):
            raise ValueError(
                "FIPOConfig.drop_dual_clipped_sequences must be True, False or None (auto); "
                f"got {self.drop_dual_clipped_sequences!r}"
            )
        if not _is_number(self.log_ratio_clamp) or self.log_ratio_clamp <= 0.0:
            raise ValueError(f"FIPOConfig.log_ratio_clamp must be a number > 0; got {self.log_ratio_clamp!r}")
        return self

    @property
    def gamma(self) -> float:
        """The per-token decay gamma = 2 ** (-1 / decay_rate)."""
        return 2.0 ** (-1.0 / self.decay_rate)

    def to_dict(self) -> dict:
        return asdict(self)


ADAPTER_MODES = ("qlora", "lora", "full")
ROLLOUT_BACKENDS = ("compact", "generate")  # as rollout.BACKENDS
STRATEGIES = ("single", "fsdp2", "verl")
LR_SCHEDULES = ("constant", "cosine")
ANSWER_MODES = ("auto", "dapo", "answer_line", "boxed", "last_number")  # rewards.MODES
REWARD_ERRORS = ("raise", "incorrect")


@dataclass
class TrainConfig:
    """One FIPO training run: model, data, batch shapes, optimiser, sampling, and the algorithm.

    Batch shapes follow verl: each step samples `prompts_per_step` prompts and
    `samples_per_prompt` responses for each; the rollout is then consumed in mini-batches of
    `mini_batch_size` prompts, one optimizer update each (FIPO acts from the 2nd mini-batch on:
    the 1st sees the policy that sampled it), split into micro-batches of
    `micro_batch_size` responses for memory.
    """

    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """Hub id, local folder, "smollm2-135m-instruct" (offline), or "tiny-qwen2" / "tiny-qwen3" / "tiny-qwen2-char"."""
    mode: str = "qlora"
    """Adapter mode: "qlora" (LoRA on a 4-bit NF4 base), "lora", or "full" (every weight)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scale numerator: the update is scaled by lora_alpha / lora_r."""
    lora_target_modules: str = "all-linear"
    """Modules that get adapters ("all-linear", or a comma-separated list such as "q_proj,v_proj")."""
    dtype: str = "auto"
    """Parameter / compute dtype: "auto" = bfloat16 on CUDA, float32 on CPU."""
    device: str = "auto"
    """"auto" = cuda if available, else cpu."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% more time. Paused while sampling."""
    strategy: str = "single"
    """"single": fipo_nb's own trainer, one process. "verl" / "fsdp2": the scale-out path, run by verl
    (`fipo-nb launch verl`; "fsdp2" picks verl's FSDP2 engine, "verl" its default FSDP)."""

    data: str = "single-digit"
    """Prompts: a .parquet/.jsonl/.json/.csv file (DAPO-Math-17k or problem/answer rows), the built-in
    "arithmetic[?size=N&terms=..]" / "word-problems[?steps=..]", "champ", "single-digit" (smoke tests),
    or "reasoning-gym:<task>[?size=N&...]" (the `gym` extra)."""
    data_limit: int | None = None
    """Use only the first N problems (None: all)."""
    instruction: str = "dapo"
    """How a problem becomes a prompt: "dapo" (DAPO-Math's "Answer:" instruction), "none" (the bare
    problem), or a template with {problem}. Rows already in chat form (DAPO-Math-17k) are used as they are."""
    prompts_per_step: int = 8
    """Prompts sampled per step (official 32B: 512)."""
    samples_per_prompt: int = 8
    """G, responses per prompt; the group for advantages (official 32B: 16)."""
    mini_batch_size: int = 2
    """Prompts per optimizer update (official FIPO 32B: 64, i.e. 8 updates per rollout)."""
    micro_batch_size: int = 8
    """Responses per forward/backward pass; gradients accumulate over a mini-batch."""

    lr: float = 1e-6
    """Peak learning rate (official full fine-tune: 1e-6; LoRA usually wants ~1e-5 to 1e-4)."""
    lr_warmup_steps: int = 10
    """Linear warm-up over the first N steps, as verl: step k (0-based) uses lr * k / N (step 1 at 0), then lr."""
    lr_schedule: str = "constant"
    """After warm-up: "constant" (official) or "cosine" (to 10% of lr at `steps`)."""
    weight_decay: float = 0.1
    """AdamW weight decay (official: 0.1)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm at this value per update; 0 disables clipping."""
    steps: int = 100
    """Training steps for `fipo-nb train` and the cosine horizon."""

    max_prompt_length: int = 2048
    """Longer prompts are cut on the left (official recipe) and counted in `prompt/truncated`."""
    max_response_length: int = 1024
    """Maximum new tokens per response (official 32B: 20480)."""
    temperature: float = 1.0
    """Sampling temperature; log-probs are taken at the same temperature (official: 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling (official: 1.0, i.e. off). Below 1 the samples come from a truncated
    distribution that the log-probs (and so the loss) do not model, as in verl."""
    top_k: int = 0
    """Top-k sampling, in training and evaluation (the DAPO recipe's val_kwargs.top_k is top_k); 0 is off.
    Like top_p < 1, it samples from a truncated distribution that the loss does not model."""
    rollout_batch_size: int | None = None
    """Rows sampled together (memory); None: the whole rollout at once."""
    rollout_backend: str = "compact"
    """"compact": fipo_nb's decode loop (finished rows leave the batch, each prompt is prefilled once);
    "generate": transformers' generate (every row computed until the last one ends). Same random
    numbers, same distribution, same samples up to float rounding (benchmarks/rollout.py)."""

    dynamic_sampling: bool = False
    """DAPO: drop groups whose `filter_metric` is the same for every sample and sample more prompts
    until `prompts_per_step` informative groups are found (or `max_num_gen_batches` is reached)."""
    gen_prompts_per_batch: int | None = None
    """Prompts per generation batch under dynamic sampling (official: 2048 for 512); None: prompts_per_step."""
    max_num_gen_batches: int = 10
    """Give up after this many generation batches and train on the groups found so far."""
    filter_metric: str = "accuracy"
    """What must vary inside a group for it to be kept: "accuracy" (official) or "reward"."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment: the last N tokens before max_response_length cost up to
    `overlong_penalty` reward, linearly (official 32B: 4096). 0 disables it."""
    overlong_penalty: float = 1.0
    """Reward lost by a response that reaches max_response_length (official: 1.0)."""
    overlong_filter: bool = False
    """DAPO's overlong filtering: truncated responses (no stop token) are left out of the loss."""

    reward_correct: float = 1.0
    """Reward of a correct answer."""
    reward_incorrect: float = -1.0
    """Reward of a wrong or missing answer (DAPO: -1; use 0 for 1/0 rewards)."""
    answer_mode: str = "auto"
    """How answers are read and judged: "dapo" (the official DAPO scorer: last "Answer:" line in the last
    300 characters, normalised string equality), "auto" ("dapo" for DAPO-Math-17k / AIME rows, by their
    data_source; otherwise the "Answer:" line, else \\boxed{}, judged whole with math-verify),
    "answer_line", "boxed", "last_number". Hedges and lists ("5 (or 12)") are wrong in every mode."""
    reward_errors: str = "raise"
    """A reward function that raises or returns NaN / inf / a non-number: "raise" stops the step before
    any update with a RewardError naming the sample (the step can simply be run again); "incorrect"
    scores that response `reward_incorrect`, warns, and counts it in the `reward/errors` metric."""

    seed: int = 0
    """Seeds model init (tiny models), data order and sampling."""
    output_dir: str = "runs/fipo"
    """metrics.jsonl, config.json (and, later, traces and checkpoints) go here."""
    logprob_chunk_size: int = 1024
    """Tokens per chunk of the output head when computing log-probs (memory vs speed)."""
    pack_sequences: bool = True
    """Old log-probs and updates lay each micro-batch's rows end to end without padding (packing.py):
    the same log-probs up to float rounding, without computing padding; False: the padded layout."""

    trace_samples: int = 4
    """Responses per step whose per-token log-ratio, Future-KL and weights go to OUT/traces (0: none)."""
    trace_post_update: bool = False
    """Also trace Future-KL of the whole step's update (one extra forward of the traced responses)."""
    eval_data: str | None = None
    """Held-out problems (same sources as `data`); None disables evaluation."""
    eval_every: int = 0
    """Evaluate after every N-th step (0: only when FIPOTrainer.evaluate() is called)."""
    eval_k: int = 4
    """Samples per evaluation problem: avg@k and pass@k (the paper: avg@32 on AIME)."""
    eval_limit: int | None = 64
    """Evaluate on the first N distinct problems of eval_data (None: all); repeated rows are sampled once."""
    eval_temperature: float = 1.0
    """Validation sampling temperature (official: 1.0)."""
    eval_top_p: float = 0.7
    """Validation nucleus sampling (official: 0.7)."""
    save_every: int = 0
    """Checkpoint after every N-th step and at the end of train(); 0: only at the end; -1: never."""

    advantage_estimator: str = "grpo"
    """"grpo": rewards normalised within each prompt's group (FIPO, DAPO, GRPO). "gae": PPO's generalised
    advantage estimation with a learned value model (a critic); only `fipo-nb launch verl` runs it."""
    gae_lambda: float = 1.0
    """GAE's lambda when advantage_estimator="gae" (gamma is 1: one reward, at the end of the response)."""
    critic_lr: float = 1e-5
    """The critic's learning rate when advantage_estimator="gae"."""
    rollout_tensor_parallel: int = 1
    """Scale-out (verl): GPUs per vLLM engine, i.e. its tensor parallelism (official 32B: 4)."""
    rollout_gpu_memory: float = 0.8
    """Scale-out (verl): share of each GPU's memory vLLM takes for weights and KV cache (official: 0.8)."""
    sequence_parallel: int = 1
    """Scale-out (verl): Ulysses sequence-parallel degree of the training passes (official 32B: 8)."""
    offload: bool = False
    """Scale-out (verl): FSDP keeps parameters, gradients and optimizer states in CPU memory (official 32B: on)."""

    fipo: FIPOConfig = field(default_factory=FIPOConfig)
    """The algorithm: loss ("fipo" | "dapo" | "grpo"), clips, Future-KL decay, weight clipping."""

    def __post_init__(self):
        if isinstance(self.fipo, dict):
            self.fipo = FIPOConfig(**self.fipo)

    # field -> (lowest allowed, None allowed) for the integer fields
    _INTEGERS = {
        "prompts_per_step": (1, False), "samples_per_prompt": (2, False), "mini_batch_size": (1, False),
        "micro_batch_size": (1, False), "max_prompt_length": (1, False), "max_response_length": (1, False),
        "lora_r": (1, False), "lora_alpha": (1, False), "logprob_chunk_size": (1, False),
        "max_num_gen_batches": (1, False), "eval_k": (1, False), "lr_warmup_steps": (0, False), "steps": (0, False),
        "top_k": (0, False), "seed": (0, False), "overlong_buffer": (0, False), "trace_samples": (0, False),
        "eval_every": (0, False), "save_every": (-1, False), "data_limit": (1, True), "rollout_batch_size": (1, True),
        "gen_prompts_per_batch": (1, True), "eval_limit": (1, True),
        "rollout_tensor_parallel": (1, False), "sequence_parallel": (1, False),
    }
    # field -> (lowest allowed, lowest excluded?) for the real-valued fields
    _NUMBERS = {
        "lr": (0.0, True), "weight_decay": (0.0, False), "grad_clip": (0.0, False), "temperature": (0.0, False),
        "eval_temperature": (0.0, False), "reward_correct": (None, False), "reward_incorrect": (None, False),
        "overlong_penalty": (None, False), "top_p": (0.0, True), "eval_top_p": (0.0, True),
        "gae_lambda": (0.0, False), "critic_lr": (0.0, True), "rollout_gpu_memory": (0.0, True),
    }
    _CHOICES = {"mode": ADAPTER_MODES, "strategy": STRATEGIES, "lr_schedule": LR_SCHEDULES,
                "filter_metric": ("accuracy", "reward"), "answer_mode": ANSWER_MODES, "reward_errors": REWARD_ERRORS,
                "advantage_estimator": ("grpo", "gae"), "rollout_backend": ROLLOUT_BACKENDS}

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field and what it allows; return self."""
        for name, (lowest, optional) in self._INTEGERS.items():
            value = getattr(self, name)
            if optional and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                allowed = f"an integer >= {lowest}" + (" or None" if optional else "")
                raise ValueError(f"TrainConfig.{name} must be {allowed}; got {value!r}")
        for name, (lowest, strict) in self._NUMBERS.items():
            value = getattr(self, name)
            if not _is_number(value) or (lowest is not None and (value <= lowest if strict else value < lowest)):
                bound = "" if lowest is None else f" {'>' if strict else '>='} {lowest:g}"
                raise ValueError(f"TrainConfig.{name} must be a finite number{bound}; got {value!r}")
        if self.gae_lambda > 1:
            raise ValueError(f"TrainConfig.gae_lambda must be in [0, 1]; got {self.gae_lambda!r}")
        for name in ("top_p", "eval_top_p", "rollout_gpu_memory"):
            if getattr(self, name) > 1:
                raise ValueError(f"TrainConfig.{name} must be in (0, 1]; got {getattr(self, name)!r}")
        for name, allowed in self._CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.prompts_per_step % self.mini_batch_size:
            raise ValueError(
                f"TrainConfig.mini_batch_size ({self.mini_batch_size}) must divide prompts_per_step "
                f"({self.prompts_per_step})"
            )
        if self.overlong_buffer > self.max_response_length:
            raise ValueError(
                f"TrainConfig.overlong_buffer ({self.overlong_buffer}) must not exceed max_response_length "
                f"({self.max_response_length})"
            )
        if self.instruction not in ("dapo", "none") and "{problem}" not in self.instruction:
            raise ValueError(
                f"TrainConfig.instruction must be 'dapo', 'none' or a template containing {{problem}}; "
                f"got {self.instruction!r}"
            )
        self.fipo.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)
