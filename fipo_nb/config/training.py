"""TrainConfig: one run, each setting declared once (`setting()`: doc, allowed values, scope, verl mapping).

Settings every run reads come first, in the order of a step; settings only `fipo-nb launch verl`
runs, then settings only fipo_nb's own trainer runs, sit in their own sections at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .algorithm import FIPOConfig
from .fields import ONLY_SINGLE, ONLY_VERL, Keys, MappedBy, Rule, Unused, check_fields, invalid, setting

ADAPTER_MODES = ("qlora", "lora", "full")
ROLLOUT_BACKENDS = ("compact", "generate")  # as rollout.BACKENDS
STRATEGIES = ("single", "fsdp2", "verl")
LR_SCHEDULES = ("constant", "cosine")
ANSWER_MODES = ("auto", "dapo", "answer_line", "boxed", "last_number")  # rewards.MODES
REWARD_ERRORS = ("raise", "incorrect")
FILTER_METRICS = ("accuracy", "reward")
ADVANTAGE_ESTIMATORS = ("grpo", "gae")

_OWN_TRAINER = "fipo_nb's own trainer only; verl"  # the start of each Unused note below


@dataclass
class TrainConfig:
    """One FIPO training run: model, data, batch shapes, optimiser, sampling, and the algorithm.

    Batch shapes follow verl: each step samples `prompts_per_step` prompts and
    `samples_per_prompt` responses for each; the rollout is then consumed in mini-batches of
    `mini_batch_size` prompts, one optimizer update each (FIPO acts from the 2nd mini-batch on:
    the 1st sees the policy that sampled it), split into micro-batches of
    `micro_batch_size` responses for memory.
    """

    # ---------------------------------------------------------------- the model
    model: str = setting(
        "Qwen/Qwen2.5-0.5B-Instruct",
        'Hub id, local folder, "smollm2-135m-instruct" (offline), or "tiny-qwen2" / "tiny-qwen3" / "tiny-qwen2-char".',
        verl=Rule("model"))
    mode: str = setting(
        "qlora", 'Adapter mode: "qlora" (LoRA on a 4-bit NF4 base), "lora", or "full" (every weight).',
        choices=ADAPTER_MODES, verl=Rule("mode"))
    lora_r: int = setting(16, "LoRA rank.", at_least=1, verl=Rule("lora"))
    lora_alpha: int = setting(
        32, "LoRA scale numerator: the update is scaled by lora_alpha / lora_r.", at_least=1, verl=Rule("lora"))
    lora_target_modules: str = setting(
        "all-linear", 'Modules that get adapters ("all-linear", or a comma-separated list such as "q_proj,v_proj").',
        verl=Rule("lora"))
    dtype: str = setting(
        "auto", 'Parameter / compute dtype: "auto" = bfloat16 on CUDA, float32 on CPU.', verl=Rule("dtype"))
    device: str = setting("auto", '"auto" = cuda if available, else cpu.', verl=Rule("device"))
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in backward: less memory, ~30% more time. Paused while sampling.",
        verl=Keys("actor_rollout_ref.model.enable_gradient_checkpointing",
                  critic="critic.model.enable_gradient_checkpointing"))

    # ---------------------------------------------------------------- data and batch shapes
    data: str = setting(
        "single-digit",
        'Prompts: a .parquet/.jsonl/.json/.csv file (DAPO-Math-17k or problem/answer rows), the built-in '
        '"arithmetic[?size=N&terms=..]" / "word-problems[?steps=..]", "champ", "single-digit" (smoke tests), '
        'or "reasoning-gym:<task>[?size=N&...]" (the `gym` extra).',
        verl=Rule("data"))
    data_limit: int | None = setting(
        None, "Use only the first N problems (None: all).", at_least=1, verl=MappedBy("data"))
    instruction: str = setting(
        "dapo",
        'How a problem becomes a prompt: "dapo" (DAPO-Math\'s "Answer:" instruction), "none" (the bare problem), '
        "or a template with {problem}. Rows already in chat form (DAPO-Math-17k) are used as they are.",
        verl=Rule("instruction"))
    prompts_per_step: int = setting(
        8, "Prompts sampled per step (official 32B: 512).", at_least=1, verl=Keys("data.train_batch_size"))
    samples_per_prompt: int = setting(
        8, "G, responses per prompt; the group for advantages (official 32B: 16).",
        at_least=2, verl=Keys("actor_rollout_ref.rollout.n"))
    mini_batch_size: int = setting(
        2, "Prompts per optimizer update (official FIPO 32B: 64, i.e. 8 updates per rollout). Divides "
           "prompts_per_step.",
        at_least=1, verl=Keys("actor_rollout_ref.actor.ppo_mini_batch_size"))
    micro_batch_size: int = setting(
        8, "Responses per forward/backward pass; gradients accumulate over a mini-batch.",
        at_least=1, verl=Rule("micro_batch_size"))

    # ---------------------------------------------------------------- the optimizer
    lr: float = setting(
        1e-6, "Peak learning rate (official full fine-tune: 1e-6; LoRA usually wants ~1e-5 to 1e-4).",
        above=0, verl=Keys("actor_rollout_ref.actor.optim.lr"))
    lr_warmup_steps: int = setting(
        10, "Linear warm-up over the first N steps, as verl: step k (0-based) uses lr * k / N (step 1 at 0), "
            "then lr.",
        at_least=0, verl=MappedBy("lr_schedule"))
    lr_schedule: str = setting(
        "constant", 'After warm-up: "constant" (official) or "cosine" (to 10% of lr at `steps`).',
        choices=LR_SCHEDULES, verl=Rule("lr_schedule"))
    weight_decay: float = setting(
        0.1, "AdamW weight decay (official: 0.1).", at_least=0, verl=Keys("actor_rollout_ref.actor.optim.weight_decay"))
    grad_clip: float = setting(
        1.0, "Clip the global gradient norm at this value per update; 0 disables clipping.",
        at_least=0, verl=Rule("grad_clip"))
    steps: int = setting(
        100, "Training steps for `fipo-nb train` and the cosine horizon. Under verl, 0 runs one pass over the data "
             "as the official scripts do (trainer.total_epochs=1; the paper presets), N caps the run at N steps.",
        at_least=0, verl=Rule("steps"))

    # ---------------------------------------------------------------- sampling
    max_prompt_length: int = setting(
        2048, "Longer prompts are cut on the left (official recipe) and counted in `prompt/truncated`.",
        at_least=1, verl=Keys("data.max_prompt_length"))
    max_response_length: int = setting(
        1024, "Maximum new tokens per response (official 32B: 20480).",
        at_least=1, verl=Keys("data.max_response_length"))
    temperature: float = setting(
        1.0, "Sampling temperature; log-probs are taken at the same temperature (official: 1.0).",
        at_least=0, verl=Keys("actor_rollout_ref.rollout.temperature"))
    top_p: float = setting(
        1.0, "Nucleus sampling (official: 1.0, i.e. off). Below 1 the samples come from a truncated "
             "distribution that the log-probs (and so the loss) do not model, as in verl.",
        above=0, at_most=1, verl=Keys("actor_rollout_ref.rollout.top_p"))
    top_k: int = setting(
        0, "Top-k sampling, in training and evaluation (the DAPO recipe's val_kwargs.top_k is top_k); 0 is off. "
           "Like top_p < 1, it samples from a truncated distribution that the loss does not model.",
        at_least=0, verl=Rule("top_k"))
    rollout_batch_size: int | None = setting(
        None, "Rows sampled together (memory); None: the whole rollout at once.",
        at_least=1, verl=Rule("rollout_batch_size"))

    # ---------------------------------------------------------------- DAPO's dynamic sampling and overlong shaping
    dynamic_sampling: bool = setting(
        False, "DAPO: drop groups whose `filter_metric` is the same for every sample and sample more prompts "
               "until `prompts_per_step` informative groups are found (or `max_num_gen_batches` is reached).",
        verl=Rule("dynamic_sampling"))
    gen_prompts_per_batch: int | None = setting(
        None, "Prompts per generation batch under dynamic sampling (official: 2048 for 512); None: prompts_per_step.",
        at_least=1, verl=MappedBy("dynamic_sampling"))
    max_num_gen_batches: int = setting(
        10, "Give up after this many generation batches and train on the groups found so far.",
        at_least=1, verl=MappedBy("dynamic_sampling"))
    filter_metric: str = setting(
        "accuracy", 'What must vary inside a group for it to be kept: "accuracy" (official) or "reward".',
        choices=FILTER_METRICS, verl=MappedBy("dynamic_sampling"))
    overlong_buffer: int = setting(
        0, "DAPO's soft overlong punishment: the last N tokens before max_response_length cost up to "
           "`overlong_penalty` reward, linearly (official 32B: 4096). 0 disables it. At most max_response_length.",
        at_least=0, verl=Rule("overlong_buffer"))
    overlong_penalty: float = setting(
        1.0, "Reward lost by a response that reaches max_response_length (official: 1.0).",
        verl=MappedBy("overlong_buffer"))
    overlong_filter: bool = setting(
        False, "DAPO's overlong filtering: truncated responses (no stop token) are left out of the loss.",
        verl=Rule("overlong_filter"))

    # ---------------------------------------------------------------- the reward
    reward_correct: float = setting(1.0, "Reward of a correct answer.", verl=Rule("reward_value"))
    reward_incorrect: float = setting(
        -1.0, "Reward of a wrong or missing answer (DAPO: -1; use 0 for 1/0 rewards).", verl=Rule("reward_value"))
    answer_mode: str = setting(
        "auto",
        'How answers are read and judged: "dapo" (the official DAPO scorer: last "Answer:" line in the last 300 '
        'characters, normalised string equality), "auto" ("dapo" for DAPO-Math-17k / AIME rows, by their '
        'data_source; otherwise the "Answer:" line, else \\boxed{}, judged whole with math-verify), "answer_line", '
        '"boxed", "last_number". Hedges and lists ("5 (or 12)") are wrong in every mode.',
        choices=ANSWER_MODES, verl=Rule("answer_mode"))
    reward_errors: str = setting(
        "raise",
        'A reward function that raises or returns NaN / inf / a non-number: "raise" stops the step before any '
        "update with a RewardError naming the sample (the step can simply be run again); \"incorrect\" scores that "
        "response `reward_incorrect`, warns, and counts it in the `reward/errors` metric.",
        choices=REWARD_ERRORS, verl=Rule("reward_errors"))

    # ---------------------------------------------------------------- the run: seed, output, traces, evaluation
    seed: int = setting(
        0, "Seeds model init (tiny models), data order and sampling.",
        at_least=0, verl=Keys("data.seed", "actor_rollout_ref.rollout.seed"))
    output_dir: str = setting(
        "runs/fipo", "metrics.jsonl, config.json (and, later, traces and checkpoints) go here.",
        verl=Rule("output_dir"))
    trace_samples: int = setting(
        4, "Responses per step whose per-token log-ratio, Future-KL and weights go to OUT/traces (0: none).",
        at_least=0, verl=Rule("trace_samples"))
    trace_post_update: bool = setting(
        False, "Also trace Future-KL of the whole step's update (one extra forward of the traced responses).",
        verl=Rule("trace_post_update"))
    eval_data: str | None = setting(
        None, "Held-out problems (same sources as `data`); None disables evaluation (unless eval_holdout is set).",
        verl=Rule("eval_data"))
    eval_holdout: float = setting(
        0.0, "Share of `data`'s distinct problems held out for evaluation instead of an eval_data source (at least "
             "1, at most eval_limit, drawn by seed) and left out of training; 0: none. `fipo-nb train` holds out "
             "0.1 when --set data replaces a preset's data and eval_data is not set.",
        at_least=0.0, below=1.0, verl=MappedBy("eval_data", also=("data",)))
    eval_every: int = setting(
        0, "Evaluate after every N-th step and after the run's last (`steps`), as verl does (0: only when "
        "FIPOTrainer.evaluate() is called).",
        at_least=0, verl=Rule("eval_every"))
    eval_k: int = setting(
        4, "Samples per evaluation problem: avg@k and pass@k (the paper: avg@32 on AIME).",
        at_least=1, verl=Keys("actor_rollout_ref.rollout.val_kwargs.n"))
    eval_limit: int | None = setting(
        64, "Evaluate on the first N distinct problems of eval_data (None: all); repeated rows are sampled once.",
        at_least=1, verl=MappedBy("eval_data"))
    eval_temperature: float = setting(
        1.0, "Validation sampling temperature (official: 1.0).",
        at_least=0, verl=Keys("actor_rollout_ref.rollout.val_kwargs.temperature"))
    eval_top_p: float = setting(
        0.7, "Validation nucleus sampling (official: 0.7).",
        above=0, at_most=1, verl=Keys("actor_rollout_ref.rollout.val_kwargs.top_p"))
    save_every: int = setting(
        0, "Checkpoint after every N-th step and at the end of train(); 0: only at the end; -1: never.",
        at_least=-1, verl=Rule("save_every"))

    # ---------------------------------------------------------------- the algorithm
    fipo: FIPOConfig = setting(
        doc='The algorithm: loss ("fipo" | "dapo" | "grpo"), clips, Future-KL decay, weight clipping '
            "(the fipo.* settings).",
        factory=FIPOConfig, verl=Rule("fipo"))

    # ---------------------------------------------------------------- the advantage: group-normalised, or PPO's critic
    advantage_estimator: str = setting(
        "grpo", '"grpo": rewards normalised within each prompt\'s group (FIPO, DAPO, GRPO). "gae": PPO\'s '
                "generalised advantage estimation with a learned value model (a critic); independent of fipo.loss "
                '(PPO is gae with fipo.loss="dapo"; gae with "fipo" re-weights GAE advantages by Future-KL).',
        choices=ADVANTAGE_ESTIMATORS, verl=Rule("advantage_estimator"))
    gae_lambda: float = setting(
        1.0, 'GAE\'s lambda for the policy\'s advantages when advantage_estimator="gae" (gamma is 1: one reward, at '
             "the end of the response).",
        at_least=0, at_most=1, verl=Rule("critic"))
    gae_lambda_alpha: float | None = setting(
        None, "VAPO's length-adaptive lambda for the policy: lambda = 1 - 1 / (alpha * length) per response (VAPO: "
              "0.05); None: gae_lambda for every response.",
        above=0, verl=Rule("critic"))
    critic_gae_lambda: float = setting(
        1.0, "GAE's lambda for the critic's targets (VC-PPO's decoupled GAE: 1.0, unbiased returns).",
        at_least=0, at_most=1, verl=Rule("critic"))
    critic_lr: float = setting(
        1e-5, 'The critic\'s learning rate (its own AdamW) when advantage_estimator="gae".',
        above=0, verl=Rule("critic"))
    critic_warmup: int = setting(
        0, "Steps at the start that train only the critic (verl's trainer.critic_warmup; VC-PPO's value "
           "pre-training): the policy stays as it is until they are done.",
        at_least=0, verl=Keys(critic="trainer.critic_warmup"))
    value_clip: float = setting(
        0.5, "The clipped value loss's range: v is kept within v_old +- value_clip (verl's critic.cliprange_value).",
        above=0, verl=Keys(critic="critic.cliprange_value"))

    # ---------------------------------------------------------------- verl runs only (`fipo-nb launch verl`)
    strategy: str = setting(
        "single", '"single": fipo_nb\'s own trainer, one process. "verl" / "fsdp2": the scale-out path, run by '
                  'verl (`fipo-nb launch verl`; "fsdp2" picks verl\'s FSDP2 engine, "verl" its default FSDP).',
        choices=STRATEGIES, scope=ONLY_VERL, verl=Rule("strategy"))
    rollout_tensor_parallel: int = setting(
        1, "GPUs per vLLM engine, i.e. its tensor parallelism (official 32B: 4).",
        at_least=1, scope=ONLY_VERL, verl=Keys("actor_rollout_ref.rollout.tensor_model_parallel_size"))
    rollout_gpu_memory: float = setting(
        0.8, "Share of each GPU's memory vLLM takes for weights and KV cache (official: 0.8).",
        above=0, at_most=1, scope=ONLY_VERL, verl=Keys("actor_rollout_ref.rollout.gpu_memory_utilization"))
    sequence_parallel: int = setting(
        1, "Ulysses sequence-parallel degree of the training passes (official 32B: 8).",
        at_least=1, scope=ONLY_VERL,
        verl=Keys("actor_rollout_ref.actor.ulysses_sequence_parallel_size",
                  critic=("critic.ulysses_sequence_parallel_size", "critic.fsdp.ulysses_sequence_parallel_size")))
    offload: bool = setting(
        False, "FSDP keeps parameters, gradients and optimizer states in CPU memory (official 32B: on).",
        scope=ONLY_VERL, verl=Keys("actor_rollout_ref.actor.fsdp_config.param_offload",
                                   "actor_rollout_ref.actor.fsdp_config.optimizer_offload"))

    # ---------------------------------------------------------------- fipo_nb's own trainer only
    logprob_chunk_size: int = setting(
        1024, "Tokens per chunk of the output head when computing log-probs (memory vs speed).",
        at_least=1, scope=ONLY_SINGLE, verl=Unused(f"{_OWN_TRAINER} computes log-probs with its own kernels"))
    rollout_backend: str = setting(
        "compact", '"compact": fipo_nb\'s decode loop (finished rows leave the batch, each prompt is prefilled '
                   'once); "generate": transformers\' generate (every row computed until the last one ends). Same '
                   "random numbers, same distribution, same samples up to float rounding (benchmarks/rollout.py).",
        choices=ROLLOUT_BACKENDS, scope=ONLY_SINGLE,
        verl=Unused(f"{_OWN_TRAINER} samples with vLLM (actor_rollout_ref.rollout.name)"))
    pack_sequences: bool = setting(
        True, "Old log-probs and updates lay each micro-batch's rows end to end without padding (packing.py): "
              "the same log-probs up to float rounding, without computing padding; False: the padded layout.",
        scope=ONLY_SINGLE, verl=Unused(f"{_OWN_TRAINER} removes padding itself (use_remove_padding=true)"))
    share_prompts: bool = setting(
        True, "With pack_sequences, the rows of a micro-batch that answer the same prompt compute it once: one "
              "segment [prompt | response 1 | ... ] whose responses see the prompt and themselves only (packing.py, "
              "a 4D attention mask), wherever the model's shape says that computes less (short responses to long "
              "prompts). The same log-probs and gradients up to float rounding; False: every row its own prompt.",
        scope=ONLY_SINGLE, verl=Unused(f"{_OWN_TRAINER} computes every row's prompt (verl has no shared-prefix passes)"))
    reward_workers: int | None = setting(
        0, "Worker processes that score responses (rewards/workers.py), so that a reward function that hangs or "
           "kills its process (a segfault, os._exit, out of memory) fails its sample as an exception would "
           "(see reward_errors) instead of hanging or ending the run. 0: one per core; N: N. They are forked from "
           "the trainer: a notebook's lambdas and closures work, but what a reward function changes (a list it "
           "appends to, a call counter) stays in the worker, and it must not use CUDA. None: score in the "
           "trainer's own process (no timeout; for debugging or a stateful reward function).",
        at_least=0, scope=ONLY_SINGLE, verl=Unused(f"{_OWN_TRAINER} scores in its own reward workers"))
    reward_timeout: float = setting(
        60.0, "Seconds a reward worker may take on one response; past it the worker is killed and replaced and the "
              "response fails (see reward_errors). The default is far above a real answer's cost, and above the "
              "5 s per parse and per comparison at which MathReward stops math-verify in a worker (that answer "
              "is then wrong): only a call that is stuck reaches it, and costs the step at most this long.",
        above=0, scope=ONLY_SINGLE, verl=Unused(f"{_OWN_TRAINER} scores in its own reward workers"))

    def __post_init__(self):
        if isinstance(self.fipo, dict):  # config.json and presets spell the algorithm as a dict
            self.fipo = FIPOConfig(**self.fipo)

    @property
    def method(self) -> str:
        """The run's method in one word: "ppo" (GAE with the DAPO loss), "fipo+gae" / "grpo+gae" (GAE
        advantages under another loss), else the loss: "fipo", "dapo" or "grpo"."""
        if self.advantage_estimator == "gae":
            return "ppo" if self.fipo.loss == "dapo" else f"{self.fipo.loss}+gae"
        return self.fipo.loss

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first bad field and what it allows; return self."""
        check_fields(self)
        if self.prompts_per_step % self.mini_batch_size:  # each update takes whole groups
            raise invalid(self, "mini_batch_size", f"divide prompts_per_step ({self.prompts_per_step})")
        if self.overlong_buffer > self.max_response_length:  # the buffer is the tail of the response budget
            raise invalid(self, "overlong_buffer", f"not exceed max_response_length ({self.max_response_length})")
        if self.eval_holdout and self.eval_data is not None:  # one evaluation set: held-out rows or eval_data
            raise invalid(self, "eval_holdout", "be 0 when eval_data is set (evaluate on held-out problems of data, "
                                                "or on eval_data)")
        if self.instruction not in ("dapo", "none") and "{problem}" not in self.instruction:
            raise invalid(self, "instruction", "be 'dapo', 'none' or a template containing {problem}")
        self.fipo.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)
