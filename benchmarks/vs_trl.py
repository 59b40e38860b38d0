"""fipo_nb against TRL's GRPOTrainer: step time at equal work, at 1 thread and at torch's default.

The same model (SmolLM2-135M-Instruct, float32, LoRA r 16 / alpha 32 on every linear layer), G = 4
responses to each of the same 4 prompts (the demo's one-digit sums), 64 new tokens, temperature 0.7,
top-p 1, and the same updates per rollout: fipo_nb's demo step is 4 prompts x 4 responses, one
optimizer update per mini-batch of 2 prompts (8 responses, one micro-batch), so TRL gets
per_device_train_batch_size 8, steps_per_generation 2, gradient accumulation 1, num_iterations 1:
one generation of 16 responses, the old log-probs, two optimizer updates. Both use AdamW (lr 2e-4,
no decay, no warm-up), gradient clipping at 1, no KL term, no gradient checkpointing, float32 on the
CPU, and the same reward: the last number of the response against the answer (fipo_nb's MathReward,
with a truncated response read like any other, as TRL's reward function cannot tell).

Three trainers take turns, one step each per round:
  TRL dapo       trl.GRPOTrainer(loss_type="dapo", use_vllm=False, bf16=False), its own train() loop;
                 its callbacks run the fipo_nb steps before or after each TRL step (alternating)
  fipo_nb dapo   FIPOTrainer(demo preset, fipo.loss="dapo"), `trainer.step()`
  fipo_nb fipo   FIPOTrainer(demo preset), `trainer.step()`

Equal work by construction. Before every step each trainer is put back to the same start: the same
LoRA weights (fipo_nb fipo's initial adapter, copied into the other two), a fresh optimizer and lr
schedule, and the same 4 prompts (every round is the first step of training again). Every trainer's
generation is seeded with the round's seed, so the three sample from the same policy with the same
random numbers; the script counts the responses that come out identical to fipo_nb fipo's token for
token (TRL samples with transformers' generate, fipo_nb with its own decode loop: the same draws,
up to float rounding). Each round runs in two modes:
  fixed    every stop token's logit is set to -inf at the output head while sampling (a forward
           hook, the same on both sides; transformers' suppress_tokens does this to the scores), so
           every response runs to 64 tokens: the same response and prompt token counts on every
           side, which the script checks (it raises if they differ)
  natural  the stop tokens are honoured: responses end where the model ends them (for reference).
           Where every side's responses are identical (the count says so) this is equal work too,
           and it keeps what the fixed mode takes away: responses of different lengths, whose
           finished rows fipo_nb's decode loop drops and whose padding its packing skips
Per round and trainer it prints sampling seconds (generation only), training seconds (the rest of
the step: rewards, old log-probs, updates), step seconds, response and prompt tokens, and per
round the step-time ratio TRL dapo / fipo_nb and the load. Round 0 (fixed) warms up and is not
counted. A last round (fixed) measures the memory each step needs: the peak resident set during the
step above the resident set at its start (VmHWM after a reset, minus VmRSS then; all three trainers
stay resident throughout); for it glibc is made to return freed memory (fixed mmap threshold,
malloc_trim), which slows allocation, so its times are shown but not counted.

The measurement runs in a child process per thread count: at torch's default (OMP_NUM_THREADS
unset) and, where that is more, at 1 thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)), each printing the
1-minute load average before it and, in the summary, the cores other processes kept busy during it
(the machine's CPU time less this benchmark's, over the wall time), since other work on the machine
slows every side but not alike. The last line is the median, over the timed rounds, of the fixed mode's step-time ratio TRL
dapo / fipo_nb fipo, at each thread count.

    .venv/bin/python benchmarks/vs_trl.py [--rounds 3] [--quick]       # needs `pip install fipo_nb[trl]`
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fipo_nb.presets import apply_overrides, get_preset
from logprobs import proc_status_kib  # benchmarks/logprobs.py (this script's folder is on sys.path)
from threads import OtherWork, child_environment  # benchmarks/threads.py
from fipo_nb.rewards import MathReward, RewardResult
from fipo_nb.rollout import eos_token_ids
from fipo_nb.train.heap import release_freed_memory
from fipo_nb.trainer import FIPOTrainer

LORA_TARGETS = "all-linear"
MODES = ("fixed", "natural")
TRAINERS = ("TRL dapo", "fipo_nb dapo", "fipo_nb fipo")
BASE, HEADLINE = "TRL dapo", "fipo_nb fipo"
SEED = 2024  # round r samples with seed SEED + r, on every side
FULL = dict(model="smollm2-135m-instruct", prompts=4, samples=4, mini_batch=2, max_new_tokens=64)
QUICK = dict(model="tiny-qwen2", prompts=2, samples=2, mini_batch=1, max_new_tokens=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (each: both modes, one step per trainer)")
    parser.add_argument("--quick", action="store_true", help="smallest setting (seconds): the tiny random Qwen2")
    parser.add_argument("--threads", choices=["default", "1"], help="measure in this process only, at these threads")
    parser.add_argument("--summary", type=Path, help="with --threads: write the medians and ratios here (JSON)")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    if args.threads is None:
        compare_thread_counts(args)
        return
    if args.threads == "1":
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fipo_nb_bench_vs_trl_") as out_dir:
        summary = measure(args.rounds, QUICK if args.quick else FULL, Path(out_dir))
    if args.summary:
        args.summary.write_text(json.dumps(summary))


# ------------------------------------------------------------------ thread counts, one process each


def run_child(args, threads: str, folder: Path) -> dict:
    summary_path = folder / f"summary-{threads}.json"
    command = [sys.executable, __file__, "--threads", threads, "--rounds", str(args.rounds), "--summary",
               str(summary_path)] + (["--quick"] if args.quick else [])
    print(f"\n=== {'torch default' if threads == 'default' else '1'} thread(s): {' '.join(command[1:4])}", flush=True)
    with OtherWork() as other:
        subprocess.run(command, env=child_environment(threads), check=True)  # its output goes straight to ours
    return {**json.loads(summary_path.read_text()), "other": other.cores}


def compare_thread_counts(args) -> None:
    with tempfile.TemporaryDirectory(prefix="fipo_nb_bench_vs_trl_") as folder:
        summaries = [run_child(args, "default", Path(folder))]
        if summaries[0]["threads"] > 1:
            summaries.append(run_child(args, "1", Path(folder)))
    print("\n=== summary: step-time ratio TRL dapo / fipo_nb (above 1: fipo_nb is faster), medians of the timed "
          "rounds; step memory fipo_nb / TRL dapo")
    print(f"{'threads':>7} {'load before':>11} {'others':>6} {'fixed fipo':>10} {'fixed dapo':>10} "
          f"{'natural fipo':>12} {'natural dapo':>12} {'memory fipo':>11}")
    for s in summaries:
        r = s["ratios"]
        print(f"{s['threads']:>7} {s['load'][0]:>11.2f} {s['other']:>6.2f} {r['fixed'][HEADLINE]:>9.2f}x "
              f"{r['fixed']['fipo_nb dapo']:>9.2f}x {r['natural'][HEADLINE]:>11.2f}x "
              f"{r['natural']['fipo_nb dapo']:>11.2f}x {s['memory'][HEADLINE]:>10.2f}x")
    parts = [f"{s['ratios']['fixed'][HEADLINE]:.2f}x at {s['threads']} thread{'s' * (s['threads'] > 1)}"
             f"{' (torch default)' if i == 0 else ''}" for i, s in enumerate(summaries)]
    busiest, cores = max(s["other"] for s in summaries), os.cpu_count() or 1
    print(f"others: cores other processes kept busy, on average, during each measurement (of {cores})")
    if busiest >= 0.25:
        print(f"note: other processes kept up to {busiest:.2f} cores busy: they competed for the CPUs (at more than "
              f"one thread a process then waits for its descheduled threads); read the per-round rows")
    print(f"speed-up over TRL: {', '.join(parts)} (fipo_nb fipo vs TRL dapo, step time, equal work: "
          f"fixed-length responses)")


# ------------------------------------------------------------------ memory


_resident_at_reset = [0]


def return_freed_memory() -> None:
    """Let the resident set follow live memory: big blocks always mmap'd (and unmapped when freed,
    glibc otherwise raises the threshold as it goes and keeps them), freed heap trimmed."""
    import ctypes

    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, fixed: no dynamic adjustment
    release_freed_memory()  # glibc's malloc_trim(0), as a training step does


def reset_peak_memory() -> None:
    """Start measuring a step's memory: freed memory back to the system, then the peak resident set reset
    (VmHWM := VmRSS)."""
    return_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")
    _resident_at_reset[0] = proc_status_kib("VmRSS")


def peak_memory_mib() -> float:
    """Peak resident memory since the reset, above what was resident then: what the step itself needed
    (the three trainers' models and optimizer states stay resident throughout)."""
    return (proc_status_kib("VmHWM") - _resident_at_reset[0]) / 1024


# ------------------------------------------------------------------ rounds and what they measure


@dataclass
class Round:
    """One step of every trainer, in one mode; every trainer samples it with the same seed."""

    index: int
    mode: str  # "fixed" or "natural"
    label: str  # what the rows show: the index, "mem" for the memory round
    timed: bool = True
    memory: bool = False

    @property
    def seed(self) -> int:
        return SEED + self.index


def schedule(rounds: int) -> list[Round]:
    """Round 0 warms up; then each timed round in both modes; then the memory round."""
    timed = [Round(r, mode, str(r)) for r in range(1, rounds + 1) for mode in MODES]
    return [Round(0, "fixed", "0", timed=False)] + timed + \
        [Round(rounds + 1, "fixed", "mem", timed=False, memory=True)]


@dataclass
class Step:
    """One trainer's step: seconds, token counts, and its responses (token ids per row)."""

    sampling: float
    total: float
    tokens: int
    prompt_tokens: int
    responses: list[list[int]] = field(repr=False)
    peak: float | None = None
    training: float | None = None  # the step less its sampling, unless given (a median row: the median)

    def __post_init__(self):
        if self.training is None:
            self.training = self.total - self.sampling


HEADER = (f"{'round':>5} {'mode':7} {'trainer':13} {'sample s':>9} {'train s':>8} {'step s':>7} {'resp tok':>8} "
          f"{'prompt tok':>10} {'+peak MiB':>9}")


def format_row(round_label: str, mode: str, name: str, step: Step) -> str:
    memory = "-" if step.peak is None else f"{step.peak:.0f}"
    return (f"{round_label:>5} {mode:7} {name:13} {step.sampling:>9.2f} {step.training:>8.2f} {step.total:>7.2f} "
            f"{step.tokens:>8} {step.prompt_tokens:>10} {memory:>9}")


def check_equal_work(round_: Round, steps: dict[str, Step], rows: int, max_new_tokens: int) -> None:
    """Every side saw the same prompt tokens; in the fixed mode every response has max_new_tokens tokens."""
    prompt_tokens = {name: s.prompt_tokens for name, s in steps.items()}
    if len(set(prompt_tokens.values())) > 1:
        raise RuntimeError(f"round {round_.label}: the trainers' prompts differ in length: {prompt_tokens}")
    if round_.mode == "fixed":
        tokens = {name: s.tokens for name, s in steps.items()}
        if set(tokens.values()) != {rows * max_new_tokens}:
            raise RuntimeError(f"round {round_.label}, fixed length: response tokens {tokens}, expected "
                               f"{rows} x {max_new_tokens} = {rows * max_new_tokens} on every side")


def same_rows(a: list[list[int]], b: list[list[int]]) -> int:
    return sum(x == y for x, y in zip(a, b))


def round_summary(round_: Round, steps: dict[str, Step]) -> str:
    reference = steps[HEADLINE].responses
    same = ", ".join(f"{name} {same_rows(steps[name].responses, reference)}/{len(reference)}"
                     for name in (BASE, "fipo_nb dapo"))
    ratios = ", ".join(f"/ {name} {steps[BASE].total / steps[name].total:.2f}x" for name in (HEADLINE, "fipo_nb dapo"))
    return (f"{'':>5} {round_.mode:7} step time TRL dapo {ratios}; responses identical to fipo_nb fipo's: {same}; "
            f"load {os.getloadavg()[0]:.2f}")


class Results:
    """Every trainer's steps of every round, the per-round ratios, and the summary of the timed rounds."""

    def __init__(self):
        self.steps: list[tuple[Round, dict[str, Step]]] = []

    def add(self, round_: Round, steps: dict[str, Step]) -> None:
        self.steps.append((round_, steps))

    def timed(self, mode: str) -> list[dict[str, Step]]:
        return [steps for round_, steps in self.steps if round_.timed and round_.mode == mode]

    def ratios(self, mode: str, name: str) -> list[float]:
        """Per timed round: TRL dapo's step seconds over `name`'s."""
        return [steps[BASE].total / steps[name].total for steps in self.timed(mode)]

    def median_step(self, mode: str, name: str) -> Step:
        rows = [steps[name] for steps in self.timed(mode)]
        median = lambda key: statistics.median(getattr(s, key) for s in rows)  # noqa: E731
        return Step(median("sampling"), median("total"), round(median("tokens")), round(median("prompt_tokens")), [],
                    training=median("training"))

    def peaks(self) -> dict[str, float]:
        return {name: steps[name].peak for round_, steps in self.steps if round_.memory for name in steps}

    def summary(self, threads: int, load: tuple[float, float]) -> dict:
        peaks = self.peaks()
        return dict(
            threads=threads, load=list(load),
            ratios={mode: {name: statistics.median(self.ratios(mode, name)) for name in TRAINERS[1:]}
                    for mode in MODES},
            memory={name: peaks[name] / peaks[BASE] for name in TRAINERS[1:]},
        )

    def print_summary(self, rounds: int) -> None:
        print(f"medians of rounds 1..{rounds}; memory of the last round:")
        print(HEADER)
        peaks = self.peaks()
        for mode in MODES:
            for name in TRAINERS:
                step = self.median_step(mode, name)
                step.peak = peaks[name] if mode == "fixed" else None
                print(format_row("med", mode, name, step))
        for mode in MODES:
            for name in TRAINERS[1:]:
                ratios = self.ratios(mode, name)
                sampling = statistics.median(s[BASE].sampling / s[name].sampling for s in self.timed(mode))
                training = statistics.median(s[BASE].training / s[name].training for s in self.timed(mode))
                print(f"{mode:7} TRL dapo / {name}: step time {statistics.median(ratios):.2f}x (rounds: "
                      f"{' '.join(f'{r:.2f}' for r in ratios)}), sampling {sampling:.2f}x, training {training:.2f}x")
        for name in TRAINERS[1:]:
            print(f"step memory {name} / TRL dapo: {peaks[name] / peaks[BASE]:.2f}x")


# ------------------------------------------------------------------ the same start, the same sampling


def trainable_state(model) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights (the LoRA adapters), by parameter name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if params.keys() != state.keys():
        raise RuntimeError(f"the trainers' adapters differ: {sorted(params.keys() ^ state.keys())[:4]} ...")
    for name, p in params.items():
        p.copy_(state[name])


@dataclass
class Start:
    """What a trainer's every step starts from: its optimizer and lr schedule before their first step (and
    for fipo_nb, its data order), copied once; the weights are shared by all (`adapter`)."""

    optimizer: dict
    scheduler: dict
    sampler: dict | None = None

    @classmethod
    def of(cls, optimizer, scheduler, sampler=None) -> "Start":
        return cls(copy.deepcopy(optimizer.state_dict()), copy.deepcopy(scheduler.state_dict()),
                   None if sampler is None else sampler.state_dict())

    def restore(self, model, adapter: dict, optimizer, scheduler, sampler=None) -> None:
        load_trainable_state(model, adapter)
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        if sampler is not None:
            sampler.load_state_dict(self.sampler)


@contextmanager
def sampling_as(round_: Round, model, stop_ids: list[int]):
    """Sample with the round's seed; in the fixed mode with every stop token's logit at -inf (a forward hook
    on the output head), so that no response ends before max_new_tokens."""
    torch.manual_seed(round_.seed)
    if round_.mode == "natural":
        yield
        return
    suppressed = torch.tensor(stop_ids)

    def no_stop(_module, _inputs, logits):
        return logits.index_fill(-1, suppressed.to(logits.device), float("-inf"))

    handle = model.get_output_embeddings().register_forward_hook(no_stop)
    try:
        yield
    finally:
        handle.remove()


class LastNumber:
    """The reward on both sides: MathReward's last-number rule, a truncated response read like any other
    (TRL's reward function is not told which responses were cut)."""

    def __init__(self, config):
        self.rule = MathReward(correct=config.reward_correct, incorrect=config.reward_incorrect,
                               mode=config.answer_mode)

    def score(self, prompt: str, response: str, sample) -> RewardResult:
        return self.rule.score(prompt, response, sample)


# ------------------------------------------------------------------ the two sides


def fipo_nb_trainer(settings: dict, loss: str, out_dir: Path) -> FIPOTrainer:
    config = apply_overrides(get_preset("demo"), [
        f"model={settings['model']}", f"prompts_per_step={settings['prompts']}",
        f"samples_per_prompt={settings['samples']}", f"mini_batch_size={settings['mini_batch']}",
        f"micro_batch_size={settings['mini_batch'] * settings['samples']}",
        f"max_response_length={settings['max_new_tokens']}", f"lora_target_modules={LORA_TARGETS}",
        f"fipo.loss={loss}", f"output_dir={out_dir / loss}", "trace_samples=0", "trace_post_update=false",
        "eval_every=0", "save_every=-1", "eval_data=none",
    ])
    return FIPOTrainer(config, reward_fn=LastNumber(config))


def first_prompts(trainer: FIPOTrainer) -> list:
    """The problems of the trainer's first step (a copy of its sampler draws them)."""
    from fipo_nb.data import PromptSampler

    return PromptSampler(trainer.problems, trainer.config.prompts_per_step, seed=trainer.config.seed).next_batch()


def trl_trainer(settings: dict, problems: list, generations: int, config, out_dir: Path, callback):
    """TRL's GRPOTrainer set up as fipo_nb's step; its data: `problems`, once per generation."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from fipo_nb.models import smollm2_checkpoint, tiny_model

    if settings["model"] == "tiny-qwen2":
        model, tokenizer = tiny_model("tiny-qwen2", seed=config.seed)  # fipo_nb's load_policy builds the same weights
    else:
        source = smollm2_checkpoint()
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    reward = LastNumber(config)

    def math_reward(prompts, completions, answer, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [reward.score("", text, {"answer": a}).reward for text, a in zip(texts, answer)]

    rows_per_update = config.mini_batch_size * config.samples_per_prompt
    updates = config.prompts_per_step // config.mini_batch_size
    args = GRPOConfig(
        output_dir=str(out_dir / "trl"), loss_type="dapo", beta=0.0, epsilon=config.fipo.clip_low,
        epsilon_high=config.fipo.clip_high, num_generations=config.samples_per_prompt,
        per_device_train_batch_size=rows_per_update, gradient_accumulation_steps=1, steps_per_generation=updates,
        num_iterations=1, max_completion_length=config.max_response_length, temperature=config.temperature,
        top_p=1.0, top_k=0, learning_rate=config.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=config.weight_decay, max_grad_norm=config.grad_clip, optim="adamw_torch", scale_rewards="group",
        mask_truncated_completions=config.overlong_filter, use_vllm=False, bf16=False, fp16=False, use_cpu=True,
        gradient_checkpointing=False, disable_dropout=True, shuffle_dataset=False, seed=config.seed,
        max_steps=updates * generations, logging_strategy="no", save_strategy="no",
        report_to="none", disable_tqdm=True, log_completions=False, dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{"prompt": p.prompt, "answer": str(p.answer)} for p in problems] * generations)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                      task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=math_reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora, callbacks=[callback])
    return trainer, updates


def patch_fipo_nb_sampling(current: list, stop_ids: list[int]) -> None:
    """fipo_nb's steps sample through `fipo_nb.train.collect.generate`: wrapped so that they sample as the
    round says (`current[0]`: its seed, and the fixed mode's stop tokens suppressed)."""
    from fipo_nb.train import collect

    original = collect.generate

    def generate(model, *args, **kwargs):
        with sampling_as(current[0], model, stop_ids):
            return original(model, *args, **kwargs)

    collect.generate = generate


def fipo_nb_step(trainer: FIPOTrainer, start: Start, adapter: dict, round_: Round) -> Step:
    start.restore(trainer.policy.model, adapter, trainer.optimizer, trainer.scheduler, trainer.sampler)
    if round_.memory:
        reset_peak_memory()
    started = time.perf_counter()
    result = trainer.step()
    total = time.perf_counter() - started
    rollout = result.rollout
    responses = [ids[mask].tolist() for ids, mask in zip(rollout.response_ids, rollout.response_mask)]
    return Step(result.metrics["time/generate_s"], total, int(rollout.response_mask.sum()),
                int(rollout.prompt_mask.sum()), responses, peak_memory_mib() if round_.memory else None)


# ------------------------------------------------------------------ the run


def measure(rounds: int, settings: dict, out_dir: Path) -> dict:
    """Run the rounds in this process (at its thread count); print every step and the summary; return it."""
    from transformers import PrinterCallback, TrainerCallback

    torch.manual_seed(0)
    fipo_nb = {"fipo_nb fipo": fipo_nb_trainer(settings, "fipo", out_dir),
               "fipo_nb dapo": fipo_nb_trainer(settings, "dapo", out_dir)}
    config = fipo_nb[HEADLINE].config
    adapter = trainable_state(fipo_nb[HEADLINE].policy.model)  # every trainer's weights before every step
    starts = {name: Start.of(t.optimizer, t.scheduler, t.sampler) for name, t in fipo_nb.items()}
    plan = schedule(rounds)
    results = Results()
    current: list[Round] = [plan[0]]
    rows = settings["prompts"] * settings["samples"]

    def fipo_nb_steps(index: int, steps: dict[str, Step]) -> None:
        order = list(fipo_nb.items()) if index % 2 else list(fipo_nb.items())[::-1]
        for name, trainer in order:
            steps[name] = fipo_nb_step(trainer, starts[name], adapter, current[0])

    class Alternate(TrainerCallback):
        """Each TRL step (one generation, `updates` optimizer steps) from the shared start, timed; the fipo_nb
        steps of the same round run before it in odd rounds and after it in even ones."""

        def __init__(self):
            self.trl, self.start, self.steps = None, None, {}
            self.started = self.sampling = 0.0
            self.tokens = self.prompt_tokens = 0
            self.responses: list[list[int]] = []

        def on_train_begin(self, _args, state, control, **kwargs):
            self.start = Start.of(self.trl.optimizer, self.trl.lr_scheduler)

        def on_step_begin(self, _args, state, control, **kwargs):
            if state.global_step % updates:
                return
            index = state.global_step // updates
            current[0], self.steps = plan[index], {}
            if index % 2:
                fipo_nb_steps(index, self.steps)
            self.start.restore(self.trl.model, adapter, self.trl.optimizer, self.trl.lr_scheduler)
            if current[0].memory:
                reset_peak_memory()
            self.sampling, self.tokens, self.prompt_tokens, self.responses = 0.0, 0, 0, []
            self.started = time.perf_counter()

        def on_step_end(self, _args, state, control, **kwargs):
            if state.global_step % updates:
                return
            total = time.perf_counter() - self.started
            round_ = current[0]
            self.steps[BASE] = Step(self.sampling, total, self.tokens, self.prompt_tokens, self.responses,
                                    peak_memory_mib() if round_.memory else None)
            index = state.global_step // updates - 1
            if index % 2 == 0:
                fipo_nb_steps(index, self.steps)
            steps = {name: self.steps[name] for name in TRAINERS}
            check_equal_work(round_, steps, rows, settings["max_new_tokens"])
            results.add(round_, steps)
            print("\n".join(format_row(round_.label, round_.mode, name, s) for name, s in steps.items()), flush=True)
            print(round_summary(round_, steps), flush=True)

    alternate = Alternate()
    trl, updates = trl_trainer(settings, first_prompts(fipo_nb[HEADLINE]), len(plan), config, out_dir, alternate)
    alternate.trl = trl
    stop_ids = sorted(set(eos_token_ids(fipo_nb[HEADLINE].policy.model, fipo_nb[HEADLINE].policy.tokenizer))
                      | set(trl.eos_token_ids))
    patch_fipo_nb_sampling(current, stop_ids)
    generate_one_turn = trl._generate_single_turn

    def timed_generation(prompt_ids, *a, **kw):  # TRL's sampling: transformers generate on the unwrapped model
        started = time.perf_counter()
        with sampling_as(current[0], trl.model, stop_ids):
            completion_ids, logprobs = generate_one_turn(prompt_ids, *a, **kw)
        alternate.sampling += time.perf_counter() - started
        alternate.tokens += sum(len(c) for c in completion_ids)
        alternate.prompt_tokens += sum(len(p) for p in prompt_ids)
        alternate.responses += [list(c) for c in completion_ids]
        return completion_ids, logprobs

    trl._generate_single_turn = timed_generation
    trl.remove_callback(PrinterCallback)  # it prints TRL's end-of-training summary dict
    import trl as trl_module

    load_before = os.getloadavg()[0]
    print(f"model {settings['model']} (lora r{config.lora_r}), {settings['prompts']} prompts x "
          f"{settings['samples']} samples, max {settings['max_new_tokens']} new tokens, temperature "
          f"{config.temperature}, {updates} updates per step; TRL {trl_module.__version__}, fipo_nb rollout backend "
          f"{config.rollout_backend}; {torch.get_num_threads()} thread(s), load {load_before:.2f} before; every step "
          f"from the same weights, fresh optimizer, same prompts and seed; round 0 warms up, the last measures memory",
          flush=True)
    print(HEADER, flush=True)
    trl.train()
    load_after = os.getloadavg()[0]
    print(f"load {load_after:.2f} after; ", end="")
    results.print_summary(rounds)
    return results.summary(torch.get_num_threads(), (load_before, load_after))


if __name__ == "__main__":
    main()
