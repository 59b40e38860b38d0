"""fipo_nb against TRL's GRPOTrainer: step time and tokens/s at equal work, alternating in one process.

The same model (SmolLM2-135M-Instruct, float32, LoRA r 16 / alpha 32 on every linear layer), the
same prompts in the same order (the demo's one-digit sums), G = 4 responses per prompt, at most 64
new tokens, temperature 0.7, top-p 1, and the same updates per rollout: fipo_nb's demo step is
4 prompts x 4 responses, one optimizer update per mini-batch of 2 prompts (8 responses, one
micro-batch), so TRL gets per_device_train_batch_size 8, steps_per_generation 2, gradient
accumulation 1, num_iterations 1: one generation of 16 responses, the old log-probs, two
optimizer updates. Both use AdamW (lr 2e-4, no decay, no warm-up), gradient clipping at 1, no KL
term, the same rule-based reward (fipo_nb.rewards.MathReward, last number), no gradient
checkpointing, float32 on the CPU.

Three trainers run side by side and take turns, one rollout each per round:
  TRL dapo       trl.GRPOTrainer(loss_type="dapo", use_vllm=False, bf16=False), its own train() loop; a
                 callback runs the two fipo_nb steps after every TRL rollout (2 optimizer steps)
  fipo_nb dapo   FIPOTrainer(demo preset, fipo.loss="dapo"), `trainer.step()`
  fipo_nb fipo   FIPOTrainer(demo preset), `trainer.step()`
For each: sampling seconds (generation only), training seconds (everything else in the step:
rewards, old log-probs, updates) and response tokens per second of the whole step. Round 0 warms
up and is not counted; the summary is the median over the timed rounds, and the last line is
fipo_nb fipo's tokens/s over TRL's. A last round measures the memory each step needs: the peak
resident set during the step above the resident set at its start (VmHWM after a reset, minus
VmRSS then; all three trainers stay resident throughout). For that round glibc is made to return
freed memory (fixed mmap threshold, malloc_trim), which slows allocation, so its times are shown
but not counted.

    .venv/bin/python benchmarks/vs_trl.py [--rounds 5] [--quick]       # needs `pip install fipo_nb[trl]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fipo_nb.presets import apply_overrides, get_preset
from logprobs import proc_status_kib  # benchmarks/logprobs.py (this script's folder is on sys.path)
from fipo_nb.rewards import MathReward, score_responses
from fipo_nb.trainer import FIPOTrainer

LORA_TARGETS = "all-linear"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (one rollout per trainer each)")
    parser.add_argument("--quick", action="store_true", help="smallest setting (seconds): the tiny random Qwen2")
    args = parser.parse_args()
    settings = dict(model="smollm2-135m-instruct", prompts=4, samples=4, mini_batch=2, max_new_tokens=64)
    if args.quick:
        settings = dict(model="tiny-qwen2", prompts=2, samples=2, mini_batch=1, max_new_tokens=8)
        args.rounds = 1
    with tempfile.TemporaryDirectory(prefix="fipo_nb_bench_vs_trl_") as out_dir:
        run(args, settings, Path(out_dir))


# ------------------------------------------------------------------ measuring


_resident_at_reset = [0]


def _libc():
    import ctypes

    return ctypes.CDLL("libc.so.6")


def return_freed_memory() -> None:
    """Let the resident set follow live memory: big blocks always mmap'd (and unmapped when freed,
    glibc otherwise raises the threshold as it goes and keeps them), freed heap trimmed."""
    libc = _libc()
    libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, fixed: no dynamic adjustment
    libc.malloc_trim(0)


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


class Record:
    """One trainer's timed steps (sampling s, training s, tokens) and the memory of its memory-round step."""

    def __init__(self, name: str):
        self.name, self.rows, self.peak = name, [], float("nan")

    def add(self, sampling: float, total: float, tokens: int) -> dict:
        self.rows.append(dict(sampling=sampling, training=total - sampling, total=total, tokens=tokens,
                              tokens_per_s=tokens / total))
        return self.rows[-1]

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.rows[1:])  # round 0 warms up

    def rate(self, part: str) -> float:
        """Median response tokens per second of `part` ("sampling" or "training")."""
        return statistics.median(r["tokens"] / r[part] for r in self.rows[1:])


def format_row(name: str, round_, row: dict, peak: float | None = None) -> str:
    memory = "-" if peak is None else f"{peak:.0f}"
    return (f"{str(round_):>5} {name:13} {row['sampling']:>9.2f} {row['training']:>9.2f} {row['total']:>8.2f} "
            f"{row['tokens']:>7.0f} {row['tokens_per_s']:>9.1f} {memory:>9}")


HEADER = f"{'round':>5} {'trainer':13} {'sample s':>9} {'train s':>9} {'step s':>8} {'tokens':>7} {'tokens/s':>9} {'+peak MiB':>9}"


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
    return FIPOTrainer(config)


def prompt_order(trainer: FIPOTrainer, steps: int) -> list:
    """The problems fipo_nb's trainers will sample, step after step (a copy of their sampler)."""
    from fipo_nb.data import PromptSampler

    sampler = PromptSampler(trainer.problems, trainer.config.prompts_per_step, seed=trainer.config.seed)
    return [p for _ in range(steps) for p in sampler.next_batch()]


def trl_trainer(settings: dict, problems: list, config, out_dir: Path, callback):
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
    reward = MathReward(correct=config.reward_correct, incorrect=config.reward_incorrect, mode=config.answer_mode)

    def math_reward(prompts, completions, answer, **_):  # the reward fipo_nb scores with
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [r.reward for r in score_responses(reward, [""] * len(texts), texts, [{"answer": a} for a in answer])]

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
        max_steps=updates * len(problems) // config.prompts_per_step, logging_strategy="no", save_strategy="no",
        report_to="none", disable_tqdm=True, log_completions=False, dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{"prompt": p.prompt, "answer": str(p.answer)} for p in problems])
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                      task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=math_reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora, callbacks=[callback])
    return trainer, updates


# ------------------------------------------------------------------ the run


def run(args, settings: dict, out_dir: Path) -> None:
    from transformers import PrinterCallback, TrainerCallback

    torch.manual_seed(0)
    fipo = fipo_nb_trainer(settings, "fipo", out_dir)
    dapo = fipo_nb_trainer(settings, "dapo", out_dir)
    memory_round = args.rounds + 1  # after the warm-up round 0 and the timed rounds
    problems = prompt_order(fipo, memory_round + 1)
    records = {name: Record(name) for name in ("TRL dapo", "fipo_nb dapo", "fipo_nb fipo")}
    lines: list[str] = []

    def fipo_nb_step(trainer: FIPOTrainer, record: Record, round_: int) -> None:
        memory = round_ == memory_round
        if memory:
            reset_peak_memory()
        started = time.perf_counter()
        result = trainer.step()
        total = time.perf_counter() - started
        sampling, tokens = result.metrics["time/generate_s"], int(result.rollout.response_mask.sum())
        if memory:
            record.peak = peak_memory_mib()
            lines.append(format_row(record.name, "mem", Record("").add(sampling, total, tokens), record.peak))
        else:
            lines.append(format_row(record.name, round_, record.add(sampling, total, tokens)))

    class Alternate(TrainerCallback):
        """Times each TRL rollout (steps_per_generation optimizer steps), then runs one step of each fipo_nb trainer."""

        def __init__(self):
            self.started, self.sampling, self.tokens = 0.0, 0.0, 0

        def on_step_begin(self, _args, state, control, **kwargs):
            if state.global_step % updates == 0:
                if state.global_step // updates == memory_round:
                    reset_peak_memory()
                self.started, self.sampling, self.tokens = time.perf_counter(), 0.0, 0

        def on_step_end(self, _args, state, control, **kwargs):
            if state.global_step % updates:
                return
            total = time.perf_counter() - self.started
            round_ = state.global_step // updates - 1
            record = records["TRL dapo"]
            if round_ == memory_round:
                record.peak = peak_memory_mib()
                lines.append(format_row(record.name, "mem", Record("").add(self.sampling, total, self.tokens),
                                        record.peak))
            else:
                lines.append(format_row(record.name, round_, record.add(self.sampling, total, self.tokens)))
            order = [(dapo, "fipo_nb dapo"), (fipo, "fipo_nb fipo")]
            for trainer, name in (order if round_ % 2 else order[::-1]):  # alternate which fipo_nb loss goes first
                fipo_nb_step(trainer, records[name], round_)
            print("\n".join(lines[-3:]), flush=True)

    alternate = Alternate()
    trl, updates = trl_trainer(settings, problems, fipo.config, out_dir, alternate)
    generate_one_turn = trl._generate_single_turn

    def timed_generation(*a, **kw):  # TRL's sampling: transformers generate on the unwrapped model
        started = time.perf_counter()
        completion_ids, logprobs = generate_one_turn(*a, **kw)
        alternate.sampling += time.perf_counter() - started
        alternate.tokens += sum(len(c) for c in completion_ids)
        return completion_ids, logprobs

    trl._generate_single_turn = timed_generation
    trl.remove_callback(PrinterCallback)  # it prints TRL's end-of-training summary dict
    import trl as trl_module

    print(f"model {settings['model']} (lora r{fipo.config.lora_r}), {settings['prompts']} prompts x "
          f"{settings['samples']} samples, max {settings['max_new_tokens']} new tokens, temperature "
          f"{fipo.config.temperature}, {updates} updates per rollout; TRL {trl_module.__version__}, "
          f"fipo_nb rollout backend {fipo.config.rollout_backend}; {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f} at start; round 0 warms up, the last measures memory", flush=True)
    print(HEADER, flush=True)
    trl.train()
    print(f"load {os.getloadavg()[0]:.1f} at the end; medians of rounds 1..{args.rounds}, memory of the last round:")
    print(HEADER)
    for name, record in records.items():
        row = {key: record.median(key) for key in ("sampling", "training", "total", "tokens", "tokens_per_s")}
        print(format_row(name, "med", row, record.peak))
    base = records["TRL dapo"]
    for name in ("fipo_nb dapo", "fipo_nb fipo"):
        record = records[name]
        print(f"{name} over TRL dapo: sampling tokens/s {record.rate('sampling') / base.rate('sampling'):.2f}x, "
              f"training tokens/s {record.rate('training') / base.rate('training'):.2f}x, "
              f"step memory {record.peak / base.peak:.2f}x")
    print(f"speed-up over TRL: {records['fipo_nb fipo'].median('tokens_per_s') / base.median('tokens_per_s'):.2f}x")


if __name__ == "__main__":
    main()
