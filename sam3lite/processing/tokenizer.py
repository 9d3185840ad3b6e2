"""CLIP's byte-level BPE tokenizer, built on the ``tokenizers`` library from the merges shipped in the package.

Ids equal those of transformers' ``CLIPTokenizer``: text is NFC-normalized, runs of whitespace become one
space, everything is lowercased, split with CLIP's word pattern, mapped to byte characters and merged
by BPE with an ``</w>`` end-of-word marker. Each prompt becomes ``BOS ... EOS`` padded with ``PAD``
(= EOS, 49407) to the context length. Nothing is downloaded: the vocabulary is derived from
``assets/bpe_simple_vocab_16e6.txt.gz`` the way CLIP derives it.

``text_mode="original"`` tokenizes as EfficientSAM3's ``SimpleTokenizer`` (the LiteText training code):
the text is first cleaned as there (ftfy's ``fix_text`` when ftfy is installed, HTML entities unescaped
twice, stripped), then tokenized the same way, and padded with id 0 instead of EOS.
"""

from __future__ import annotations

import functools
import gzip
import html
import warnings
from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch
from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.models import BPE

from ..runtime import check_text_mode

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_ID = 49406
EOS_ID = 49407
PAD_ID = 49407  # CLIP pads with EOS; RepMixer text layers see pad tokens, so the exact id matters.
ORIGINAL_PAD_ID = 0  # EfficientSAM3 pads with 0 (the token "!"), and its detector masks ids == 0
VOCAB_SIZE = 49408

# CLIP keeps the first 49152 - 256 - 2 merges: 256 byte tokens, 256 byte+</w> tokens, the merges and
# two special tokens make 49408 ids.
_NUM_MERGES = 49152 - 256 - 2
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# CLIP's pre-tokenization: special tokens, English contractions, letter runs, single digits, and runs of
# anything else that is not whitespace.
_WORD_PATTERN = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP).

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100 and up, in byte order.
    The dict order (printable bytes first) is CLIP's order of the 256 byte tokens in the vocabulary.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def load_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (token -> id, 49408 entries) and merge list (48894 pairs) from the packaged merges file."""
    data = resources.files("sam3lite").joinpath("assets", _BPE_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # Line 0 is a version header; CLIP then uses a fixed number of merges.
    merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or vocab[BOS_TOKEN] != BOS_ID or vocab[EOS_TOKEN] != EOS_ID:
        raise RuntimeError(f"corrupt {_BPE_FILE}: got {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab, merges  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def bpe_backend() -> _HFTokenizer:
    """The shared ``tokenizers.Tokenizer`` (built once per process, ~0.5 s; never mutated afterwards)."""
    vocab, merges = load_bpe_vocab()
    tok = _HFTokenizer(BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token=EOS_TOKEN))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_WORD_PATTERN), behavior="removed", invert=True),
            # use_regex=True adds GPT-2's split on top of CLIP's. It only changes anything for a literal
            # "<|endoftext|>" in other casing, and the reference tokenizer does the same.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    # Literal special-token strings in a prompt map to their ids, as in the reference.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS_TOKEN, EOS_TOKEN)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}", special_tokens=[(BOS_TOKEN, BOS_ID), (EOS_TOKEN, EOS_ID)]
    )
    return tok


def original_clean(text: str) -> str:
    """EfficientSAM3's text cleaning before BPE: ftfy (when installed), HTML unescaped twice, stripped.

    Lowercasing and whitespace collapsing follow in the shared normalizer. ftfy is optional: without it
    the original code also skips it (with a warning); its effect is limited to mojibake and odd Unicode.
    """
    fix = _ftfy_fix_text()
    if fix is not None:
        text = fix(text)
    return html.unescape(html.unescape(text)).strip()


@functools.lru_cache(maxsize=1)
def _ftfy_fix_text():  # -> Callable[[str], str] | None
    try:
        import ftfy
    except ImportError:
        return None
    return ftfy.fix_text


def _preview(text: str, limit: int = 40) -> str:
    """The start of a long prompt for a message, cut at a word: ``"a dog that runs ..."``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[:limit]
    return (head.rsplit(" ", 1)[0] if " " in head else head) + " ..."


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
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"text[{i}] must be a str, got {type(text).__name__}")
        n, length = len(batch), self.context_length
        ids = np.full((n, length), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.int64)
        truncated: list[int] = []
        cleaned = [original_clean(t) for t in batch] if self.text_mode == "original" else batch
        for i, enc in enumerate(self._tok.encode_batch(cleaned)):
            row = enc.ids
            if len(row) <= 2:  # BOS + EOS only: nothing but whitespace
                raise ValueError(f"text[{i}] is empty or whitespace only: {batch[i]!r}")
            if len(row) > length:
                row = row[: length - 1] + [EOS_ID]  # keep EOS: the text encoders pool / end on it
                truncated.append(i)
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        if self.text_mode == "original":
            mask = (ids != ORIGINAL_PAD_ID).astype(np.int64)
        if truncated:
            warnings.warn(
                f"{len(truncated)} prompt(s) longer than the context length {length} were truncated "
                f"(first: text[{truncated[0]}] = {_preview(batch[truncated[0]])!r})",
                stacklevel=2,
            )
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
