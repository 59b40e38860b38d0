"""A few FIPO steps through verl's own actor loss path on a CPU, with a tiny real model: what the tests
drive and what notebook 05 opens in the widgets.

    .venv-verl/bin/python examples/verl_tiny_run.py runs/verl-example [--steps 2]

A verl step needs GPUs (NCCL, vLLM), so this runs every part of the update that does not: prompts
in Qwen's chat format, responses sampled by a tiny random Qwen2 (transformers' generate, real
Qwen token ids), verl's DAPO scorer (math_dapo), verl's GRPO advantages, the old log-probs of
the training model, verl's no-padding layout (`left_right_2_no_padding`), its mini-batch
iterator and dynamic micro-batching (`make_iterator`, `prepare_micro_batches`), and per
micro-batch the loss the actor worker binds (`engine_workers.ppo_loss`: verl's ppo_loss with
fipo_nb's trace hook) with the data fields FSDPEngine.forward_backward_batch sets, then
backward() and an optimizer step per mini-batch. What replaces the FSDP engine is the forward:
a plain per-sequence forward of the model giving the same packed log-probs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fipo_nb.config import FIPOConfig

PROMPTS = [("What is 3 + 4?", "7"), ("What is 6 + 2?", "8"), ("What is 5 + 5?", "10"), ("What is 1 + 8?", "9")]


def chat_prompt(question: str) -> str:
    """Qwen's ChatML form of the DAPO instruction around `question`."""
    from fipo_nb.data import DAPO_INSTRUCTION

    text = DAPO_INSTRUCTION.replace("{problem}", question)
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def tiny_actor(folder, seed: int = 0):
    """A tiny random Qwen2 with the real Qwen tokenizer, saved to `folder` and loaded back by verl's
    HFModelConfig (which gives the actor config its tokenizer, as in a worker)."""
    from transformers import Qwen2ForCausalLM
    from verl.workers.config import HFModelConfig

    from fipo_nb.models import qwen_tokenizer, tiny_config

    torch.manual_seed(seed)
    tokenizer = qwen_tokenizer()
    config = tiny_config("qwen2", max_position_embeddings=32768, architectures=["Qwen2ForCausalLM"],
                         eos_token_id=151645, pad_token_id=151643, bos_token_id=151643)
    model = Qwen2ForCausalLM(config).float()
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, HFModelConfig(path=str(folder))


def sequence_log_probs(model, sequences: list[torch.Tensor]) -> torch.Tensor:
    """Packed per-token log-probs as verl's engine returns them for unpadded `sequences`: a jagged
    tensor, position t holding log p(token t+1 | tokens <= t) (0 at each sequence's last position)."""
    rows = []
    for real in sequences:  # [L] prompt + response, no padding
        logits = model(real[None]).logits[0]  # [L, V]
        logits = logits if logits.dtype == torch.float64 else logits.float()
        picked = torch.log_softmax(logits[:-1], dim=-1).gather(-1, real[1:, None])[:, 0]  # [L - 1]
        rows.append(torch.cat([picked, picked.new_zeros(1)]))  # [L]
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def rollout(model, tokenizer, *, group: int, max_response: int, seed: int):
    """Padded verl batch fields of one rollout: left-padded prompts, right-padded responses, masks,
    DAPO scores, GRPO advantages."""
    import numpy as np
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
    from verl.utils.reward_score.math_dapo import compute_score

    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 151643
    prompt_ids = [tokenizer.encode(chat_prompt(q), add_special_tokens=False) for q, _ in PROMPTS]
    width = max(len(p) for p in prompt_ids)
    prompts = torch.full((len(PROMPTS) * group, width), pad)  # [N, P] left-padded
    responses = torch.full((len(PROMPTS) * group, max_response), pad)  # [N, R] right-padded
    response_mask = torch.zeros_like(responses)
    scores, uid = [], []
    sampled = group // 2  # the rest are written answers, right and wrong: a random model never scores
    with torch.no_grad():
        for i, ((question, answer), ids) in enumerate(zip(PROMPTS, prompt_ids)):
            out = model.generate(torch.tensor([ids]), do_sample=True, max_new_tokens=max_response,
                                 num_return_sequences=sampled, eos_token_id=151645, pad_token_id=pad,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long), top_k=0, top_p=1.0)
            for g in range(group):
                row = i * group + g
                if g < sampled:
                    new = out[g, len(ids):].tolist()
                    if 151645 in new:
                        new = new[: new.index(151645) + 1]  # up to and with <|im_end|>
                else:
                    said = answer if (g - sampled) % 2 == 0 else str(int(answer) + 1)
                    text = f"{question.removeprefix('What is ').rstrip('?')} = {said}.\nAnswer: {said}<|im_end|>"
                    new = tokenizer.encode(text, add_special_tokens=False)[:max_response]
                prompts[row, width - len(ids):] = torch.tensor(ids)
                responses[row, : len(new)] = torch.tensor(new)
                response_mask[row, : len(new)] = 1
                text = tokenizer.decode(new, skip_special_tokens=True)
                scores.append(float(compute_score(text, answer)["score"]))
                uid.append(str(i))
    attention_mask = torch.cat([(prompts != pad).long(), response_mask], dim=1)  # the prompt never holds pad
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    lengths = response_mask.sum(dim=1)
    token_scores = torch.zeros(responses.shape)
    token_scores[torch.arange(len(scores)), (lengths - 1).clamp(min=0)] = torch.tensor(scores)  # reward on the last token
    advantages, _ = compute_grpo_outcome_advantage(token_scores, response_mask.float(), np.array(uid))
    return {"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention_mask, "position_ids": position_ids, "response_mask": response_mask,
            "token_level_scores": token_scores, "token_level_rewards": token_scores, "advantages": advantages}


def verl_batch(fields: dict, old_log_probs: torch.Tensor):
    """The TensorDict verl's trainer hands the actor: no-padding layout, old log-probs included."""
    from tensordict import TensorDict
    from verl.workers.utils.padding import left_right_2_no_padding

    batch = TensorDict({**fields, "old_log_probs": old_log_probs}, batch_size=[fields["prompts"].shape[0]])
    return left_right_2_no_padding(batch)


def old_log_probs(model, fields) -> torch.Tensor:
    """[N, R] log-probs of the responses under `model` right now (verl's compute_log_prob, no grad)."""
    from tensordict import TensorDict
    from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

    with torch.no_grad():
        packed = sequence_log_probs(model, [ids[m.bool()] for ids, m in zip(fields["input_ids"], fields["attention_mask"])])
        data = left_right_2_no_padding(TensorDict(dict(fields), batch_size=[fields["prompts"].shape[0]]))
        return no_padding_2_padding(packed, data) * fields["response_mask"]


def mini_batches(batch, mini_batch_size: int, max_token_len: int):
    """(mini-batch, its micro-batches) as verl's actor makes them: make_iterator, then the fields
    FSDPEngine.forward_backward_batch assigns, then prepare_micro_batches (dynamic batch size)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    total = batch.shape[0] // mini_batch_size
    for index, mini in enumerate(tu.make_iterator(batch, mini_batch_size=mini_batch_size, epochs=1, seed=42,
                                                  dataloader_kwargs={"shuffle": False})):
        tu.assign_non_tensor(mini, update_lr_scheduler=index == total - 1, global_batch_size=mini_batch_size,
                             use_dynamic_bsz=True, max_token_len_per_gpu=max_token_len, sp_size=1)
        tu.assign_non_tensor(mini, batch_num_tokens=int(mini["loss_mask"].sum()), dp_size=1)
        micro, _ = prepare_micro_batches(data=mini, dp_group=None, same_micro_num_in_dp=True)
        yield index, mini, micro


def train_steps(out_dir, *, steps: int = 2, fipo: FIPOConfig | None = None, group: int = 4, mini_batch_prompts: int = 2,
                max_response: int = 16, trace_samples: int = 4, seed: int = 0, lr: float = 1e-3) -> list[dict]:
    """Run `steps` FIPO steps through verl's loss path, writing OUT/traces, OUT/metrics.jsonl and
    OUT/config.json; return verl's per-micro-batch metrics of the last step."""
    import json
    from functools import partial

    from verl.workers import engine_workers

    from fipo_nb.config import TrainConfig
    from fipo_nb.integrations.verl import actor_config, register

    register()  # the worker imports external_lib before it binds its loss: same order here
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, model_config = tiny_actor(out / "model", seed)
    fipo = fipo or FIPOConfig()
    mini = mini_batch_prompts * group
    budget = 2 * (max_response + 64)  # tokens per micro-batch: two to three sequences
    config = actor_config(fipo, ppo_mini_batch_size=mini_batch_prompts, rollout_n=group, use_dynamic_bsz=True,
                          ppo_max_token_len_per_gpu=budget, trace_dir=str(out), trace_samples=trace_samples,
                          model_config=model_config)
    train = TrainConfig(model="tiny-qwen2", mode="full", prompts_per_step=len(PROMPTS), samples_per_prompt=group,
                        mini_batch_size=mini_batch_prompts, max_response_length=max_response, lr=lr, steps=steps,
                        trace_samples=trace_samples, output_dir=str(out), fipo=fipo)
    (out / "config.json").write_text(json.dumps({**train.to_dict(), "engine": "verl (CPU loss path)"}, indent=2))
    loss_fn = partial(engine_workers.ppo_loss, config=config)  # what ActorRolloutRefWorker.init_model binds
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    metrics = []
    for step in range(steps):
        fields = rollout(model, model_config.tokenizer, group=group, max_response=max_response, seed=seed + step)
        batch = verl_batch(fields, old_log_probs(model, fields))
        metrics = []
        for _, _, micro in mini_batches(batch, mini, budget):
            optimizer.zero_grad()
            for data in micro:
                log_probs = sequence_log_probs(model, list(data["input_ids"].unbind()))  # the engine's forward
                loss, info = loss_fn(model_output={"log_probs": log_probs}, data=data)
                loss.backward()
                metrics.append({k: (v.values if hasattr(v, "values") else v) for k, v in info.items()})
            optimizer.step()
    return metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    train_steps(args.out_dir, steps=args.steps)
    print(f"wrote {args.out_dir}/traces and {args.out_dir}/metrics.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
