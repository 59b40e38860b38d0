"""Padding-free log-prob passes: a micro-batch's rows packed end to end into a few bins.

A micro-batch in the rollout layout is [left-padded prompt | right-padded response]: every row is
as wide as the longest prompt plus the longest response, so with responses of 7 to 64 tokens
most of the positions that the old-log-prob pass and each update compute are padding. Here each
row's real tokens (prompt, then response) are laid end to end into bins no longer than the
longest row (first-fit decreasing), each sequence's positions counted from 0 as generate()
counted them. The model sees `position_ids` and no attention mask, from which transformers builds
a block-diagonal causal mask (or, with flash-attention, variable-length kernels): no token sees
another sequence, so every log-prob is the padded layout's, up to float rounding. Only the hidden
states that predict a response token go through the output head (`logprobs.head_logprobs`).

Shared prompts: the G responses to one prompt sit in the same micro-batch, and each row computes
that prompt again. With `share_prompts`, rows with the same prompt become one segment
[prompt | response 1 | ... | response k] whose responses see the prompt and themselves only (a
tree-shaped causal mask passed to the model as a 4D attention mask, positions continuing from the
prompt's end in every response): the prompt is computed once for its k rows, and its gradient
gathers theirs. Same log-probs and gradients up to float rounding (tested). Since the mask is
dense, attention costs grow with the square of the segment: `response_logprobs` takes the shared
layout only where a cost estimate from the model's shape (`layout_cost`) says it computes less,
as it does for short responses to long prompts (the demo: 0.67 of the plain layout's work).

The old log-probs and the updates pack the same micro-batches the same way (and the first
update's forward gives its rows' old log-probs itself: train/step.py). A model whose attention ignores packing (a custom
architecture building its own causal mask) would let sequences see each other: `packing_supported`
checks that once per model on two short sequences and the padded layout is used otherwise;
`sharing_supported` checks the same of the 4D mask (flash-attention kernels take none).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from .logprobs import _body_and_head, head_logprobs, token_logprobs

__all__ = ["PackedRows", "layout_cost", "pack_rows", "packed_token_logprobs", "packing_supported",
           "response_logprobs", "sharing_supported"]

MASK_LIMIT = 2 ** 26  # elements of a shared layout's [b, 1, L, L] mask (64 MB as bool); above it: no sharing


@dataclass
class PackedRows:
    """Rows laid end to end in bins. T: response tokens of all rows."""

    input_ids: Tensor  # [b, L] bins, right-padded
    position_ids: Tensor  # [b, L] 0, 1, ... within each sequence (padding is a sequence of its own)
    predictor: Tensor  # [T] flat index (bin * L + column) of the hidden state that predicts each response token
    targets: Tensor  # [T] the response tokens
    rows: Tensor  # [T] their row in the micro-batch
    columns: Tensor  # [T] their column in the response
    segment: Tensor | None = None  # shared prompts: [b, L] segment within its bin (-1: padding)
    branch: Tensor | None = None  # shared prompts: [b, L] 0 for the prompt, k for its k-th response

    def to(self, device) -> "PackedRows":
        return PackedRows(*(None if getattr(self, f) is None else getattr(self, f).to(device)
                            for f in self.__dataclass_fields__))

    def attention_mask(self, dtype: torch.dtype | None = None) -> Tensor | None:
        """Shared prompts: [b, 1, L, L] where query q may see key k (k <= q in the same segment, k in the
        prompt or in q's own response): bool, or additive (0 / the dtype's min) when `dtype` is given.
        None for plain packing (the model builds its mask from the positions)."""
        if self.segment is None:
            return None
        index = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        causal = index[None, :] <= index[:, None]  # [L, L] (query, key)
        same = self.segment[:, :, None] == self.segment[:, None, :]  # [b, L, L]
        seen = (self.branch[:, None, :] == 0) | (self.branch[:, None, :] == self.branch[:, :, None])
        allowed = (causal[None] & same & seen)[:, None]  # [b, 1, L, L]
        if dtype is None:
            return allowed
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)


def _first_fit_decreasing(sizes: list[int]) -> tuple[list[list[int]], int]:
    """Items into bins as large as the largest item, largest first; (items per bin, the widest bin's fill)."""
    capacity = max(sizes)
    bins: list[list[int]] = []
    room: list[int] = []
    for item in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        spot = next((b for b, free in enumerate(room) if free >= sizes[item]), None)
        if spot is None:
            bins.append([])
            room.append(capacity)
            spot = len(bins) - 1
        bins[spot].append(item)
        room[spot] -= sizes[item]
    return bins, capacity - min(room)


def pack_rows(prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor,
              pad_id: int, *, share_prompts: bool = False) -> PackedRows:
    """Pack rows ([n, P] left-padded prompts, [n, R] right-padded responses) into bins, first-fit
    decreasing, each bin at most as long as the longest sequence; with `share_prompts`, the sequences
    are segments [prompt | its rows' responses] (rows with the same prompt tokens, in row order).

    >>> packed = pack_rows(torch.tensor([[0, 5], [6, 7]]), torch.tensor([[False, True], [True, True]]),
    ...                    torch.tensor([[8, 9], [4, 0]]), torch.tensor([[True, True], [True, False]]), pad_id=0)
    >>> packed.input_ids.tolist(), packed.position_ids.tolist()  # rows of 3 tokens each: one bin each
    ([[5, 8, 9], [6, 7, 4]], [[0, 1, 2], [0, 1, 2]])
    >>> packed.predictor.tolist(), packed.targets.tolist()  # token 8 is predicted by position 0 (token 5)
    ([0, 1, 4], [8, 9, 4])
    >>> shared = pack_rows(torch.tensor([[5, 6], [5, 6]]), torch.ones(2, 2, dtype=torch.bool),
    ...                    torch.tensor([[8, 9], [3, 0]]), torch.tensor([[True, True], [True, False]]), pad_id=0,
    ...                    share_prompts=True)
    >>> shared.input_ids.tolist(), shared.position_ids.tolist(), shared.branch.tolist()  # one prompt, two responses
    ([[5, 6, 8, 9, 3]], [[0, 1, 2, 3, 2]], [[0, 0, 1, 1, 2]])
    >>> shared.predictor.tolist(), shared.targets.tolist()  # both first tokens are predicted by the prompt's end
    ([1, 2, 1], [8, 9, 3])
    """
    prompt_ids, prompt_mask = prompt_ids.cpu(), prompt_mask.cpu().bool()
    response_ids, response_mask = response_ids.cpu(), response_mask.cpu().bool()
    prompts = [p[m] for p, m in zip(prompt_ids, prompt_mask)]
    responses = [r[k] for r, k in zip(response_ids, response_mask)]
    groups: dict[tuple, list[int]] = {}  # prompt tokens -> its rows, in row order
    for row, prompt in enumerate(prompts):
        groups.setdefault(tuple(prompt.tolist()) if share_prompts else (row,), []).append(row)
    members = list(groups.values())
    sizes = [len(prompts[rows[0]]) + sum(len(responses[r]) for r in rows) for rows in members]
    bins, width = _first_fit_decreasing(sizes)
    input_ids = torch.full((len(bins), width), pad_id, dtype=torch.long)  # [b, L]
    position_ids = torch.zeros((len(bins), width), dtype=torch.long)  # [b, L]
    segment = torch.full((len(bins), width), -1, dtype=torch.long)  # [b, L]
    branch = torch.zeros((len(bins), width), dtype=torch.long)  # [b, L]
    predictor, targets, rows, columns = [], [], [], []
    for b, items in enumerate(bins):
        offset = 0
        for s, item in enumerate(items):
            prompt = prompts[members[item][0]]
            end = offset + len(prompt)  # the prompt's last column + 1
            input_ids[b, offset: end] = prompt
            position_ids[b, offset: end] = torch.arange(len(prompt))
            segment[b, offset: end] = s
            for k, row in enumerate(members[item], start=1):
                response, start = responses[row], end
                end = start + len(response)
                input_ids[b, start: end] = response
                position_ids[b, start: end] = torch.arange(len(prompt), len(prompt) + len(response))
                segment[b, start: end], branch[b, start: end] = s, k
                # token j is predicted by the response's column j - 1; the first by the prompt's last column
                predictor.append(b * width + torch.cat([torch.tensor([offset + len(prompt) - 1]),
                                                        torch.arange(start, end - 1)])[: len(response)])
                targets.append(response)
                rows.append(torch.full((len(response),), row, dtype=torch.long))
                columns.append(torch.arange(len(response)))
            offset = end
        position_ids[b, offset:] = torch.arange(width - offset)  # padding: a sequence of its own
    shared = share_prompts and any(len(m) > 1 for m in members)
    return PackedRows(input_ids, position_ids, torch.cat(predictor), torch.cat(targets), torch.cat(rows),
                      torch.cat(columns), segment if shared else None, branch if shared else None)


def layout_cost(packed: PackedRows, config) -> float:
    """Multiply-adds per decoder layer of a pass over `packed` (the output head aside, alike in every
    layout): its projections and MLP per position, and its attention per (query, key) pair of each bin,
    which a mask does not spare (estimated from a transformers config; a hidden size of 1 when unknown)."""
    hidden = getattr(config, "hidden_size", 1)
    heads = getattr(config, "num_attention_heads", 1)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    mlp = getattr(config, "intermediate_size", None) or 4 * hidden
    per_position = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * mlp
    per_pair = 2 * heads * head_dim  # scores and the weighted sum of values
    b, length = packed.input_ids.shape
    return float(b * length * per_position + b * length * length * per_pair)


def packed_token_logprobs(model, packed: PackedRows, shape: tuple[int, int], *, temperature: float = 1.0,
                          chunk_size: int = 1024) -> Tensor:
    """log pi(response token | its own sequence before it) for packed rows; returns `shape` = [n, R]
    float32 with 0 at response padding. Gradients flow when grad is enabled."""
    body, head = _body_and_head(model)
    hidden = body(input_ids=packed.input_ids, position_ids=packed.position_ids,
                  attention_mask=packed.attention_mask(_mask_dtype(model)), use_cache=False)[0]  # [b, L, H]
    scoring = hidden.reshape(-1, hidden.shape[-1]).index_select(0, packed.predictor)  # [T, H]
    values = head_logprobs(scoring, head, packed.targets, temperature=temperature, chunk_size=chunk_size)  # [T]
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)  # [n, R]
    return out.index_put((packed.rows, packed.columns), values)


def _mask_dtype(model) -> torch.dtype | None:
    """A 4D mask as transformers builds it for the model's attention: bool for sdpa, additive otherwise."""
    if getattr(model.config, "_attn_implementation", "sdpa") == "sdpa":
        return None
    dtype = getattr(model, "dtype", torch.float32)  # transformers' (and peft's) compute dtype
    return dtype if dtype.is_floating_point else torch.float32


_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()
_SHARING: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def packing_supported(model) -> bool:
    """Whether `model` keeps packed sequences apart: the hidden states of a sequence packed after
    another must match those of the sequence alone far more closely than those of the plain
    concatenation (where it sees the other). Checked once per model."""
    if model in _CHECKED:
        return _CHECKED[model]
    body, _ = _body_and_head(model)
    device = next(model.parameters()).device
    first, second = torch.arange(3, 8, device=device), torch.arange(11, 15, device=device)  # any token ids
    ids = torch.cat([first, second])[None]  # [1, 9]
    alone = body(input_ids=second[None], position_ids=torch.arange(4, device=device)[None], use_cache=False)[0]
    packed_positions = torch.cat([torch.arange(5), torch.arange(4)]).to(device)[None]
    packed = body(input_ids=ids, position_ids=packed_positions, attention_mask=None, use_cache=False)[0][:, 5:]
    joined = body(input_ids=ids, position_ids=torch.arange(9, device=device)[None], use_cache=False)[0][:, 5:]
    apart = (packed - alone).abs().max().item()
    seen = (joined - alone).abs().max().item()
    _CHECKED[model] = bool(apart < 0.1 * seen)
    return _CHECKED[model]


@torch.no_grad()
def sharing_supported(model) -> bool:
    """Whether `model` honours a shared layout's 4D mask: the second response after a shared prompt must
    match the same response after the prompt alone far more closely than after prompt and first response
    concatenated. Checked once per model; an attention that refuses the mask (flash-attention) is a no."""
    if model in _SHARING:
        return _SHARING[model]
    body, _ = _body_and_head(model)
    device = next(model.parameters()).device
    prompt, first, second = (torch.arange(a, b, device=device) for a, b in ((3, 7), (11, 14), (21, 24)))
    alone = body(input_ids=torch.cat([prompt, second])[None], use_cache=False)[0][:, 4:]
    packed = pack_rows(torch.stack([prompt, prompt]), torch.ones(2, 4, dtype=torch.bool),
                       torch.stack([first, second]), torch.ones(2, 3, dtype=torch.bool), pad_id=0,
                       share_prompts=True).to(device)
    try:
        shared = body(input_ids=packed.input_ids, position_ids=packed.position_ids,
                      attention_mask=packed.attention_mask(_mask_dtype(model)), use_cache=False)[0][:, 7:]
    except (RuntimeError, ValueError, TypeError):  # an attention kernel that takes no mask
        _SHARING[model] = False
        return False
    joined = body(input_ids=torch.cat([prompt, first, second])[None], use_cache=False)[0][:, 7:]
    apart = (shared - alone).abs().max().item()
    seen = (joined - alone).abs().max().item()
    _SHARING[model] = bool(apart < 0.1 * seen)
    return _SHARING[model]


def response_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, *,
                      pad_id: int, temperature: float = 1.0, chunk_size: int = 1024, pack: bool = True,
                      share_prompts: bool = False) -> Tensor:
    """Per-token log-probs [n, R] of the responses (rollout layout in, on any device; the model's
    device out): packed when `pack` and the model keeps packed sequences apart, else the padded
    layout (`logprobs.token_logprobs`; its response padding holds values of no meaning, packing's 0).
    With `share_prompts`, rows with the same prompt share its computation where the model honours the
    mask and that layout computes less (`layout_cost`); the choice depends on the rows alone, so a
    micro-batch gets the same layout in every pass. The rows are packed where they lie (pack_rows works
    on the CPU) and moved to the model once."""
    device = next(model.parameters()).device
    if pack and packing_supported(model):
        packed = pack_rows(prompt_ids, prompt_mask, response_ids, response_mask, pad_id)
        if share_prompts:
            shared = pack_rows(prompt_ids, prompt_mask, response_ids, response_mask, pad_id, share_prompts=True)
            b, length = shared.input_ids.shape
            if (shared.segment is not None and b * length * length <= MASK_LIMIT
                    and layout_cost(shared, model.config) < layout_cost(packed, model.config)
                    and sharing_supported(model)):
                packed = shared
        return packed_token_logprobs(model, packed.to(device), tuple(response_ids.shape), temperature=temperature,
                                     chunk_size=chunk_size)
    input_ids = torch.cat([prompt_ids, response_ids], dim=1).to(device)  # [n, P + R]
    attention = torch.cat([prompt_mask, response_mask], dim=1).long().to(device)  # [n, P + R]
    return token_logprobs(model, input_ids, attention, prompt_ids.shape[1], temperature=temperature,
                          chunk_size=chunk_size)
