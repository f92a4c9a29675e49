"""Tokenisation, in one place for indexing, serving and training.

cn_clip's BERT wordpiece tokenizer with its shipped 21,128-token vocabulary; captions longer than
``CONTEXT_LENGTH`` tokens are truncated (as cn_clip does, silently).

The tokenizer is cn_clip's own file (``cn_clip/clip/bert_tokenizer.py``), loaded by path: importing
it as ``cn_clip.clip.bert_tokenizer`` would run ``cn_clip/clip/__init__.py``, which imports PyTorch
and the model (840 MB of memory a server on exported towers never needs). The ids are numpy
``int64``, equal to ``cn_clip.clip.tokenize``'s (tests/test_tokens.py compares them).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from models.registry import CN_CLIP_DIR

CONTEXT_LENGTH = 52  # cn_clip's default, the length the released models were trained with
PAD_ID = 0  # "[PAD]" in cn_clip's vocabulary; encode_text masks it out


@functools.cache
def _tokenizer():
    """cn_clip's ``FullTokenizer`` on its shipped vocabulary (one per process)."""
    return _bert_tokenizer_module().FullTokenizer()


def _bert_tokenizer_module() -> ModuleType:
    name = "_tuwen_cn_clip_bert_tokenizer"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CN_CLIP_DIR / "bert_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tokenize_texts(texts: Sequence[str]) -> np.ndarray:
    """``(len(texts), CONTEXT_LENGTH)`` int64 token ids, padded with ``PAD_ID`` (cn_clip's ``tokenize``)."""
    tokenizer = _tokenizer()
    cls, sep = tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"]
    out = np.full((len(texts), CONTEXT_LENGTH), PAD_ID, dtype=np.int64)
    for i, text in enumerate(texts):
        ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))[: CONTEXT_LENGTH - 2]
        out[i, : len(ids) + 2] = [cls, *ids, sep]
    return out


def token_lengths(tokens):
    """Tokens before the padding in each row (numpy array or torch tensor, as given)."""
    return (tokens != PAD_ID).sum(1)


def trim_padding(tokens):
    """Drop the trailing columns that are padding in every row (numpy array or torch tensor).

    Exact: padded positions are masked out of attention and come after the [CLS] token that is
    read; Chinese captions are mostly 10-30 tokens, so this is a fraction of the work at 52.
    """
    length = int(token_lengths(tokens).max()) if len(tokens) else 1
    return tokens[:, : max(length, 1)]
