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

The old log-probs and the updates pack the same micro-batches the same way, so the first
mini-batch's log-ratio stays exactly 0. A model whose attention ignores packing (a custom
architecture building its own causal mask) would let sequences see each other: `packing_supported`
checks that once per model on two short sequences and the padded layout is used otherwise.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from .logprobs import _body_and_head, head_logprobs, token_logprobs

__all__ = ["PackedRows", "pack_rows", "packed_token_logprobs", "packing_supported", "response_logprobs"]


@dataclass
class PackedRows:
    """Rows laid end to end in bins. T: response tokens of all rows."""

    input_ids: Tensor  # [b, L] bins, right-padded
    position_ids: Tensor  # [b, L] 0, 1, ... within each sequence (padding is a sequence of its own)
    predictor: Tensor  # [T] flat index (bin * L + column) of the hidden state that predicts each response token
    targets: Tensor  # [T] the response tokens
    rows: Tensor  # [T] their row in the micro-batch
    columns: Tensor  # [T] their column in the response

    def to(self, device) -> "PackedRows":
        return PackedRows(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def pack_rows(prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor,
              pad_id: int) -> PackedRows:
    """Pack rows ([n, P] left-padded prompts, [n, R] right-padded responses) into bins, first-fit
    decreasing, each bin at most as long as the longest row.

    >>> packed = pack_rows(torch.tensor([[0, 5], [6, 7]]), torch.tensor([[False, True], [True, True]]),
    ...                    torch.tensor([[8, 9], [4, 0]]), torch.tensor([[True, True], [True, False]]), pad_id=0)
    >>> packed.input_ids.tolist(), packed.position_ids.tolist()  # rows of 3 tokens each: one bin each
    ([[5, 8, 9], [6, 7, 4]], [[0, 1, 2], [0, 1, 2]])
    >>> packed.predictor.tolist(), packed.targets.tolist()  # token 8 is predicted by position 0 (token 5)
    ([0, 1, 4], [8, 9, 4])
    """
    prompt_ids, prompt_mask = prompt_ids.cpu(), prompt_mask.cpu().bool()
    response_ids, response_mask = response_ids.cpu(), response_mask.cpu().bool()
    sequences = [torch.cat([p[m], r[k]]) for p, m, r, k in zip(prompt_ids, prompt_mask, response_ids, response_mask)]
    prompt_lengths = prompt_mask.sum(dim=1).tolist()
    capacity = max(len(s) for s in sequences)
    bins: list[list[int]] = []  # rows per bin
    room: list[int] = []
    for row in sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i)):
        size = len(sequences[row])
        spot = next((b for b, free in enumerate(room) if free >= size), None)
        if spot is None:
            bins.append([])
            room.append(capacity)
            spot = len(bins) - 1
        bins[spot].append(row)
        room[spot] -= size
    width = capacity - min(room)
    input_ids = torch.full((len(bins), width), pad_id, dtype=torch.long)  # [b, L]
    position_ids = torch.zeros((len(bins), width), dtype=torch.long)  # [b, L]
    predictor, targets, rows, columns = [], [], [], []
    for b, members in enumerate(bins):
        offset = 0
        for row in members:
            seq = sequences[row]
            input_ids[b, offset: offset + len(seq)] = seq
            position_ids[b, offset: offset + len(seq)] = torch.arange(len(seq))
            start = offset + prompt_lengths[row]  # the first response token's column
            count = len(seq) - prompt_lengths[row]
            predictor.append(b * width + torch.arange(start - 1, start - 1 + count))
            targets.append(seq[prompt_lengths[row]:])
            rows.append(torch.full((count,), row, dtype=torch.long))
            columns.append(torch.arange(count))
            offset += len(seq)
        position_ids[b, offset:] = torch.arange(width - offset)  # padding: a sequence of its own
    return PackedRows(input_ids, position_ids, torch.cat(predictor), torch.cat(targets), torch.cat(rows),
                      torch.cat(columns))


def packed_token_logprobs(model, packed: PackedRows, shape: tuple[int, int], *, temperature: float = 1.0,
                          chunk_size: int = 1024) -> Tensor:
    """log pi(response token | its own sequence before it) for packed rows; returns `shape` = [n, R]
    float32 with 0 at response padding. Gradients flow when grad is enabled."""
    body, head = _body_and_head(model)
    hidden = body(input_ids=packed.input_ids, position_ids=packed.position_ids, attention_mask=None,
                  use_cache=False)[0]  # [b, L, H]
    scoring = hidden.reshape(-1, hidden.shape[-1]).index_select(0, packed.predictor)  # [T, H]
    values = head_logprobs(scoring, head, packed.targets, temperature=temperature, chunk_size=chunk_size)  # [T]
    out = torch.zeros(shape, dtype=values.dtype, device=values.device)  # [n, R]
    return out.index_put((packed.rows, packed.columns), values)


_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


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


def response_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor, response_mask: Tensor, *,
                      pad_id: int, temperature: float = 1.0, chunk_size: int = 1024, pack: bool = True) -> Tensor:
    """Per-token log-probs [n, R] of the responses (rollout layout in, on any device; the model's
    device out): packed when `pack` and the model keeps packed sequences apart, else the padded
    layout (`logprobs.token_logprobs`; its response padding holds values of no meaning, packing's 0).
    The rows are packed where they lie (pack_rows works on the CPU) and moved to the model once."""
    device = next(model.parameters()).device
    if pack and packing_supported(model):
        packed = pack_rows(prompt_ids, prompt_mask, response_ids, response_mask, pad_id).to(device)
        return packed_token_logprobs(model, packed, tuple(response_ids.shape), temperature=temperature,
                                     chunk_size=chunk_size)
    input_ids = torch.cat([prompt_ids, response_ids], dim=1).to(device)  # [n, P + R]
    attention = torch.cat([prompt_mask, response_mask], dim=1).long().to(device)  # [n, P + R]
    return token_logprobs(model, input_ids, attention, prompt_ids.shape[1], temperature=temperature,
                          chunk_size=chunk_size)
