"""Tokenisation, in one place for indexing, serving and training.

cn_clip's BERT wordpiece tokenizer with its shipped 21,128-token vocabulary; captions longer than
``CONTEXT_LENGTH`` tokens are truncated (as cn_clip does, silently).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from cn_clip.clip import tokenize

CONTEXT_LENGTH = 52  # cn_clip's default, the length the released models were trained with
PAD_ID = 0  # "[PAD]" in cn_clip's vocabulary; encode_text masks it out


def tokenize_texts(texts: Sequence[str]) -> torch.Tensor:
    """``(len(texts), CONTEXT_LENGTH)`` token ids, padded with ``PAD_ID``."""
    return tokenize(list(texts), CONTEXT_LENGTH)


def token_lengths(tokens: torch.Tensor) -> torch.Tensor:
    return tokens.ne(PAD_ID).sum(dim=1)


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row.

    Exact: padded positions are masked out of attention and come after the [CLS] token that is
    read; Chinese captions are mostly 10-30 tokens, so this is a fraction of the work at 52.
    """
    length = int(token_lengths(tokens).max().item()) if len(tokens) else 1
    return tokens[:, : max(length, 1)]
