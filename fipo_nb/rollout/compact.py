"""fipo_nb's own decode loop over the KV cache: the "compact" rollout backend.

transformers' `generate` keeps every row of a batch in every forward pass until the last row
has finished: with responses of 7 to 64 tokens, most of the batch computes padding for most
of the steps. This loop does three things differently, and nothing else:

  * finished rows leave the batch: their rows of the KV cache, the attention mask and the
    positions are dropped, so step t costs as many rows as are still writing;
  * each distinct prompt is prefilled once and its KV cache copied to its G rows (generate
    prefills the same prompt G times);
  * the chunk's left padding is cut to its own longest prompt.

The sampled distribution is generate()'s, step for step: the same logits processors
(transformers' temperature, top-k, top-p warpers, in generate's order), the same positions
(counted from each row's first real token) and the same stop rule (a stop token, or
max_new_tokens). The random numbers are generate()'s too: each step draws one
`torch.multinomial` over all the chunk's rows, finished ones included (a one-hot row), so
every row gets the random numbers it would get inside generate(); a row's token then differs
from generate()'s only where the batch shape changes the float rounding of its logits enough
to flip a draw (matrix products of a different number of rows may round differently), which
is no change of distribution. tests/test_rollout.py checks equal samples against generate() on
tiny Qwen2 / Qwen3 models (LoRA, 4-bit QLoRA, chunked, greedy, top-k, top-p) and that finished
rows leave the batch; benchmarks/rollout.py checks equal samples on SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

__all__ = ["decode_chunk", "sampling_processors"]


def sampling_processors(config):
    """The logits warpers generate() applies for `config` (a sampling_config), in its order:
    temperature, top-k, top-p (min_tokens_to_keep 1). Greedy (do_sample False) applies none."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if not config.do_sample:
        return processors
    if config.temperature is not None and config.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None and config.top_k != 0:
        processors.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
    if config.top_p is not None and config.top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    return processors


def _takes_logits_to_keep(model) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel -> CausalLM
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def _distinct_rows(ids: torch.Tensor, mask: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """First row of each run of equal consecutive rows, and each row's run index ([n])."""
    same = (ids[1:] == ids[:-1]).all(dim=1) & (mask[1:] == mask[:-1]).all(dim=1)  # [n-1] row i+1 repeats row i
    owner = torch.cat([torch.zeros(1, dtype=torch.long), (~same).long().cumsum(0)])  # [n]
    firsts = [0] + (torch.nonzero(~same).flatten() + 1).tolist()
    return firsts, owner


@torch.no_grad()
def decode_chunk(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, config, *, stop_ids: list[int],
                 pad_id: int) -> torch.Tensor:
    """Sample responses for left-padded prompts; returns [n, R] token ids, pad after each row's end,
    R = the longest response (as generate()'s output after the prompt columns).

    prompt_ids, prompt_mask: [n, P] on the model's device; rows that repeat the row above share its
    prefill. config: a GenerationConfig from rollout.sampling_config (do_sample, temperature, top_k,
    top_p, max_new_tokens are read). The model's train/eval mode and grad state are the caller's.
    """
    device = prompt_ids.device
    rows = prompt_ids.shape[0]
    keep = max(int(prompt_mask.sum(dim=1).max()), 1)  # the chunk's longest prompt: no all-padding columns
    ids, mask = prompt_ids[:, -keep:], prompt_mask[:, -keep:].long()  # [n, p]
    processors = sampling_processors(config)
    stops = torch.tensor(stop_ids, device=device)
    logits, writing = _prefill(model, ids, mask)  # [n, V]
    probs_all = _finished_at_pad(rows, logits.shape[-1], pad_id, device) if config.do_sample else None  # [n, V]
    responses = torch.full((rows, config.max_new_tokens), pad_id, dtype=torch.long, device=device)  # [n, max_new]
    steps = 0
    while True:
        tokens = _next_tokens(processors(None, logits), writing.rows, probs_all)  # [a]; warpers never read input_ids
        responses[writing.rows, steps] = tokens
        steps += 1
        going = ~torch.isin(tokens, stops)  # [a]
        left = int(going.sum())  # one wait for the device per token
        if steps >= config.max_new_tokens or left == 0:
            break
        if left < going.numel():  # finished rows leave the batch
            if probs_all is not None:
                probs_all[writing.rows[~going]] = 0.0
                probs_all[writing.rows[~going], pad_id] = 1.0  # generate() gives them pad from now on
            index = torch.nonzero(going).flatten()  # [a']
            writing.keep(index)
            tokens = tokens[index]
        logits = writing.next_logits(model, tokens)  # [a, V]
    return responses[:, :steps]


@dataclass
class _Writing:
    """The rows still writing, in KV-cache order, and what their next forward pass needs."""

    rows: torch.Tensor  # [a] chunk rows
    attention: torch.Tensor  # [a, p + t]
    position: torch.Tensor  # [a] position of each row's last token
    cache: object
    cache_key: str  # the name the model returned its KV cache by

    def keep(self, index: torch.Tensor) -> None:
        """Only the rows `index` ([a']) go on: the others leave the KV cache and the batch."""
        self.cache.batch_select_indices(index)
        self.rows, self.attention, self.position = self.rows[index], self.attention[index], self.position[index]

    def next_logits(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """Each row's next-token logits ([a, V], fp32) after `tokens` ([a]), the KV cache extended by them."""
        self.attention = torch.cat([self.attention, self.attention.new_ones(self.attention.shape[0], 1)], dim=1)
        self.position = self.position + 1
        out = model(input_ids=tokens[:, None], attention_mask=self.attention, position_ids=self.position[:, None],
                    use_cache=True, return_dict=True, **{self.cache_key: self.cache})
        return out.logits[:, -1].float()  # [a, V]


def _prefill(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, _Writing]:
    """Each row's first next-token logits ([n, V], fp32) and every row writing, from one forward pass
    over each distinct prompt, with positions as generate() counts them (pads at 0); each prompt's
    KV cache is copied to its rows."""
    device = ids.device
    firsts, owner = _distinct_rows(ids.cpu(), mask.cpu())
    first = torch.tensor(firsts, device=device)
    unique_mask = mask[first]  # [u, p]
    positions = (unique_mask.cumsum(-1) - 1).masked_fill(unique_mask == 0, 0)  # [u, p]
    extra = {"logits_to_keep": 1} if _takes_logits_to_keep(model) else {}
    out = model(input_ids=ids[first], attention_mask=unique_mask, position_ids=positions, use_cache=True,
                return_dict=True, **extra)
    # transformers renamed past_key_values to cache (5.x): pass it back under the name this version returned it
    # by, since a forward that does not know the name swallows it in **kwargs and runs without the cache
    cache_key = "cache" if "cache" in out else "past_key_values"
    cache = out[cache_key]
    owner = owner.to(device)
    if len(firsts) < ids.shape[0]:
        cache.batch_select_indices(owner)  # copy each prompt's KV cache to its rows
    logits = out.logits[:, -1].float()[owner]  # [n, V]
    rows = torch.arange(ids.shape[0], device=device)
    return logits, _Writing(rows, mask, positions[owner, -1], cache, cache_key)


def _finished_at_pad(rows: int, vocab: int, pad_id: int, device) -> torch.Tensor:
    """What torch.multinomial sees for rows that are not writing: one-hot at pad ([rows, vocab])."""
    probs_all = torch.zeros(rows, vocab, device=device)
    probs_all[:, pad_id] = 1.0
    return probs_all


def _next_tokens(scores: torch.Tensor, rows: torch.Tensor, probs_all: torch.Tensor | None) -> torch.Tensor:
    """The writing rows' next tokens ([a]): greedy when `probs_all` is None, else one torch.multinomial over
    all the chunk's rows (`probs_all`, [n, V], the writing rows' probabilities copied in), so that each row
    gets the random numbers generate() gives it."""
    if probs_all is None:
        return scores.argmax(dim=-1)  # [a]
    probs = torch.softmax(scores, dim=-1)  # [a, V]
    probs_all.index_copy_(0, rows, probs)
    return torch.multinomial(probs_all, num_samples=1).squeeze(1)[rows]  # [a]
