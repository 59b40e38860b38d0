"""The exact text each token adds, so that a response's pieces join to its decoded text.

Traces and views show a response token by token; the segments of its reasoning are cut by
character offsets. Both need, per token, the text it adds: byte-level BPE tokens can end inside
a multi-byte character, and some decoders merge or strip spaces.
"""

from __future__ import annotations

import weakref

import numpy as np

__all__ = ["token_pieces"]


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds, so that "".join(pieces) == tokenizer.decode(ids) exactly.

    A token that ends inside a multi-byte character adds "" and the token completing it adds the
    character. Special tokens keep their text ("<|im_end|>"). One decode of the whole response:
    byte-level BPE tokenizers (Qwen, SmolLM2, GPT-2) map each token to its bytes and cut the text
    at the character boundaries; others decode each token alone; where the pieces found so do not
    join to the decoded text, a sliding window decodes them as text-generation servers stream
    tokens (one small decode per token).
    """
    ids = [int(i) for i in ids]
    if not ids:
        return []
    decoded = tokenizer.decode(ids)
    byte_level, pieces = _byte_level_pieces(tokenizer, ids)
    if not byte_level:  # (bytes that are no UTF-8 go to the window, which decides as a stream would)
        pieces = tokenizer.batch_decode([[i] for i in ids])
    if pieces is not None and "".join(pieces) == decoded:
        return pieces
    return _streamed_pieces(tokenizer, ids)


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte, as byte-level BPE vocabularies spell tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


_UNICODE_TO_BYTE = {c: b for b, c in _byte_to_unicode().items()}
_TOKEN_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {id: bytes}


def _byte_level_pieces(tokenizer, ids: list[int]) -> tuple[bool, list[str] | None]:
    """(is the tokenizer byte-level, pieces from each token's bytes or None): bytes cached per tokenizer."""
    try:
        table = _TOKEN_BYTES.get(tokenizer)
    except TypeError:  # not weak-referenceable
        return False, None
    if table is None:
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        table = {} if "ByteLevel" in repr(decoder) else {"byte_level": False}
        table["added"] = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        _TOKEN_BYTES[tokenizer] = table
    if table.get("byte_level") is False:
        return False, None
    chunks = []
    for i in ids:
        data = table.get(i)
        if data is None:
            if i in table["added"]:
                data = table["added"][i].encode("utf-8")
            else:
                token = tokenizer.convert_ids_to_tokens(i)
                try:
                    data = bytes(_UNICODE_TO_BYTE[c] for c in token)
                except (KeyError, TypeError):
                    return True, None
            table[i] = data
        chunks.append(data)
    joined = b"".join(chunks)
    try:
        text = joined.decode("utf-8")
    except UnicodeDecodeError:  # invalid bytes: the decoder's own replacement decides
        return True, None
    raw = np.frombuffer(joined, dtype=np.uint8)
    char_ends = np.append(np.flatnonzero((raw & 0xC0) != 0x80)[1:], len(joined))  # [chars] byte end of each
    token_ends = np.cumsum([len(c) for c in chunks])  # [tokens] byte end of each
    done = np.searchsorted(char_ends, token_ends, side="right")  # [tokens] characters complete after each
    # as a streamed decode: a token that ends inside a character adds nothing, not even the characters
    # before it, and the token completing that character adds them all
    done = np.maximum.accumulate(np.where(np.isin(token_ends, char_ends), done, 0)).tolist()
    return True, [text[a:b] for a, b in zip([0, *done[:-1]], done)]


def _streamed_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Decode a sliding window: a token ending inside a character adds "" until one completes it."""
    pieces, prefix, read = [], 0, 0
    before = ""  # decode(ids[prefix:read]): changes only when the window moves
    for end in range(1, len(ids) + 1):
        now = tokenizer.decode(ids[prefix:end])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            pieces.append(now[len(before):])
            prefix, read = read, end
            before = tokenizer.decode(ids[prefix:read])
        else:
            pieces.append("")
    if read < len(ids) and pieces:  # ends inside a character: the rest goes to the last token
        pieces[-1] += tokenizer.decode(ids[prefix:])[len(before):]
    return pieces
