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
    firsts, owner = _distinct_rows(ids.cpu(), mask.cpu())
    processors = sampling_processors(config)
    max_new = config.max_new_tokens
    stops = torch.tensor(stop_ids, device=device)

    # prefill: each distinct prompt once, positions as generate() counts them (pads at 0)
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
    if len(firsts) < rows:
        cache.batch_select_indices(owner)  # copy each prompt's KV cache to its rows
    logits = out.logits[:, -1].float()[owner]  # [n, V]
    del out

    active = torch.arange(rows, device=device)  # [a] chunk rows still writing, in cache order
    attention = mask  # [a, p + t]
    position = positions[owner, -1]  # [a] position of each active row's last token
    responses = torch.full((rows, max_new), pad_id, dtype=torch.long, device=device)  # [n, max_new]
    probs_all = None  # [n, V] what torch.multinomial sees: finished rows one-hot at pad
    steps = 0
    while True:
        scores = processors(None, logits)  # [a, V]; these warpers act per row and never read input_ids
        if config.do_sample:
            if probs_all is None:
                probs_all = torch.zeros(rows, scores.shape[-1], device=device)
                probs_all[:, pad_id] = 1.0
            probs = torch.softmax(scores, dim=-1)  # [a, V]
            probs_all.index_copy_(0, active, probs)
            tokens = torch.multinomial(probs_all, num_samples=1).squeeze(1)[active]  # [a], generate()'s random numbers
        else:
            tokens = scores.argmax(dim=-1)  # [a]
        responses[active, steps] = tokens
        steps += 1
        going = ~torch.isin(tokens, stops)  # [a]
        left = int(going.sum())  # one wait for the device per token
        if steps >= max_new or left == 0:
            break
        if left < going.numel():  # finished rows leave the batch
            if probs_all is not None:
                probs_all[active[~going]] = 0.0
                probs_all[active[~going], pad_id] = 1.0  # generate() gives them pad from now on
            index = torch.nonzero(going).flatten()  # [a']
            cache.batch_select_indices(index)
            active, tokens, attention, position = active[index], tokens[index], attention[index], position[index]
        attention = torch.cat([attention, attention.new_ones(attention.shape[0], 1)], dim=1)  # [a, p + t + 1]
        position = position + 1
        out = model(input_ids=tokens[:, None], attention_mask=attention, position_ids=position[:, None],
                    use_cache=True, return_dict=True, **{cache_key: cache})
        logits = out.logits[:, -1].float()  # [a, V]
        del out
    return responses[:, :steps]
