"""CLIP's byte-level BPE tokenizer, built on the ``tokenizers`` library from the merges shipped in the package.

Ids equal those of transformers' ``CLIPTokenizer``: text is NFC-normalized, runs of whitespace become one
space, everything is lowercased, split with CLIP's word pattern, mapped to byte characters and merged
by BPE with an ``</w>`` end-of-word marker. Each prompt becomes ``BOS ... EOS`` padded with ``PAD``
(= EOS, 49407) to the context length. Nothing is downloaded: the vocabulary is derived from
``assets/bpe_simple_vocab_16e6.txt.gz`` the way CLIP derives it.

``text_mode="original"`` tokenizes as EfficientSAM3's ``SimpleTokenizer`` (the LiteText training code):
the text is first cleaned as there (ftfy's ``fix_text`` when ftfy is installed, HTML entities unescaped
twice, stripped), then tokenized the same way, and padded with id 0 instead of EOS.

The torch-free core lives in ``sam3lite.portable.tokenizer`` (the ONNX runtime uses it too); this
module returns torch tensors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from ..portable.tokenizer import (
    BOS_ID,
    BOS_TOKEN,
    EOS_ID,
    EOS_TOKEN,
    ORIGINAL_PAD_ID,
    PAD_ID,
    VOCAB_SIZE,
    bpe_backend,
    bytes_to_unicode,
    encode_batch,
    load_bpe_vocab,
    original_clean,
    truncation_warning,
)
from ..runtime import check_text_mode

__all__ = [
    "BOS_ID",
    "BOS_TOKEN",
    "EOS_ID",
    "EOS_TOKEN",
    "ORIGINAL_PAD_ID",
    "PAD_ID",
    "VOCAB_SIZE",
    "Tokenizer",
    "bpe_backend",
    "bytes_to_unicode",
    "load_bpe_vocab",
    "original_clean",
]


class Tokenizer:
    """Text prompts -> padded CLIP token ids.

    Args:
        context_length: L, the padded length (32 for SAM3 / SAM3-LiteText in transformers' port; the
            position table's length, 16, in ``original`` mode). Longer prompts are truncated to L tokens
            ending in EOS, with a warning.
        text_mode: ``"transformers"`` (pad with EOS) or ``"original"`` (EfficientSAM3's cleaning, pad with 0).
    """

    def __init__(self, context_length: int = 32, text_mode: str = "transformers") -> None:
        if not isinstance(context_length, int) or context_length < 3:
            raise ValueError(f"context_length must be an int >= 3, got {context_length!r}")
        check_text_mode(text_mode)
        self.context_length = context_length
        self.text_mode = text_mode
        self.pad_id = ORIGINAL_PAD_ID if text_mode == "original" else PAD_ID
        self._tok = bpe_backend()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(context_length={self.context_length}, text_mode={self.text_mode!r})"

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def __call__(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize a prompt or a batch of N prompts.

        Returns:
            ``input_ids`` [N, L] int64 (BOS, tokens, EOS, then PAD) and ``attention_mask`` [N, L] int64
            (1 on BOS..EOS, 0 on padding; in ``original`` mode ``ids != 0``, as the original detector
            masks, which also drops a real "!" token, id 0).

        Raises:
            TypeError: a prompt is not a str.
            ValueError: a prompt is empty or whitespace only.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        ids, mask, truncated = encode_batch(batch, self.context_length, self.text_mode)
        if truncated:
            warnings.warn(truncation_warning(batch, truncated, self.context_length), stacklevel=2)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def encode(self, text: str) -> list[int]:
        """Ids of one prompt, BOS ... EOS, neither padded nor truncated."""
        return self._tok.encode(original_clean(text) if self.text_mode == "original" else text).ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of token ids (lowercased, whitespace-normalized); BOS, EOS and PAD are dropped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        if self.text_mode == "original":  # id 0 is padding here (a real "!" never follows EOS)
            ids = ids[: ids.index(EOS_ID) + 1] if EOS_ID in ids else ids
        tokens = [self._tok.id_to_token(i) for i in ids if i not in (BOS_ID, EOS_ID)]
        chars = "".join(t for t in tokens if t is not None).replace("</w>", " ")
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        data = bytearray()
        for c in chars:
            data.extend(b" " if c == " " else bytes([byte_of[c]]))
        return data.decode("utf-8", errors="replace").strip()
